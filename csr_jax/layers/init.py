"""PyTorch default initialisers, so a model trained from scratch starts where torch's would."""

import math

import jax
import jax.numpy as jnp


def torch_uniform(key, shape, fan_in, dtype=jnp.float32):
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch's default for Linear/Conv weight and bias.

  (kaiming_uniform with a=sqrt(5) reduces to this bound.)
  """
  bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def trunc_normal(key, shape, std=0.02, dtype=jnp.float32):
  """timm's trunc_normal_(std) with cut-offs at +-2 (absolute), as HAT/Restormer-style code uses."""
  return jnp.clip(std * jax.random.normal(key, shape, dtype), -2.0, 2.0)
