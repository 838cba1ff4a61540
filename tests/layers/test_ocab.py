"""Overlapping cross-attention (HAT OCAB) primitives vs torch: nn.Unfold windows, the relative
position index buffer, and the whole OCAB block of the PromptCIR twin on Kodak features."""

import numpy as np
import pytest
import jax.numpy as jnp
import torch
from flax import nnx

from csr_jax.weights import load_module
from csr_jax.models.promptcir import module_table
from csr_jax.layers.ocab import (overlap_window_size, overlapping_windows,
                                 relative_position_index_oca)
from csr_jax.layers.resize import pixel_unshuffle
from csr_jax.models.promptcir import OCAB
from csr_jax.torch_twins import promptcir as twin
from tests.conftest import kodak_crop


def kodak_features(h, w, c, name="kodim05"):
  f = np.asarray(pixel_unshuffle(jnp.asarray(kodak_crop(4 * h, 4 * w, name)), 4))
  return np.concatenate([f] * -(-c // 48), axis=-1)[..., :c] * 2.0 - 1.0


@pytest.mark.parametrize("ws", [8, 16])
def test_overlapping_windows_equal_unfold(ws):
  ows = overlap_window_size(ws, 0.5)
  x = kodak_features(2 * ws, 3 * ws, 12).astype(np.float32)
  got = np.asarray(overlapping_windows(jnp.asarray(x), ws, ows))
  unfold = torch.nn.Unfold(kernel_size=ows, stride=ws, padding=(ows - ws) // 2)
  cols = unfold(torch.from_numpy(x).permute(0, 3, 1, 2))  # [1, C*ows*ows, nW]
  want = cols.view(1, 12, ows * ows, -1).permute(0, 3, 2, 1).reshape(-1, ows * ows, 12).numpy()
  assert got.shape == (6, ows * ows, 12)
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("ws", [8, 16])
def test_relative_position_index_oca_equals_buffer(ws):
  got = relative_position_index_oca(ws, overlap_window_size(ws, 0.5))
  want = twin.calculate_rpi_oca(ws, 0.5).numpy()
  assert got.dtype == np.int64 and want.dtype == np.int64
  np.testing.assert_array_equal(got, want)
  # Negative entries wrap in torch; modulo the table size they must cover it exactly once per key.
  n = (ws + overlap_window_size(ws, 0.5) - 1) ** 2
  assert got.min() < 0 and len(np.unique(got % n)) == len(np.unique(got))


def test_overlapping_windows_rejects_bad_shapes():
  with pytest.raises(ValueError, match="multiples of ws"):
    overlapping_windows(jnp.zeros((1, 20, 16, 4)), 8, 12)


@pytest.mark.parametrize("heads", [1, 2])
def test_ocab_block_matches_torch(heads):
  torch.manual_seed(heads)
  dim, ws, h, w = 16, 8, 24, 32
  tmod = twin.OCAB(dim, ws, 0.5, heads, 2.66)
  g = torch.Generator().manual_seed(3)
  with torch.no_grad():
    for p in tmod.parameters():
      p.add_(0.2 * torch.randn(p.shape, generator=g))
  jmod = load_module(lambda: OCAB(dim, ws, 0.5, heads, 2.66, rngs=nnx.Rngs(0)),
                     tmod.state_dict(), module_table)
  x = kodak_features(h, w, dim, "kodim21").astype(np.float32)
  rpi = relative_position_index_oca(ws, jmod.overlap_win_size)
  got = np.asarray(jmod(jnp.asarray(x), rpi))
  with torch.no_grad():
    want = tmod(torch.from_numpy(x).reshape(1, h * w, dim), (h, w), torch.from_numpy(rpi))
  want = want.reshape(1, h, w, dim).numpy()
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
