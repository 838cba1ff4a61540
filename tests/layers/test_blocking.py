"""Blocking-edge detector on real Kodak crops: rates on JPEG/WebP vs uncompressed, torch parity."""

import io

import numpy as np
import pytest
from PIL import Image

from csr_jax.layers.blocking import blocking_edges
from tests.conftest import kodak_crop


def _codec(x, fmt: str, quality: int) -> np.ndarray:
  buf = io.BytesIO()
  Image.fromarray((x[0] * 255).round().astype(np.uint8)).save(buf, format=fmt, quality=quality)
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


@pytest.fixture(scope="module")
def crop():
  return kodak_crop(128, 128, "kodim23", 200, 300)


def test_jpeg_block_boundaries_marked(crop):
  """JPEG q10 (8x8 blocks): 56% of boundary pixels marked, 100% of marks on the grid; the
  uncompressed crop: 0.5% of pixels marked (rates of this crop, kodim23 at (200, 300))."""
  z = _codec(crop, "JPEG", 10)
  m = np.asarray(blocking_edges(z, 8))[0] > 0
  grid = _grid(128, 128, 8)
  recall, precision = m[grid].mean(), m[grid].sum() / m.sum()
  clean = np.asarray(blocking_edges(crop, 8))[0].mean()
  assert recall > 0.45 and precision > 0.98, (recall, precision)
  assert clean < 0.01, clean


def test_webp_and_learned():
  """WebP q5 (4-pixel grid), kodim05 at (100, 100): 11% of grid pixels marked, all marks on
  the grid, 1.2% of the uncompressed crop; block 0 (learned codecs) marks nothing."""
  crop = kodak_crop(128, 128, "kodim05", 100, 100)
  z = _codec(crop, "WEBP", 5)
  m = np.asarray(blocking_edges(z, 4))[0] > 0
  grid = _grid(128, 128, 4)
  assert m[grid].mean() > 0.08 and m[grid].sum() / m.sum() > 0.98
  assert np.asarray(blocking_edges(crop, 4)).mean() < 0.02
  assert float(np.asarray(blocking_edges(z, 0)).max()) == 0.0


def test_phase_follows_shifted_crop(crop):
  """A crop that starts off the codec grid is detected on the shifted grid."""
  z = _codec(crop, "JPEG", 10)[:, 3:, 5:]
  m = np.asarray(blocking_edges(z, 8))[0] > 0
  grid = _grid(128, 128, 8)[3:, 5:]
  assert m.sum() > 0 and m[grid].sum() / m.sum() > 0.98


def test_matches_torch(crop):
  torch = pytest.importorskip("torch")
  from csr_jax.torch_twins.cisr import blocking_edges as torch_edges
  z = np.concatenate([_codec(crop, "JPEG", 20), _codec(crop, "WEBP", 10), crop])
  for block in (8, 4):
    ours = np.asarray(blocking_edges(z, block))
    ref = torch_edges(torch.from_numpy(z).permute(0, 3, 1, 2), block).numpy()
    np.testing.assert_array_equal(ours, ref)
