"""Metrics vs scikit-image (PSNR, SSIM, Y) and vs a loop transcription of PSNR-B, on real
Kodak crops degraded with Pillow JPEG."""

import io

import jax
import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from csr_jax import metrics
from tests.conftest import kodak_path, load_rgb


def _crop(name="kodim05", h=96, w=120, top=100, left=200) -> np.ndarray:
  return np.ascontiguousarray(load_rgb(kodak_path(name))[top:top + h, left:left + w])


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="JPEG", quality=quality)
  buf.seek(0)
  with Image.open(buf) as im:
    return np.asarray(im.convert("RGB"))


def _sk_ssim(a, b):
  return structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                               use_sample_covariance=False, data_range=255,
                               channel_axis=-1 if a.ndim == 3 else None)


@pytest.mark.parametrize("quality", [10, 40])
@pytest.mark.parametrize("border", [0, 4])
def test_psnr_ssim_match_skimage(quality, border):
  hr = _crop()
  lq = _jpeg(hr, quality)
  c = slice(border, hr.shape[0] - border), slice(border, hr.shape[1] - border)
  a, b = hr[c].astype(np.float64), lq[c].astype(np.float64)
  ya, yb = rgb2ycbcr(hr[c])[..., 0], rgb2ycbcr(lq[c])[..., 0]
  assert abs(metrics.psnr(lq, hr, border) - peak_signal_noise_ratio(a, b, data_range=255)) < 1e-4
  assert abs(metrics.ssim(lq, hr, border) - _sk_ssim(a, b)) < 1e-5
  assert abs(metrics.psnr(lq, hr, border, y_channel=True)
             - peak_signal_noise_ratio(ya, yb, data_range=255)) < 1e-4
  assert abs(metrics.ssim(lq, hr, border, y_channel=True) - _sk_ssim(ya, yb)) < 1e-5


def test_values_are_plausible_and_ordered():
  hr = _crop()
  q10, q40 = _jpeg(hr, 10), _jpeg(hr, 40)
  p10, p40 = metrics.psnr(q10, hr), metrics.psnr(q40, hr)
  assert 20 < p10 < p40 < 45
  assert 0.5 < metrics.ssim(q10, hr) < metrics.ssim(q40, hr) < 1
  assert metrics.psnr(hr, hr) == float("inf")
  assert metrics.ssim(hr, hr) == pytest.approx(1.0, abs=1e-12)


def test_float_and_uint8_inputs_agree():
  hr = _crop()
  lq = _jpeg(hr, 20)
  f = lambda u: u.astype(np.float32) / 255.0
  assert metrics.psnr(f(lq), f(hr), 2, True) == pytest.approx(metrics.psnr(lq, hr, 2, True),
                                                              abs=1e-4)
  assert metrics.ssim(f(lq), hr, 2) == pytest.approx(metrics.ssim(lq, hr, 2), abs=1e-5)


def test_rgb_to_y_is_matlab_bt601():
  hr = _crop()
  np.testing.assert_allclose(metrics.rgb_to_y(hr), rgb2ycbcr(hr)[..., 0], atol=1e-10)
  assert metrics.rgb_to_y(np.ones((1, 1, 3), np.float32))[0, 0] == pytest.approx(235.0)
  assert metrics.rgb_to_y(np.zeros((1, 1, 3), np.uint8))[0, 0] == pytest.approx(16.0)


