"""Activations with torch defaults: exact (erf) GELU, explicit LeakyReLU slopes."""

import jax
import jax.numpy as jnp


def gelu(x):
  """torch.nn.GELU() (approximate='none'); jax.nn.gelu defaults to the tanh approximation."""
  return jax.nn.gelu(x, approximate=False)


def leaky_relu(x, negative_slope: float = 0.01):
  """torch.nn.LeakyReLU(negative_slope); torch's default slope is 0.01."""
  return jnp.where(x >= 0, x, negative_slope * x)


def relu(x):
  return jax.nn.relu(x)
