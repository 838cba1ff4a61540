"""Compute-dtype casting: float32 master weights, bf16 copies for the forward (config.model.dtype)."""

import jax
import jax.numpy as jnp


def cast_floats(tree, dtype):
  """Every floating leaf of `tree` as `dtype`; other leaves (ints, keys) unchanged."""
  dtype = jnp.dtype(dtype)
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                      tree)
