"""Normalisations with torch numerics: eps 1e-5 and biased variance (Flax defaults to 1e-6)."""

import jax.numpy as jnp
from flax import nnx

from csr_jax.layers import init
from csr_jax.layers.precision import in_float32


@in_float32
def layer_norm(x, scale=None, bias=None, eps: float = 1e-5):
  """Normalise over the last axis; `scale`/`bias` may be None (affine off). float32 inside."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  y = (x - mean) * jnp.reciprocal(jnp.sqrt(var + eps))
  if scale is not None:
    y = y * scale
  if bias is not None:
    y = y + bias
  return y


class LayerNorm(nnx.Module):
  """torch.nn.LayerNorm(dim) over the channel (last) axis; params `scale` (torch `weight`), `bias`."""

  def __init__(self, dim: int, eps: float = 1e-5, use_bias: bool = True, *, rngs: nnx.Rngs | None = None):
    del rngs  # Deterministic init (ones/zeros) as in torch.
    self.dim, self.eps = dim, eps
    self.scale = nnx.Param(init.ones(None, (dim,)))
    self.bias = nnx.Param(init.zeros(None, (dim,))) if use_bias else None

  def __call__(self, x):
    b = self.bias[...] if self.bias is not None else None
    return layer_norm(x, self.scale[...], b, self.eps)


@in_float32
def instance_norm(x, eps: float = 1e-5):
  """torch.nn.InstanceNorm2d(affine=False) on NHWC: per sample and channel over H, W (in
  float32)."""
  mean = jnp.mean(x, axis=(1, 2), keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
  return (x - mean) * jnp.reciprocal(jnp.sqrt(var + eps))