def _bef_loop(y: np.ndarray, kair_counts: bool = False, block: int = 8) -> float:
  """Yim & Bovik 2011, eqs. 6-9, one pixel pair at a time."""
  hgt, wid = y.shape
  sums, counts = {True: 0.0, False: 0.0}, {True: 0, False: 0}
  for i in range(hgt):
    for j in range(wid - 1):  # horizontal neighbours (i, j) | (i, j + 1)
      on = (j + 1) % block == 0
      sums[on] += (y[i, j] - y[i, j + 1]) ** 2
      counts[on] += 1
  for i in range(hgt - 1):  # vertical neighbours
    for j in range(wid):
      on = (i + 1) % block == 0
      sums[on] += (y[i, j] - y[i + 1, j]) ** 2
      counts[on] += 1
  if kair_counts:  # N_HB = N_V (N_H / B - 1), N_VB = N_H (N_V / B - 1) with floor division
    n_b = hgt * (wid // block - 1) + wid * (hgt // block - 1)
    counts = {True: n_b, False: counts[True] + counts[False] - n_b}
  d_b, d_nb = sums[True] / counts[True], sums[False] / counts[False]
  eta = np.log2(block) / np.log2(min(hgt, wid))
  return eta * (d_b - d_nb) if d_b > d_nb else 0.0


def _psnr_b_loop(test, ref, kair_counts=False):
  yt, yr = metrics.rgb_to_y(test), metrics.rgb_to_y(ref)
  mse = np.mean((yt - yr) ** 2)
  return 10 * np.log10(255.0 ** 2 / (mse + _bef_loop(yt, kair_counts)))


@pytest.mark.parametrize("shape", [(48, 64), (44, 58)])
def test_psnr_b_matches_loop_formula(shape):
  hr = _crop(h=shape[0], w=shape[1])
  lq = _jpeg(hr, 10)
  got = metrics.psnr_b(lq, hr, y_channel=True, counts="exact")
  assert got == pytest.approx(_psnr_b_loop(lq, hr), abs=1e-6)
  kair = metrics.psnr_b(lq, hr, y_channel=True, counts="kair")
  assert kair == pytest.approx(_psnr_b_loop(lq, hr, kair_counts=True), abs=1e-6)
  if shape[0] % 8 == 0 and shape[1] % 8 == 0:
    assert kair == pytest.approx(got, abs=1e-12)
  else:
    assert kair != pytest.approx(got, abs=1e-6)


def _kair_psnrb(img1, img2, y_channel):
  """A transcription of `calculate_psnrb` in KAIR's / the official UCIP and PromptCIR
  repositories' util_calculate_psnr_ssim.py (torch, [0, 1] scale, BEF of img1)."""
  def bef(im):
    bh, bv = torch.arange(7, im.shape[3] - 1, 8), torch.arange(7, im.shape[2] - 1, 8)
    nh = np.setdiff1d(torch.arange(0, im.shape[3] - 1), bh)
    nv = np.setdiff1d(torch.arange(0, im.shape[2] - 1), bv)
    hb = ((im[:, :, :, bh] - im[:, :, :, bh + 1]) ** 2).sum()
    vb = ((im[:, :, bv, :] - im[:, :, bv + 1, :]) ** 2).sum()
    hn = ((im[:, :, :, nh] - im[:, :, :, nh + 1]) ** 2).sum()
    vn = ((im[:, :, nv, :] - im[:, :, nv + 1, :]) ** 2).sum()
    n_bh, n_bv = im.shape[2] * (im.shape[3] // 8 - 1), im.shape[3] * (im.shape[2] // 8 - 1)
    n_nh, n_nv = im.shape[2] * (im.shape[3] - 1) - n_bh, im.shape[3] * (im.shape[2] - 1) - n_bv
    b, n = (hb + vb) / (n_bh + n_bv), (hn + vn) / (n_nh + n_nv)
    scaler = np.log2(8) / np.log2(min(im.shape[2], im.shape[3]))
    return scaler * (b - n) if b > n else 0.0
  a, b = img1.astype(np.float64), img2.astype(np.float64)
  if y_channel:
    a, b = metrics.rgb_to_y(img1)[..., None], metrics.rgb_to_y(img2)[..., None]
  a = torch.from_numpy(a).permute(2, 0, 1)[None] / 255.0
  b = torch.from_numpy(b).permute(2, 0, 1)[None] / 255.0
  total = 0.0
  for c in range(a.shape[1]):
    mse = float(((a[:, c:c + 1] - b[:, c:c + 1]) ** 2).mean())
    total += 10 * np.log10(1 / (mse + float(bef(a[:, c:c + 1]))))
  return total / a.shape[1]


@pytest.mark.parametrize("y_channel", [False, True])
def test_psnr_b_follows_kair_on_sides_not_multiples_of_8(y_channel):
  hr = _crop("kodim05", h=44, w=58, top=120, left=200)
  lq = _jpeg(hr, 10)
  want = _kair_psnrb(lq, hr, y_channel)
  assert metrics.psnr_b(lq, hr, y_channel=y_channel) == pytest.approx(want, abs=1e-9)
  assert metrics.psnr_b(lq, hr, y_channel=y_channel, counts="exact") != pytest.approx(want,
                                                                                      abs=1e-4)


def test_psnr_b_properties():
  hr = _crop("kodim23", h=128, w=128, top=96, left=200)  # an 8-aligned crop, no blocking
  assert metrics.blocking_effect_factor(metrics.rgb_to_y(hr)) == 0.0
  q10, q50, q90 = (_jpeg(hr, q) for q in (10, 50, 90))
  p10, pb10 = metrics.psnr(q10, hr, y_channel=True), metrics.psnr_b(q10, hr, y_channel=True)
  assert pb10 < p10 - 2.0  # JPEG q10 is blocky: BEF > 0 lowers PSNR-B
  bef = [metrics.blocking_effect_factor(metrics.rgb_to_y(q)) for q in (q10, q50, q90)]
  assert bef[0] > bef[1] > bef[2] == 0.0
  assert metrics.psnr_b(q90, hr, y_channel=True) == metrics.psnr(q90, hr, y_channel=True)
  assert metrics.psnr_b(q10, hr) < metrics.psnr(q10, hr)  # RGB: mean over channels


def test_psnr_jax_equals_numpy_under_jit():
  hr = _crop()
  lqs = [_jpeg(hr, q) for q in (10, 30)]
  x = np.stack(lqs).astype(np.float32) / 255.0
  y = np.stack([hr, hr]).astype(np.float32) / 255.0
  for border, ych in [(0, False), (4, True)]:
    fn = jax.jit(lambda a, b: metrics.psnr_jax(a, b, border, ych))
    got = np.asarray(fn(x, y))
    want = [metrics.psnr(lq, hr, border, ych) for lq in lqs]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_bad_inputs_raise_one_line_errors():
  hr = _crop()
  with pytest.raises(ValueError, match=r"img1: float image values must lie in \[0, 1\]"):
    metrics.psnr(hr.astype(np.float32), hr)
  with pytest.raises(ValueError, match="image shapes differ"):
    metrics.psnr(hr[:-1], hr)
  with pytest.raises(TypeError, match="img2: expected uint8 or float"):
    metrics.ssim(hr, hr.astype(np.uint16))
  with pytest.raises(ValueError, match="expected an HW or HWC image"):
    metrics.psnr(hr[None], hr[None])
  with pytest.raises(ValueError, match="crop_border=48"):
    metrics.psnr(hr, hr, crop_border=48)
  with pytest.raises(ValueError, match="counts must be"):
    metrics.psnr_b(hr, hr, counts="paper")
