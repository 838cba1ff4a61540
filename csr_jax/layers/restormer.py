"""Restormer's two primitives on NHWC: MDTA (multi-Dconv head transposed attention) and GDFN
(gated-Dconv feed-forward). Attribute names follow the torch modules `Attention` and
`FeedForward` so converted state_dicts keep their keys.

Both run each part of torch's fused projections (MDTA's q, k, v; GDFN's gate and value) as its
own 1x1 + depthwise conv on slices of the weights: the same arithmetic, without a 3C- or
2*hidden-wide intermediate whose slices cost a full-width pad and add in the backward.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from csr_jax.layers import init
from csr_jax.layers.act import gelu
from csr_jax.layers.conv import Conv2d, conv2d


def l2_normalize(x, axis: int, eps: float = 1e-12):
  """F.normalize(x, dim=axis): x / max(||x||, eps)."""
  return x / _l2_norm(x, axis, keepdims=True, eps=eps)


def _l2_norm(x, axis: int, keepdims: bool = False, eps: float = 1e-12):
  norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=axis, keepdims=keepdims))
  return jnp.maximum(norm, eps)


def _channels(conv: Conv2d, x, lo: int, hi: int):
  """`conv` restricted to its output channels lo:hi (of a depthwise conv: those channels)."""
  b = conv.bias[...][lo:hi] if conv.bias is not None else None
  groups = hi - lo if conv.groups > 1 else 1
  return conv2d(x, conv.kernel[...][..., lo:hi], b, conv.stride, conv.padding, conv.dilation,
                groups)


def _pointwise_then_depthwise(pw: Conv2d, dw: Conv2d, x, lo: int, hi: int):
  return _channels(dw, _channels(pw, x, lo, hi), lo, hi)


class GDFN(nnx.Module):
  """torch `FeedForward`: 1x1 -> depthwise 3x3 -> gelu(x1) * x2 -> 1x1."""

  def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool, *, rngs: nnx.Rngs):
    hidden = int(dim * ffn_expansion_factor)
    self.hidden = hidden
    self.project_in = Conv2d(dim, hidden * 2, 1, bias=bias, rngs=rngs)
    self.dwconv = Conv2d(hidden * 2, hidden * 2, 3, 1, 1, groups=hidden * 2, bias=bias, rngs=rngs)
    self.project_out = Conv2d(hidden, dim, 1, bias=bias, rngs=rngs)

  def __call__(self, x):
    h = self.hidden
    x1 = _pointwise_then_depthwise(self.project_in, self.dwconv, x, 0, h)
    x2 = _pointwise_then_depthwise(self.project_in, self.dwconv, x, h, 2 * h)
    return self.project_out(gelu(x1) * x2)


class MDTA(nnx.Module):
  """torch `Attention`: attention across channels (C/heads x C/heads per head), so the cost is
  linear in H*W; q and k are L2-normalised over pixels and scaled by a per-head temperature.

  The normalisation divides the q.k Gram matrix by the two norm vectors instead of dividing
  q and k themselves (equal: F.normalize is x / max(||x||, eps)), so neither is rewritten."""

  def __init__(self, dim: int, num_heads: int, bias: bool, *, rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f"MDTA: dim {dim} not divisible by num_heads {num_heads}")
    self.num_heads = num_heads
    self.temperature = nnx.Param(init.ones(None, (num_heads, 1, 1)))
    self.qkv = Conv2d(dim, dim * 3, 1, bias=bias, rngs=rngs)
    self.qkv_dwconv = Conv2d(dim * 3, dim * 3, 3, 1, 1, groups=dim * 3, bias=bias, rngs=rngs)
    self.project_out = Conv2d(dim, dim, 1, bias=bias, rngs=rngs)

  def __call__(self, x):
    b, h, w, c = x.shape
    nh = self.num_heads
    q, k, v = (_pointwise_then_depthwise(self.qkv, self.qkv_dwconv, x, i * c, (i + 1) * c)
               .reshape(b, h * w, nh, c // nh) for i in range(3))  # torch splits '(head c)'
    gram = jnp.einsum("bnhc,bnhd->bhcd", q, k, preferred_element_type=jnp.float32)
    norms = _l2_norm(q, 1)[..., :, None] * _l2_norm(k, 1)[..., None, :]  # [B, heads, c, d]
    attn = gram / norms * self.temperature[...][None].astype(jnp.float32)
    attn = jax.nn.softmax(attn, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhcd,bnhd->bnhc", attn, v)
    return self.project_out(out.reshape(b, h, w, c))
