"""Restormer's two primitives on NHWC: MDTA (multi-Dconv head transposed attention) and GDFN
(gated-Dconv feed-forward). Attribute names follow the torch modules `Attention` and
`FeedForward` so converted state_dicts keep their keys."""

import jax
import jax.numpy as jnp
from flax import nnx

from csr_jax.layers import init
from csr_jax.layers.act import gelu
from csr_jax.layers.conv import Conv2d


def l2_normalize(x, axis: int, eps: float = 1e-12):
  """F.normalize(x, dim=axis): x / max(||x||, eps)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


class GDFN(nnx.Module):
  """torch `FeedForward`: 1x1 -> depthwise 3x3 -> gelu(x1) * x2 -> 1x1."""

  def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool, *, rngs: nnx.Rngs):
    hidden = int(dim * ffn_expansion_factor)
    self.hidden = hidden
    self.project_in = Conv2d(dim, hidden * 2, 1, bias=bias, rngs=rngs)
    self.dwconv = Conv2d(hidden * 2, hidden * 2, 3, 1, 1, groups=hidden * 2, bias=bias, rngs=rngs)
    self.project_out = Conv2d(hidden, dim, 1, bias=bias, rngs=rngs)

  def __call__(self, x):
    x = self.dwconv(self.project_in(x))
    x1, x2 = x[..., :self.hidden], x[..., self.hidden:]
    return self.project_out(gelu(x1) * x2)


class MDTA(nnx.Module):
  """torch `Attention`: attention across channels (C/heads x C/heads per head), so the cost is
  linear in H*W; q and k are L2-normalised over pixels and scaled by a per-head temperature."""

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
    qkv = self.qkv_dwconv(self.qkv(x)).reshape(b, h * w, 3, nh, c // nh)
    q = l2_normalize(qkv[:, :, 0], axis=1)  # [B, N, heads, ch]; torch splits '(head c)'.
    k = l2_normalize(qkv[:, :, 1], axis=1)
    v = qkv[:, :, 2]
    attn = jnp.einsum("bnhc,bnhd->bhcd", q, k) * self.temperature[...][None]
    attn = jax.nn.softmax(attn, axis=-1)
    out = jnp.einsum("bhcd,bnhd->bnhc", attn, v)
    return self.project_out(out.reshape(b, h, w, c))
