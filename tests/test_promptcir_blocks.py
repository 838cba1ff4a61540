"""PromptCIR blocks vs the PyTorch twin on Kodak features: hybrid attention block (window
attention with and without the shift + SW-MSA mask), the prompt module, a Restormer block and
an RHAG group."""

import numpy as np
import pytest
import jax.numpy as jnp
import torch
from flax import nnx

from csr_jax.weights import load_module
from csr_jax.models.promptcir import module_table
from csr_jax.layers.ocab import relative_position_index_oca
from csr_jax.layers.resize import pixel_unshuffle
from csr_jax.layers.window import relative_position_index, shift_attention_mask
from csr_jax.models import promptcir as m
from csr_jax.torch_twins import promptcir as twin
from tests.conftest import kodak_crop

CFG = {**m.DEFAULTS}


def kodak_features(h, w, c, name="kodim05"):
  """[1, h, w, c] in [-1, 1] from a 4h x 4w Kodak crop (pixel-unshuffled to 48 channels)."""
  f = np.asarray(pixel_unshuffle(jnp.asarray(kodak_crop(4 * h, 4 * w, name)), 4))
  return (np.concatenate([f] * -(-c // 48), axis=-1)[..., :c] * 2.0 - 1.0).astype(np.float32)


def load_perturbed(make, tmod, seed=0, scale=0.2):
  """(JAX block built by `make` holding the torch block's weights, torch block); the torch
  init is moved by noise so unit LN scales or zero biases cannot hide a mistake."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in tmod.parameters():
      p.add_(scale * torch.randn(p.shape, generator=g))
  return load_module(make, tmod.state_dict(), module_table), tmod.eval()


def close(got, want, rel=1e-5):
  err = np.abs(got - want).max()
  assert err <= rel * np.abs(want).max(), (err, np.abs(want).max())


@pytest.mark.parametrize("shift", [0, 4])
def test_hab_matches_torch(shift):
  torch.manual_seed(shift)
  dim, ws, heads, h, w = 16, 8, 2, 24, 32
  jmod, tmod = load_perturbed(
      lambda: m.HAB(dim, heads, ws, shift, 3, 8, 0.01, 2.66, rngs=nnx.Rngs(0)),
      twin.HAB(dim, heads, ws, shift, 3, 8, 0.01, 2.66), seed=shift)
  x = kodak_features(h, w, dim, "kodim08")
  rpi = relative_position_index(ws)
  mask = shift_attention_mask(h, w, ws, ws // 2)
  got = np.asarray(jmod(jnp.asarray(x), rpi, mask))
  with torch.no_grad():
    want = tmod(torch.from_numpy(x).reshape(1, h * w, dim), (h, w), torch.from_numpy(rpi),
                twin.calculate_mask(h, w, ws, ws // 2)).reshape(1, h, w, dim).numpy()
  close(got, want)
  if shift:  # the shifted block differs from an unshifted one with the same weights
    jmod.shift_size = 0
    assert np.abs(np.asarray(jmod(jnp.asarray(x), rpi, mask)) - want).max() > 1e-3


def test_shift_mask_matches_official():
  np.testing.assert_array_equal(shift_attention_mask(32, 48, 16, 8),
                                twin.calculate_mask(32, 48, 16, 8).numpy())


def test_prompt_module_matches_torch():
  torch.manual_seed(0)
  jmod, tmod = load_perturbed(lambda: m.PromptBasis(32, 7, 8, 24, rngs=nnx.Rngs(0)),
                              twin.ActiveBlock_Prompt_Basis(32, 7, 8, 24))
  x = kodak_features(8, 12, 32, "kodim15")
  got = np.asarray(jmod(jnp.asarray(x)))
  with torch.no_grad():
    want = tmod(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  assert got.shape == (1, 8, 12, 24)
  close(got, want)


def test_transformer_block_matches_torch():
  torch.manual_seed(0)
  jmod, tmod = load_perturbed(lambda: m.TransformerBlock(40, 4, 2.66, False, rngs=nnx.Rngs(0)),
                              twin.TransformerBlock(40, 4, 2.66, False))
  x = kodak_features(8, 16, 40, "kodim20")
  got = np.asarray(jmod(jnp.asarray(x)))
  with torch.no_grad():
    want = tmod(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  close(got, want)


def test_rhag_matches_torch():
  torch.manual_seed(0)
  dim, ws = 16, 8
  jmod, tmod = load_perturbed(
      lambda: m.RHAG(dim, 2, 2, ws, CFG, rngs=nnx.Rngs(0)),
      twin.RHAG(dim, 2, 2, ws, 3, 16, 0.01, 0.5, 2.66), scale=0.1)
  x = kodak_features(16, 32, dim, "kodim03")
  rpi_sa, rpi_oca = relative_position_index(ws), relative_position_index_oca(ws, 12)
  got = np.asarray(jmod(jnp.asarray(x), rpi_sa, rpi_oca))
  params = {"rpi_sa": torch.from_numpy(rpi_sa), "rpi_oca": torch.from_numpy(rpi_oca)}
  with torch.no_grad():
    want = tmod(torch.from_numpy(x).permute(0, 3, 1, 2), params).permute(0, 2, 3, 1).numpy()
  close(got, want)
