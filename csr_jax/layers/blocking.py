"""Blocking-edge detector: marks the pixels on both sides of a codec's block boundaries where
the decoded image shows a blocking step.

Block-based codecs quantise each block independently, so at low quality the luma jumps
across a block boundary while the neighbouring within-block differences stay small. For each
boundary pixel pair the detector compares the boundary step, averaged along the boundary over
a window of max(block, 8) pixels, with the larger of the (equally averaged) within-block steps
just before and after it:

  marked  <=>  step > tau  and  step > alpha * inner.

The grid phase is estimated per image (the phase whose boundary columns/rows carry the largest
mean step), so random training crops whose origin is not on the codec's grid work too.
Block sizes per codec (`CODEC_BLOCK`): JPEG 8 (8x8 DCT; the 16-pixel chroma grid of 4:2:0 lies
on it), WebP/VP8 4 (4x4 transforms inside 16x16 macroblocks), HEVC/VVC 4 (smallest transform;
their 8x8 deblocking grid lies on it); 0 (detector off) for learned codecs, which have no
blocks. Output is a float {0, 1} mask without gradient.
"""

import jax
import jax.numpy as jnp

CODEC_BLOCK = {"jpeg": 8, "webp": 4, "hevc": 4, "vvc": 4, "learned": 0}
TAU = 1.0 / 255.0
ALPHA = 2.0


def luma(x):
  """BT.601 luma of an NHWC RGB image in [0, 1] -> [B, H, W]."""
  return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def _box_rows(d, block: int):
  """Mean over a centred window of `block` rows (axis 1), windows cut at the image border."""
  lo, hi = block // 2, block - 1 - block // 2
  n = d.shape[1]
  pad = jnp.pad(d, ((0, 0), (lo, hi), (0, 0)))
  ones = jnp.pad(jnp.ones((1, n, 1), d.dtype), ((0, 0), (lo, hi), (0, 0)))
  s, c = 0.0, 0.0
  for t in range(block):
    s = s + pad[:, t:t + n]
    c = c + ones[:, t:t + n]
  return s / c


def _vertical_boundaries(y, block: int, tau: float, alpha: float):
  """Marks for boundaries between columns (x-1, x) of y [B, H, W] -> bool [B, H, W]."""
  b, h, w = y.shape
  d = jnp.abs(y[:, :, 1:] - y[:, :, :-1])                     # d[..., i]: step between i, i+1
  step = _box_rows(d, max(block, 8))
  left = jnp.concatenate([step[:, :, :1], step[:, :, :-1]], axis=2)
  right = jnp.concatenate([step[:, :, 1:], step[:, :, -1:]], axis=2)
  inner = jnp.maximum(left, right)
  idx = jnp.arange(1, w)                                     # column right of step i
  profile = jnp.mean(d, axis=1)                              # [B, W-1]
  onehot = (idx[None, :] % block) == jnp.arange(block)[:, None]   # [block, W-1]
  counts = jnp.maximum(jnp.sum(onehot, axis=1), 1)
  score = (profile @ onehot.T.astype(profile.dtype)) / counts       # [B, block]
  phase = jnp.argmax(score, axis=1)                          # [B]
  on_grid = (idx[None, :] % block) == phase[:, None]         # [B, W-1]
  hit = on_grid[:, None, :] & (step > tau) & (step > alpha * inner)
  zero = jnp.zeros((b, h, 1), bool)
  return jnp.concatenate([hit, zero], axis=2) | jnp.concatenate([zero, hit], axis=2)


def blocking_edges(x, block: int, tau: float = TAU, alpha: float = ALPHA):
  """{0, 1} mask [B, H, W] of pixels next to a blocking edge of a `block`-pixel grid in x
  (NHWC, [0, 1]); all zeros when block is 0."""
  y = jax.lax.stop_gradient(luma(x))
  if block <= 0:
    return jnp.zeros(y.shape, x.dtype)
  cols = _vertical_boundaries(y, block, tau, alpha)
  rows = _vertical_boundaries(y.transpose(0, 2, 1), block, tau, alpha).transpose(0, 2, 1)
  return (cols | rows).astype(x.dtype)
