"""8-bit 4:2:0 BT.601 YCbCr <-> RGB for the video codecs, full range by default.

Full range (JFIF): Y = 0.299 R + 0.587 G + 0.114 B, Cb = 128 + (B - Y) / 1.772,
Cr = 128 + (R - Y) / 1.402, no 16..235 squeeze, so gray images round-trip exactly and RGB loses
at most one level per channel beyond the chroma subsampling (two at studio range).
`full_range=False` gives the studio-range variant (Y 16..235, C 16..240). Chroma is subsampled
by the mean of each 2x2 block (sited at its centre) and upsampled by repeating each sample over
its block, so a picture whose chroma is constant on 2x2 blocks survives the subsampling.
"""

import numpy as np

KR, KB = 0.299, 0.114
KG = 1.0 - KR - KB


def _u8(x):
  return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def rgb_to_yuv420(rgb: np.ndarray, full_range: bool = True):
  """uint8 HxWx3 (H, W even) -> (Y [H, W], Cb [H/2, W/2], Cr [H/2, W/2]) uint8 planes."""
  h, w = rgb.shape[:2]
  if h % 2 or w % 2:
    raise ValueError(f"rgb_to_yuv420: size {h}x{w} must be even (pad first)")
  r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
  y = KR * r + KG * g + KB * b
  cb, cr = (b - y) / (2 * (1 - KB)), (r - y) / (2 * (1 - KR))
  if not full_range:
    y, cb, cr = 16 + y * 219 / 255, cb * 224 / 255, cr * 224 / 255
  cb, cr = (c.reshape(h // 2, 2, w // 2, 2).mean((1, 3)) + 128 for c in (cb, cr))
  return _u8(y), _u8(cb), _u8(cr)


def yuv420_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, full_range: bool = True):
  """Inverse of rgb_to_yuv420 (chroma repeated over 2x2 blocks) -> uint8 HxWx3."""
  y = y.astype(np.float64)
  cb, cr = (np.repeat(np.repeat(c.astype(np.float64) - 128, 2, 0), 2, 1) for c in (cb, cr))
  if not full_range:
    y, cb, cr = (y - 16) * 255 / 219, cb * 255 / 224, cr * 255 / 224
  r = y + 2 * (1 - KR) * cr
  b = y + 2 * (1 - KB) * cb
  g = (y - KR * r - KB * b) / KG
  return _u8(np.stack([r, g, b], -1))


def pad_to_multiple(img: np.ndarray, m: int) -> np.ndarray:
  """Edge-replicate bottom/right so H and W are multiples of m."""
  h, w = img.shape[:2]
  ph, pw = -h % m, -w % m
  if not (ph or pw):
    return img
  return np.pad(img, ((0, ph), (0, pw)) + ((0, 0),) * (img.ndim - 2), mode="edge")


def write_yuv(path, planes) -> None:
  with open(path, "wb") as f:
    for p in planes:
      f.write(np.ascontiguousarray(p, dtype=np.uint8).tobytes())


def read_yuv(path, h: int, w: int):
  """One 8-bit 4:2:0 frame of size h x w from a raw .yuv file (must hold exactly one frame)."""
  data = np.fromfile(path, dtype=np.uint8)
  want = h * w * 3 // 2
  if data.size != want:
    raise ValueError(f"{path}: {data.size} bytes, want {want} for one {w}x{h} 4:2:0 frame")
  q = h * w // 4
  return (data[:h * w].reshape(h, w), data[h * w:h * w + q].reshape(h // 2, w // 2),
          data[h * w + q:].reshape(h // 2, w // 2))
