"""Blind blocking detector on real Kodak crops: the grid it finds on JPEG q10, WebP q5 and
uncompressed crops, the marks on that grid, torch parity."""

import io

import jax
import numpy as np
import pytest
from PIL import Image

from csr_jax.layers.blocking import blocking_edges, detect_grid
from tests.conftest import kodak_crop, kodak_path, load_rgb


def _codec(x, fmt: str, quality: int) -> np.ndarray:
  """x: [1, H, W, 3] or uint8 [H, W, 3] -> the decoded [1, H, W, 3] float image."""
  img = x if x.dtype == np.uint8 else (x[0] * 255).round().astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format=fmt, quality=quality)
  buf.seek(0)
  with Image.open(buf) as im:
    return (np.asarray(im.convert("RGB"), np.float32) / 255.0)[None]


def _grid(h: int, w: int, block: int) -> np.ndarray:
  """Pixels on either side of a block boundary of a grid anchored at (0, 0)."""
  g = np.zeros((h, w), bool)
  for i in range(block, w, block):
    g[:, i - 1:i + 1] = True
  for i in range(block, h, block):
    g[i - 1:i + 1, :] = True
  return g


edges, detect = jax.jit(blocking_edges), jax.jit(detect_grid)
NAMES = ("kodim01", "kodim03", "kodim05", "kodim07", "kodim13", "kodim15", "kodim20", "kodim23")
SPOTS = tuple((100 + 13 * i, 150 + 29 * i) for i in range(len(NAMES)))   # (top, left)


@pytest.fixture(scope="module")
def images():
  return [load_rgb(kodak_path(n)) for n in NAMES]


def _crops(images, fmt=None, quality=0, size=96):
  """Each whole image encoded, then cropped at SPOTS (origins off the codec grid)."""
  out = [(_codec(im, fmt, quality) if fmt else im[None] / 255.0)[:, t:t + size, l:l + size]
         for im, (t, l) in zip(images, SPOTS)]
  return np.concatenate(out).astype(np.float32)


def test_grid_found_per_image(images):
  """96x96 crops of 8 Kodak images: JPEG q10 8/8 period 8, phases right; WebP q5 6/8 period 4
  (kodim01: none, kodim23: 8); uncompressed 8/8 none. benchmarks/blocking_rates.py gives the
  rates over all 24 images (csr_jax/layers/blocking.py docstring)."""
  period, phase_c, phase_r = (np.asarray(v) for v in detect(_crops(images, "JPEG", 10)))
  tops, lefts = np.array(SPOTS).T
  assert period.tolist() == [8] * 8
  np.testing.assert_array_equal(phase_c, -lefts % 8)
  np.testing.assert_array_equal(phase_r, -tops % 8)
  webp = np.asarray(detect(_crops(images, "WEBP", 5))[0])
  assert (webp == 4).sum() >= 6, webp
  assert np.asarray(detect(_crops(images))[0]).tolist() == [0] * 8


@pytest.fixture(scope="module")
def crop():
  return kodak_crop(128, 128, "kodim23", 200, 300)


def test_jpeg_block_boundaries_marked(crop):
  """JPEG q10 (8x8 blocks): over 45% of boundary pixels marked, all marks on the grid; the
  uncompressed crop has no grid, so nothing is marked."""
  z = _codec(crop, "JPEG", 10)
  m = np.asarray(edges(z))[0] > 0
  grid = _grid(128, 128, 8)
  recall, precision = m[grid].mean(), m[grid].sum() / m.sum()
  assert recall > 0.45 and precision > 0.98, (recall, precision)
  assert float(np.asarray(edges(crop)).max()) == 0.0


def test_webp_marks_on_the_4_grid():
  """WebP q5, kodim05 at (100, 100): the 4-pixel grid is found and its marks lie on it."""
  z = _codec(kodak_crop(128, 128, "kodim05", 100, 100), "WEBP", 5)
  assert np.asarray(detect(z)[0]).tolist() == [4]
  m = np.asarray(edges(z))[0] > 0
  grid = _grid(128, 128, 4)
  assert m[grid].mean() > 0.08 and m[grid].sum() / m.sum() > 0.98


def test_phase_follows_shifted_crop(crop):
  """A crop that starts off the codec grid is detected on the shifted grid."""
  z = _codec(crop, "JPEG", 10)[:, 3:, 5:]
  m = np.asarray(edges(z))[0] > 0
  grid = _grid(128, 128, 8)[3:, 5:]
  assert m.sum() > 0 and m[grid].sum() / m.sum() > 0.98


def test_matches_torch(images):
  """Same grids; same marks but for exact ties (step = alpha * inner in exact arithmetic, from
  8-bit input), which XLA's fused float association can flip: 6 of 73,728 pixels here."""
  torch = pytest.importorskip("torch")
  from csr_jax.torch_twins import cisr as twin
  z = np.concatenate([_crops(images[:3], "JPEG", 20), _crops(images[:3], "WEBP", 10),
                      _crops(images[:2])])
  zt = torch.from_numpy(z).permute(0, 3, 1, 2)
  for ours, ref in zip(detect(z), twin.detect_grid(zt)):
    np.testing.assert_array_equal(np.asarray(ours), ref.numpy())
  ref = twin.blocking_edges(zt).numpy()
  assert ref.sum() > 100
  assert (np.asarray(edges(z)) != ref).mean() < 1e-4
