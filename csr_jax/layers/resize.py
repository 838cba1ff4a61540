"""Resampling with torch semantics: nearest/bilinear without antialias, pixel (un)shuffle in
torch's channel order (which differs from tf.nn.depth_to_space)."""

import jax.numpy as jnp


def upsample_nearest(x, scale: int = 2):
  """F.interpolate(scale_factor=s, mode='nearest') for an integer s on NHWC."""
  x = jnp.repeat(x, scale, axis=1)
  return jnp.repeat(x, scale, axis=2)


def pixel_shuffle(x, r: int):
  """torch.nn.PixelShuffle(r) on NHWC: torch channel c*r*r + i*r + j -> (c, row i, col j)."""
  b, h, w, c = x.shape
  co = c // (r * r)
  x = x.reshape(b, h, w, co, r, r)
  x = x.transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(b, h * r, w * r, co)


def pixel_unshuffle(x, r: int):
  """torch.nn.PixelUnshuffle(r) on NHWC (inverse of pixel_shuffle)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // r, r, w // r, r, c)
  x = x.transpose(0, 1, 3, 5, 2, 4)
  return x.reshape(b, h // r, w // r, c * r * r)


def _linear_indices(n_in: int, n_out: int, align_corners: bool):
  if align_corners:
    src = (jnp.arange(n_out, dtype=jnp.float32) * ((n_in - 1) / max(n_out - 1, 1)))
  else:
    src = (jnp.arange(n_out, dtype=jnp.float32) + 0.5) * (n_in / n_out) - 0.5
    src = jnp.maximum(src, 0.0)
  i0 = jnp.clip(jnp.floor(src).astype(jnp.int32), 0, n_in - 1)
  i1 = jnp.minimum(i0 + 1, n_in - 1)
  w1 = src - i0.astype(jnp.float32)
  return i0, i1, w1


def resize_bilinear(x, size: tuple[int, int], align_corners: bool = False):
  """F.interpolate(mode='bilinear', antialias=False) on NHWC to `size` = (H, W)."""
  h_out, w_out = size
  i0, i1, wh = _linear_indices(x.shape[1], h_out, align_corners)
  x = (x[:, i0] * (1 - wh)[None, :, None, None] + x[:, i1] * wh[None, :, None, None])
  j0, j1, ww = _linear_indices(x.shape[2], w_out, align_corners)
  return x[:, :, j0] * (1 - ww)[None, None, :, None] + x[:, :, j1] * ww[None, None, :, None]


def _cubic(t, a=-0.75):
  t = jnp.abs(t)
  return jnp.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                   jnp.where(t < 2, (((t - 5) * t + 8) * t - 4) * a, 0.0))


def _bicubic_axis(x, n_out: int, axis: int, align_corners: bool):
  n_in = x.shape[axis]
  if align_corners:
    src = jnp.arange(n_out, dtype=jnp.float32) * ((n_in - 1) / max(n_out - 1, 1))
  else:
    src = (jnp.arange(n_out, dtype=jnp.float32) + 0.5) * (n_in / n_out) - 0.5
  f = jnp.floor(src)
  t = src - f
  out = 0.0
  for k in range(-1, 3):
    idx = jnp.clip(f.astype(jnp.int32) + k, 0, n_in - 1)
    wgt = _cubic(t - k)
    shape = [1] * x.ndim
    shape[axis] = n_out
    out = out + jnp.take(x, idx, axis=axis) * wgt.reshape(shape).astype(x.dtype)
  return out


def resize_bicubic(x, size: tuple[int, int], align_corners: bool = False):
  """F.interpolate(mode='bicubic', antialias=False) on NHWC (a=-0.75, clamped borders).

  jax.image.resize's bicubic differs from torch (jax#15768); CISR's skip paths use this one.
  """
  x = _bicubic_axis(x, size[0], 1, align_corners)
  return _bicubic_axis(x, size[1], 2, align_corners)
