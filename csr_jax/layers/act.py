"""Activations with torch defaults: exact (erf) GELU, explicit LeakyReLU slopes."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from csr_jax.layers.precision import in_float32

_SQRT_HALF = float(np.sqrt(0.5))


@in_float32
def gelu(x):
  """torch.nn.GELU() (approximate='none'), in torch's own form 0.5 x (1 + erf(x / sqrt 2)).

  jax.nn.gelu defaults to the tanh approximation, and its exact mode goes through erfc, which
  XLA:CPU evaluates 2.5x slower than erf (4.7 vs 1.9 ms per 4 M elements here); UCIP `middle`
  applies GELU to 75 M elements per forward. Evaluated in float32 for bfloat16 inputs.
  """
  return 0.5 * x * (1 + lax.erf(x * jnp.asarray(_SQRT_HALF, x.dtype)))


def leaky_relu(x, negative_slope: float = 0.01):
  """torch.nn.LeakyReLU(negative_slope); torch's default slope is 0.01."""
  return jnp.where(x >= 0, x, negative_slope * x)


def relu(x):
  return jax.nn.relu(x)
