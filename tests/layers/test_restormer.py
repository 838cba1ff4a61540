"""Parity of the Restormer primitives (MDTA, GDFN) with the torch modules of the PromptCIR twin,
on features made from a real Kodak crop."""

import numpy as np
import pytest
import jax.numpy as jnp
import torch
from flax import nnx

from csr_jax.weights import load_module
from csr_jax.models.promptcir import module_table
from csr_jax.layers.resize import pixel_unshuffle
from csr_jax.layers.restormer import GDFN, MDTA, l2_normalize
from csr_jax.torch_twins import promptcir as twin
from tests.conftest import kodak_crop


def kodak_features(h, w, c, name="kodim05"):
  """[1, h, w, c] in [-1, 1]: a 4h x 4w Kodak crop, pixel-unshuffled to 48 channels, tiled."""
  f = np.asarray(pixel_unshuffle(jnp.asarray(kodak_crop(4 * h, 4 * w, name)), 4))
  return np.concatenate([f] * -(-c // 48), axis=-1)[..., :c] * 2.0 - 1.0


def perturbed(module, seed=0):
  """Torch-initialised module with every parameter moved, so unit LN scales or temperatures
  cannot hide a transposition."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.add_(0.2 * torch.randn(p.shape, generator=g))
  return module.eval()


def run_pair(make, tmod, x):
  jmod = load_module(make, tmod.state_dict(), module_table)
  got = np.asarray(jmod(jnp.asarray(x)))
  with torch.no_grad():
    want = tmod(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  return got, want


@pytest.mark.parametrize("bias", [False, True])
def test_gdfn_matches_torch(bias):
  torch.manual_seed(0)
  x = kodak_features(16, 24, 24).astype(np.float32)
  got, want = run_pair(lambda: GDFN(24, 2.66, bias, rngs=nnx.Rngs(0)),
                       perturbed(twin.FeedForward(24, 2.66, bias)), x)
  assert got.shape == (1, 16, 24, 24)
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("heads", [1, 4])
def test_mdta_matches_torch(heads):
  torch.manual_seed(1)
  x = kodak_features(16, 24, 32, "kodim07").astype(np.float32)
  tmod = perturbed(twin.Attention(32, heads, bias=False), seed=heads)
  got, want = run_pair(lambda: MDTA(32, heads, bias=False, rngs=nnx.Rngs(0)), tmod, x)
  assert np.abs(want).max() > 0.01
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_l2_normalize_matches_torch_at_zero():
  x = np.zeros((2, 5), np.float32)
  x[0] = kodak_crop(1, 5)[0, 0, :, 0]
  want = torch.nn.functional.normalize(torch.from_numpy(x), dim=-1).numpy()
  np.testing.assert_allclose(np.asarray(l2_normalize(jnp.asarray(x), -1)), want, atol=1e-7)
