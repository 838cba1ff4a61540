"""MATLAB `imresize(..., 'bicubic')` (antialiased when shrinking) in PyTorch.

SR benchmarks make LR images with MATLAB; this reproduces its algorithm (imresize.m
`contributions`): Keys cubic with a = -0.5, kernel widened by 1/scale when downscaling,
weights normalised per output pixel, out-of-range taps mirrored with the edge pixel repeated
(MATLAB's `aux = [1:n, n:-1:1]`), all-zero tap columns dropped, the dimension with the smaller
scale resized first (height first on ties). Same algorithm as BasicSR's
`basicsr/utils/matlab_functions.py::imresize`, which has been checked against MATLAB.
Arithmetic is float64; uint8 images are resized on 0..255 values, then rounded half away from
zero and clipped like MATLAB's uint8 cast.
"""

import math

import numpy as np
import torch


def cubic(x: torch.Tensor) -> torch.Tensor:
  ax = x.abs()
  ax2, ax3 = ax * ax, ax * ax * ax
  return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
          + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def contributions(in_len: int, out_len: int, scale: float, antialias: bool = True):
  """(weights [out_len, taps] float64, indices [out_len, taps] 0-based int64)."""
  width = 4.0
  shrink = scale < 1 and antialias
  if shrink:
    width /= scale
  u = torch.arange(1, out_len + 1, dtype=torch.float64) / scale + 0.5 * (1 - 1 / scale)
  left = torch.floor(u - width / 2)
  taps = math.ceil(width) + 2
  idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None]  # 1-based, may be out
  dist = u[:, None] - idx
  w = scale * cubic(dist * scale) if shrink else cubic(dist)
  w = w / w.sum(1, keepdim=True)
  j = (idx.long() - 1) % (2 * in_len)  # mirror with the edge repeated
  j = torch.where(j >= in_len, 2 * in_len - 1 - j, j)
  keep = (w != 0).any(0)
  return w[:, keep], j[:, keep]


def _resize_dim(x: torch.Tensor, dim: int, out_len: int, scale: float, antialias: bool):
  w, j = contributions(x.shape[dim], out_len, scale, antialias)
  # Scatter the taps into a dense [out, in] matrix (mirrored taps accumulate) and matmul: far
  # faster than gathering taps on large images.
  rows = torch.arange(out_len)[:, None].expand_as(j)
  m = torch.zeros(out_len, x.shape[dim], dtype=torch.float64).index_put_(
      (rows.reshape(-1), j.reshape(-1)), w.reshape(-1), accumulate=True)
  return (x.movedim(dim, -1) @ m.T).movedim(-1, dim)


def output_size(in_hw, scale: float) -> tuple[int, int]:
  """MATLAB's ceil(scale * size), robust to 1/3-style float error."""
  out = []
  for n in in_hw:
    v = scale * n
    out.append(int(round(v)) if abs(v - round(v)) < 1e-9 else math.ceil(v))
  return tuple(out)


def imresize(x, scale: float | None = None, size=None, antialias: bool = True):
  """Resizes the last two dims (H, W) of a float tensor or the H, W of an HWC numpy array.

  Give `scale` (e.g. 1/4) or `size` (out_h, out_w); with `size` the per-dimension scale is
  out/in, as in MATLAB. Torch tensors keep their dtype; numpy uint8 HWC images come back uint8,
  other numpy arrays float64.
  """
  if isinstance(x, np.ndarray):
    if x.ndim not in (2, 3):
      raise ValueError(f"imresize: want an HW or HWC array, got shape {x.shape}")
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    t = t[None] if x.ndim == 2 else t.permute(2, 0, 1)
    y = imresize(t, scale, size, antialias)
    y = y[0] if x.ndim == 2 else y.permute(1, 2, 0)
    y = y.numpy()
    return to_uint8(y) if x.dtype == np.uint8 else y
  in_hw = tuple(x.shape[-2:])
  if (scale is None) == (size is None):
    raise ValueError("imresize: give exactly one of scale or size")
  if size is None:
    out_hw, scales = output_size(in_hw, scale), (scale, scale)
  else:
    out_hw = tuple(int(s) for s in size)
    scales = tuple(o / i for o, i in zip(out_hw, in_hw))
  if min(out_hw) < 1:
    raise ValueError(f"imresize: output size {out_hw} from input {in_hw}")
  dtype = x.dtype
  y = x.to(torch.float64)
  order = (0, 1) if scales[0] <= scales[1] else (1, 0)
  for d in order:
    y = _resize_dim(y, y.ndim - 2 + d, out_hw[d], scales[d], antialias)
  return y.to(dtype)


def to_uint8(x: np.ndarray) -> np.ndarray:
  """MATLAB's uint8 cast: round half away from zero (values are >= 0 after clipping), clip."""
  return np.floor(np.clip(x, 0, 255) + 0.5).astype(np.uint8)


def downscale_uint8(img: np.ndarray, scale: int) -> np.ndarray:
  """HR uint8 HWC (each side a multiple of `scale`) -> LR uint8 HWC, as MATLAB makes it."""
  h, w = img.shape[:2]
  if h % scale or w % scale:
    raise ValueError(f"downscale_uint8: size {h}x{w} is not a multiple of {scale}")
  return imresize(img, size=(h // scale, w // scale))
