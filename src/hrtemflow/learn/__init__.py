"""Stage 5: the networks. `preprocess` (normalisation and the square's symmetries, shared with
predict), `table` (a train spec's images, targets and split), `feed` (Keras batches, augmentation,
fresh shot noise), `models` (one short function per network), `card` (the model card), `bundle`
(saving and loading bundles), `inference` (the forward pass with test-time augmentation and the
temperature), `ood` (out-of-distribution statistics), `train`, `evaluate` (+ `evaluate_figures`),
`baselines` (classical denoisers). Nothing is imported here, so `import hrtemflow.learn` stays
cheap; Keras loads with the modules that need it.
"""
