"""Image-quality metrics as SR/CIR papers compute them (BasicSR / KAIR conventions).

All numpy float64 on [0, 255] values. Images are HWC (or HW) and either uint8 in [0, 255] or
float in [0, 1]; floats are scaled by 255 without rounding (quantize model outputs first, as the
official test scripts do). `y_channel=True` converts RGB to BT.601 luma first (MATLAB
`rgb2ycbcr`); 1-channel images count as luma already. `crop_border` pixels are dropped on every
side before measuring (papers use crop_border = scale).

Reference values: `psnr` equals scikit-image's `peak_signal_noise_ratio(data_range=255)` and
`ssim` equals `structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=-1)` (tests/test_metrics.py); both are
the MATLAB SSIM / BasicSR `calculate_ssim` definition ('valid' 11x11 Gaussian window).
"""

import numpy as np

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0


def _as_255(img, name: str) -> np.ndarray:
  """uint8 or [0, 1] float HW/HWC image -> float64 HWC in [0, 255]."""
  a = np.asarray(img)
  if a.ndim == 2:
    a = a[..., None]
  if a.ndim != 3 or a.shape[-1] not in (1, 3):
    raise ValueError(f"{name}: expected an HW or HWC image with 1 or 3 channels, got shape "
                     f"{a.shape}")
  if a.dtype == np.uint8:
    return a.astype(np.float64)
  if not np.issubdtype(a.dtype, np.floating):
    raise TypeError(f"{name}: expected uint8 or float in [0, 1], got dtype {a.dtype}")
  a = a.astype(np.float64)
  lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
  if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
    raise ValueError(f"{name}: float image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
  return a * 255.0


def rgb_to_y(img) -> np.ndarray:
  """BT.601 luma of an RGB image as HW float64 on the [0, 255] scale (range 16..235).

  MATLAB `rgb2ycbcr` on [0, 1] RGB: Y = 16 + 65.481 R + 128.553 G + 24.966 B (no rounding).
  """
  a = _as_255(img, "rgb_to_y")
  if a.shape[-1] != 3:
    raise ValueError(f"rgb_to_y: expected 3 channels, got shape {np.shape(img)}")
  return _y255(a)[..., 0]


def _y255(a: np.ndarray) -> np.ndarray:
  if a.shape[-1] == 1:
    return a
  return (16.0 + a @ _Y_WEIGHTS)[..., None]


def _prepare(img1, img2, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
  a, b = _as_255(img1, "img1"), _as_255(img2, "img2")
  if a.shape != b.shape:
    raise ValueError(f"image shapes differ: img1 {a.shape} vs img2 {b.shape}")
  c = int(crop_border)
  if c < 0 or 2 * c >= min(a.shape[:2]):
    raise ValueError(f"crop_border={crop_border} is invalid for images of shape {a.shape}")
  if c:
    a, b = a[c:-c, c:-c], b[c:-c, c:-c]
  if y_channel:
    a, b = _y255(a), _y255(b)
  return a, b


def _psnr_from_mse(mse: float) -> float:
  return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def psnr(img1, img2, crop_border: int = 0, y_channel: bool = False) -> float:
  """PSNR in dB over all pixels and channels (inf for identical images)."""
  a, b = _prepare(img1, img2, crop_border, y_channel)
  return _psnr_from_mse(float(np.mean((a - b) ** 2)))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2
  w = np.exp(-0.5 * (x / sigma) ** 2)
  return w / w.sum()


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
  """Separable 'valid' correlation of HW `x` with the 1-D window `w` on both axes."""
  k = len(w)
  h, wd = x.shape[0] - k + 1, x.shape[1] - k + 1
  rows = sum(w[i] * x[i:i + h] for i in range(k))
  return sum(w[j] * rows[:, j:j + wd] for j in range(k))


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  w = _gaussian_window()
  mu1, mu2 = _filter_valid(a, w), _filter_valid(b, w)
  s11 = _filter_valid(a * a, w) - mu1 ** 2
  s22 = _filter_valid(b * b, w) - mu2 ** 2
  s12 = _filter_valid(a * b, w) - mu1 * mu2
  num = (2 * mu1 * mu2 + c1) * (2 * s12 + c2)
  den = (mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2)
  return float(np.mean(num / den))


def ssim(img1, img2, crop_border: int = 0, y_channel: bool = False) -> float:
  """SSIM (Wang et al. 2004, MATLAB/BasicSR form), mean over channels for RGB."""
  a, b = _prepare(img1, img2, crop_border, y_channel)
  if min(a.shape[:2]) < 11:
    raise ValueError(f"ssim needs at least 11x11 pixels after cropping, got {a.shape[:2]}")
  return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[-1])]))


