"""Stage 3 (beside `atomistic`): the image shards, the contract between imaging and learning.
`layout` names every array, `writer` builds a shard atomically, `reader` opens and reads one (the
only modules that touch Zarr), `dataset` indexes many shards at one size, `splits` assigns each
structure to train, val or test."""
