"""Swin/HAT window machinery: partition/reverse, relative position index, shift mask, and
window self-attention with a relative position bias table (torch names: `relative_position_bias_table`,
`qkv`, `proj`)."""

import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx

from csr_jax.layers.conv import Linear, matmul, use_cpu_paths
from csr_jax.layers.init import trunc_normal


def window_partition(x, ws: int):
  """[B, H, W, C] -> [B * nW, ws, ws, C] in HAT's row-major window order."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // ws, ws, w // ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, ws, ws, c)


def window_reverse(windows, ws: int, h: int, w: int):
  """Inverse of window_partition."""
  c = windows.shape[-1]
  b = windows.shape[0] // ((h // ws) * (w // ws))
  x = windows.reshape(b, h // ws, w // ws, ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h, w, c)


def relative_position_index(ws: int) -> np.ndarray:
  """HAT `calculate_rpi_sa`: int64 [ws*ws, ws*ws] indices into a (2ws-1)^2 table."""
  coords = np.stack(np.meshgrid(np.arange(ws), np.arange(ws), indexing="ij")).reshape(2, -1)
  rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (ws - 1)
  return (rel[..., 0] * (2 * ws - 1) + rel[..., 1]).astype(np.int64)


def shift_attention_mask(h: int, w: int, ws: int, shift: int) -> np.ndarray:
  """SW-MSA mask [nW, ws*ws, ws*ws] with 0 / -100 entries (HAT `calculate_mask`)."""
  img = np.zeros((1, h, w, 1), np.float32)
  cnt = 0
  for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
    for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
      img[:, hs, wsl, :] = cnt
      cnt += 1
  mw = np.asarray(window_partition(img, ws)).reshape(-1, ws * ws)
  diff = mw[:, None, :] - mw[:, :, None]
  return np.where(diff != 0, -100.0, 0.0).astype(np.float32)


@jax.custom_vjp
def _add_bias(logits, bias):
  return logits + bias.astype(logits.dtype)


def _add_bias_fwd(logits, bias):
  return _add_bias(logits, bias), bias


def _add_bias_bwd(bias, g):
  ones = jnp.ones((1, g.shape[0]), g.dtype)
  db = jnp.dot(ones, g.reshape(g.shape[0], -1), preferred_element_type=jnp.float32)
  return g, db.reshape(bias.shape).astype(bias.dtype)


_add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def add_bias(logits, bias):
  """logits [W, ...] + bias [...] (a relative position bias over W windows). On CPU the bias
  gradient, a sum over the windows, is a ones-vector matmul: XLA:CPU's reduction over a short
  leading axis ran ~60x slower (83 vs 1.4 ms for 128 x 65536)."""
  if use_cpu_paths():
    return _add_bias(logits, bias)
  return logits + bias[None].astype(logits.dtype)


def split_linear(lin: Linear, x, parts: int):
  """`lin(x)` as `parts` separate products on column slices of its kernel: torch's fused qkv
  projection without a 3C-wide result to slice (whose gradient is a full-width pad + add)."""
  w = lin.kernel[...]
  n = w.shape[1] // parts
  b = lin.bias[...] if lin.bias is not None else None
  return [matmul(x, w[:, i * n:(i + 1) * n]) + (0 if b is None else b[i * n:(i + 1) * n])
          for i in range(parts)]


class WindowAttention(nnx.Module):
  """HAT/Swin `WindowAttention`: multi-head self-attention inside ws x ws windows.

  Call with tokens [B*nW, N, C], the relative position index [N, N] and an optional additive
  mask [nW, N, N]. `kernel_init`/`bias_init` go to both Linears (HAT: trunc_normal(.02), 0).
  """

  def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True, *,
               rngs: nnx.Rngs, kernel_init=None, bias_init=None):
    self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
    self.scale = (dim // num_heads) ** -0.5
    self.relative_position_bias_table = nnx.Param(
        trunc_normal(rngs.params(), ((2 * window_size - 1) ** 2, num_heads)))
    kw = dict(rngs=rngs, kernel_init=kernel_init, bias_init=bias_init)
    self.qkv = Linear(dim, dim * 3, bias=qkv_bias, **kw)
    self.proj = Linear(dim, dim, **kw)

  def __call__(self, x, rpi, mask=None):
    b_, n, c = x.shape
    h = self.num_heads
    q, k, v = (t.reshape(b_, n, h, c // h) for t in split_linear(self.qkv, x, 3))
    attn = jnp.einsum("bqhd,bkhd->bhqk", q * self.scale, k, preferred_element_type=jnp.float32)
    bias = self.relative_position_bias_table[...][jnp.asarray(rpi).reshape(-1)]
    attn = add_bias(attn, bias.reshape(n, n, h).transpose(2, 0, 1))
    if mask is not None:
      nw = mask.shape[0]
      attn = attn.reshape(b_ // nw, nw, h, n, n) + jnp.asarray(mask)[None, :, None]
      attn = attn.reshape(b_, h, n, n)
    attn = jax.nn.softmax(attn, axis=-1).astype(v.dtype)
    return self.proj(jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b_, n, c))


def log_relative_coords(ws: int) -> np.ndarray:
  """Swin V2's continuous-position-bias input (GRL's `get_relative_coords_table_all`): the
  (2ws-1)^2 relative offsets (dy, dx), rows in `relative_position_index` order, scaled to
  +-8 and log-spaced: sign(t) log2(1 + |t|) / 3. A bias MLP on it has window-free weights."""
  r = np.arange(-(ws - 1), ws, dtype=np.float64) * 8 / max(ws - 1, 1)
  t = np.stack(np.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)
  return (np.sign(t) * np.log2(np.abs(t) + 1.0) / 3.0).astype(np.float32)


_SHIFT_MASKS = {}


def shifted_window_attention(qkv, ws: int, shift: int, bias):
  """Swin (S)W-MSA core on projected tokens: qkv [B, H, W, 3, heads, dh] (H, W multiples of
  ws) -> [B, H, W, heads * dh]. Cyclic shift by `shift` with HAT's mask; `bias` [heads, ws^2,
  ws^2] is added to the q.k / sqrt(dh) logits. Logits and softmax run in float32 whatever the
  input dtype (bf16 logits lose the small differences softmax amplifies); output in qkv's."""
  b, h, w, _, nh, dh = qkv.shape
  if shift:
    qkv = jnp.roll(qkv, (-shift, -shift), axis=(1, 2))
  win = window_partition(qkv.reshape(b, h, w, -1), ws).reshape(-1, ws * ws, 3, nh, dh)
  logits = jnp.einsum("bihd,bjhd->bhij", win[:, :, 0], win[:, :, 1],
                      preferred_element_type=jnp.float32) * dh ** -0.5
  logits = logits + bias.astype(jnp.float32)[None]
  if shift:
    if (h, w, ws, shift) not in _SHIFT_MASKS:  # numpy, once per grid
      _SHIFT_MASKS[h, w, ws, shift] = shift_attention_mask(h, w, ws, shift)
    mask = jnp.asarray(_SHIFT_MASKS[h, w, ws, shift])
    logits = (logits.reshape(-1, mask.shape[0], nh, ws * ws, ws * ws)
              + mask[None, :, None]).reshape(logits.shape)
  attn = jax.nn.softmax(logits, axis=-1).astype(qkv.dtype)
  out = jnp.einsum("bhij,bjhd->bihd", attn, win[:, :, 2]).reshape(-1, ws, ws, nh * dh)
  out = window_reverse(out, ws, h, w)
  return jnp.roll(out, (shift, shift), axis=(1, 2)) if shift else out