def blocking_effect_factor(x: np.ndarray, block: int = 8, counts: str = "kair") -> float:
  """BEF of one HW channel (Yim & Bovik 2011, eq. 6-9), on the scale of `x`.

  `counts='exact'` divides by the number of pixel pairs actually summed; `'kair'` uses the
  paper's N_HB = N_V (N_H / B - 1) literally with floor division, as the KAIR/SwinIR
  `calculate_psnrb` does (both agree when H and W are multiples of B).
  """
  hgt, wid = x.shape
  if min(hgt, wid) <= block:
    raise ValueError(f"blocking_effect_factor needs images larger than {block}x{block}, got "
                     f"{x.shape}")
  dh2 = (x[:, 1:] - x[:, :-1]) ** 2
  dv2 = (x[1:] - x[:-1]) ** 2
  bw = (np.arange(wid - 1) + 1) % block == 0
  bh = (np.arange(hgt - 1) + 1) % block == 0
  sum_b = dh2[:, bw].sum() + dv2[bh].sum()
  sum_nb = dh2[:, ~bw].sum() + dv2[~bh].sum()
  if counts == "exact":
    n_b = hgt * bw.sum() + wid * bh.sum()
  elif counts == "kair":
    n_b = hgt * (wid // block - 1) + wid * (hgt // block - 1)
  else:
    raise ValueError(f"counts must be 'exact' or 'kair', got {counts!r}")
  n_nb = hgt * (wid - 1) + wid * (hgt - 1) - n_b
  d_b, d_nb = sum_b / n_b, sum_nb / n_nb
  eta = np.log2(block) / np.log2(min(hgt, wid))
  return float(eta * (d_b - d_nb)) if d_b > d_nb else 0.0


def psnr_b(img1, img2, crop_border: int = 0, y_channel: bool = False,
           counts: str = "kair") -> float:
  """PSNR-B (Yim & Bovik 2011): PSNR with MSE + BEF of `img1` (the restored/decoded image).

  8x8 blocks; the mean over channels for RGB. The boundary counts are KAIR's
  (`calculate_psnrb` in util_calculate_psnr_ssim.py, which the restoration papers' official
  code ships): N_HB = H (W // 8 - 1), floor division, also for sides that are not
  multiples of 8; `counts='exact'` counts the pixel pairs actually summed instead.
  """
  a, b = _prepare(img1, img2, crop_border, y_channel)
  vals = []
  for c in range(a.shape[-1]):
    mse = float(np.mean((a[..., c] - b[..., c]) ** 2))
    vals.append(_psnr_from_mse(mse + blocking_effect_factor(a[..., c], 8, counts)))
  return float(np.mean(vals))


def psnr_jax(img1, img2, crop_border: int = 0, y_channel: bool = False):
  """Per-image PSNR of [..., H, W, C] float images in [0, 1], jit-friendly (float32).

  Same definition as `psnr`; `crop_border` and `y_channel` must be static.
  """
  import jax.numpy as jnp
  a = jnp.asarray(img1, jnp.float32) * 255.0
  b = jnp.asarray(img2, jnp.float32) * 255.0
  if a.shape != b.shape:
    raise ValueError(f"image shapes differ: img1 {a.shape} vs img2 {b.shape}")
  if crop_border:
    c = int(crop_border)
    a, b = a[..., c:-c, c:-c, :], b[..., c:-c, c:-c, :]
  if y_channel and a.shape[-1] == 3:
    wts = jnp.asarray(_Y_WEIGHTS, jnp.float32)
    a, b = (a @ wts)[..., None], (b @ wts)[..., None]
  mse = jnp.mean((a - b) ** 2, axis=(-3, -2, -1))
  return 10.0 * jnp.log10(255.0 ** 2 / mse)
