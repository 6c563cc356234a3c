"""The learning stage: data feed over image shards, models, training, evaluation, baselines.

Modules (each with one job): `data` (index over shards, split by structure, Keras feed,
augmentation, normalisation), `models` (one short function per network), `train` (training and the
model bundle: `train`, `load_bundle`), `evaluate` (metrics and figures on the test split),
`baselines` (classical denoisers). Nothing is imported here, so `import hrtemflow.learn` stays
cheap; Keras loads with the modules that need it.
"""
