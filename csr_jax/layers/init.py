"""Initialisers with PyTorch's distributions, drawn on the host when the key is concrete.

Eager `jax.random` calls compile one small program per parameter shape (dozens of compiles,
tens of seconds for a model on CPU); drawing from a NumPy generator seeded by the JAX key costs
no compilation. Under tracing (`nnx.eval_shape`, `nnx.jit` of a constructor) the same
distributions come from `jax.random`, so values differ between the two paths but shapes, dtypes
and distributions do not.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def _host_rng(key) -> np.random.Generator | None:
  if isinstance(key, jax.core.Tracer):
    return None
  data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  return np.random.default_rng(np.asarray(data, np.uint32).ravel().tolist())


def uniform(key, shape, low: float, high: float, dtype=jnp.float32):
  rng = _host_rng(key)
  if rng is None:
    return jax.random.uniform(key, shape, dtype, low, high)
  return jnp.asarray(rng.uniform(low, high, shape).astype(dtype))


def normal(key, shape, std: float = 1.0, dtype=jnp.float32):
  rng = _host_rng(key)
  if rng is None:
    return std * jax.random.normal(key, shape, dtype)
  return jnp.asarray((std * rng.standard_normal(shape)).astype(dtype))


def torch_uniform(key, shape, fan_in, dtype=jnp.float32):
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch's default for Linear/Conv weight and bias.

  (kaiming_uniform with a=sqrt(5) reduces to this bound.)
  """
  bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
  return uniform(key, shape, -bound, bound, dtype)


def trunc_normal(key, shape, std=0.02, dtype=jnp.float32):
  """timm's trunc_normal_(std) with cut-offs at +-2 (absolute), as HAT/Restormer-style code uses."""
  return jnp.clip(normal(key, shape, std, dtype), -2.0, 2.0)


def constant(shape, value: float, dtype=jnp.float32):
  """Filled array made on the host (jnp.ones/zeros would compile per shape in eager mode)."""
  return jnp.asarray(np.full(shape, value, dtype))
