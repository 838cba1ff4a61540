"""Loading HR images robustly: every readable image becomes 8-bit RGB, everything else a reason.

Rules (also in data_prep/README.md):
- Empty files, unreadable files (permissions), files Pillow cannot identify, truncated or corrupt
  files (the full decode fails) and images above `MAX_PIXELS` (checked from the header, before
  any decoding) are skipped; `BadImage` carries a one-line reason.
- EXIF orientation (tag 0x0112) is applied, so the stored HR is upright as viewers show it.
- 16-bit PNG: gray through Pillow, colour through PyAV's PNG decoder (Pillow keeps only the
  high byte); 16 -> 8 bit is round(v / 257). 32-bit int/float modes are skipped.
- Grayscale (`L`, `1`) is replicated to three channels; palette images are expanded.
- Alpha (RGBA, LA, PA, palette transparency) is dropped, not composited: the colour values are
  kept as stored, which is what OpenCV's IMREAD_COLOR (used by BasicSR-style loaders) returns.
- CMYK (and YCbCr/LAB/HSV) go through Pillow's `convert("RGB")`; ICC profiles are ignored.
- Images smaller than `min_size` on either side (after cropping to the scale) are skipped.
"""

import os
import tempfile
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from csr_jax import paths

_ORIENT = 0x0112
# Pillow's decompression-bomb warning limit (~89.5 MP, 0.25 GB of RGB): larger headers are
# skipped before decoding instead of being decoded with a warning.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS


class BadImage(ValueError):
  """An input that cannot become a training image; str() is the one-line reason."""


def _png_bit_depth(head: bytes):
  """(bit depth, colour type) from a PNG IHDR, or None for non-PNG data."""
  if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR" or len(head) < 26:
    return None
  return head[24], head[25]


def _decode_png16_colour(path) -> np.ndarray:
  import av  # pylint: disable=g-import-not-at-top
  try:
    with av.open(str(path)) as c:
      frame = next(c.decode(video=0))
      fmt = "rgba64le" if "a" in frame.format.name.replace("gray", "") else "rgb48le"
      arr = frame.to_ndarray(format=fmt)
  except (av.error.FFmpegError, StopIteration) as e:
    raise BadImage(f"corrupt 16-bit PNG ({e.__class__.__name__})") from None
  return arr[..., :3]


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
  """EXIF orientation 1-8 -> upright array (the transforms of PIL.ImageOps.exif_transpose)."""
  ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
         5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
         7: lambda a: np.rot90(a, 1)[::-1], 8: lambda a: np.rot90(a, 1)}
  return np.ascontiguousarray(ops[orientation](arr)) if orientation in ops else arr


def _to_u8(arr: np.ndarray) -> np.ndarray:
  if arr.dtype == np.uint8:
    return arr
  return np.floor(arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)


def load_rgb(path) -> np.ndarray:
  """uint8 HWC RGB of an image file, or BadImage with the reason it cannot be used. A URL
  (`gs://...`) is copied to a local temp file first, then decoded by the same rules."""
  if paths.is_url(path):
    try:
      data = paths.resolve(path).read_bytes()
    except OSError as e:
      raise BadImage(f"unreadable ({e.strerror or type(e).__name__})") from None
    with tempfile.TemporaryDirectory(prefix="csr_hr_") as d:
      local = os.path.join(d, "image" + os.path.splitext(os.fspath(path))[1])
      with open(local, "wb") as f:
        f.write(data)
      return load_rgb(local)
  try:
    with open(path, "rb") as f:
      head = f.read(32)
  except OSError as e:
    raise BadImage(f"unreadable ({e.strerror or type(e).__name__})") from None
  if not head:
    raise BadImage("empty file")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked just below
      im = Image.open(path)
    with im:
      w, h = im.size
      if w * h > MAX_PIXELS:
        raise BadImage(f"too many pixels: {w}x{h} > {MAX_PIXELS} (decompression-bomb limit)")
      orientation = im.getexif().get(_ORIENT, 1)
      png = _png_bit_depth(head)
      if png is not None and png[0] == 16 and png[1] in (2, 6):
        im.load()  # surfaces truncation before the second decoder runs
        arr = _decode_png16_colour(path)
      else:
        im.load()
        arr = _convert(im)
  except UnidentifiedImageError:
    raise BadImage("not an image Pillow can identify") from None
  except Image.DecompressionBombError as e:
    raise BadImage(f"too many pixels ({e})") from None
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    if isinstance(e, BadImage):
      raise
    why = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise BadImage(f"truncated or corrupt ({why})") from None
  return _orient(_to_u8(arr), orientation)


def _convert(im: Image.Image) -> np.ndarray:
  mode = im.mode
  if mode.startswith("I;16") or mode == "I":
    g = np.asarray(im)
    if g.size and (g.min() < 0 or g.max() > 65535):
      raise BadImage(f"unsupported pixel mode {mode} (values beyond 16 bits)")
    return np.repeat(_to_u8(g.astype(np.uint16))[..., None], 3, -1)
  if mode == "F":
    raise BadImage("unsupported pixel mode F (32-bit float)")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Pillow warns when palette transparency is dropped
    if mode in ("1", "L", "LA", "La"):
      g = np.asarray(im.convert("L"))
      return np.repeat(g[..., None], 3, -1)
    if mode in ("P", "PA"):
      im = im.convert("RGBA")
    return np.asarray(im.convert("RGB"))  # RGBA -> RGB drops alpha; CMYK uses Pillow's formula


def crop_to_multiple(img: np.ndarray, scale: int) -> np.ndarray:
  """Top-left crop so both sides are multiples of `scale` (the SR benchmark 'modcrop')."""
  h, w = img.shape[:2]
  return img[:h - h % scale, :w - w % scale]


def prepare_hr(path, scale: int, min_size: int, crop: bool = True) -> np.ndarray:
  """HR uint8 HWC ready to downscale, or BadImage."""
  img = load_rgb(path)
  h, w = img.shape[:2]
  if crop:
    img = crop_to_multiple(img, scale)
  elif h % scale or w % scale:
    raise BadImage(f"size {w}x{h} is not a multiple of scale {scale} (use --crop_to_multiple)")
  hh, ww = img.shape[:2]
  if min(hh, ww) < max(min_size, scale):
    raise BadImage(f"too small: {w}x{h} (HR sides must be >= {max(min_size, scale)})")
  return img
