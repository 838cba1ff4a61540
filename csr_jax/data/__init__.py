"""Data side of training: TFRecord shards read through Grain. No torch, no JAX work at import."""
