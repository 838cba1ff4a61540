"""PromptCIR: parameter count, conversion to/from the official layout, JAX vs the PyTorch twin
on a real Kodak crop, and the official inference pipeline (flip pad, tiles, ensembles)."""

import numpy as np
import pytest
import jax.numpy as jnp
import torch

from csr_jax import models
from csr_jax import conversion as core
from csr_jax import convert
from csr_jax import conversion as core
from csr_jax.models import promptcir as pcir
from csr_jax.models import promptcir
from csr_jax.torch_twins import promptcir as twin
from tests.conftest import kodak_crop


def _randomised_twin(variant, seed=0, scale=0.02):
  """The twin with torch's init moved by noise (unit LN scales/temperatures would hide bugs)."""
  torch.manual_seed(seed)
  net = twin.create(variant)
  g = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for p in net.parameters():
      p.add_(scale * torch.randn(p.shape, generator=g))
  return net.eval()


@pytest.fixture(scope="module")
def official():
  """(twin state_dict, JAX model loaded from it) at the official size; built once."""
  sd = twin.create("official").state_dict()
  return sd, convert.from_torch("promptcir", "official", sd)


@pytest.fixture(scope="module")
def small():
  net = _randomised_twin("small")
  return net, convert.from_torch("promptcir", "small", net.state_dict())


def test_official_parameter_count(official):
  assert models.count_params(official[1]) == 34_754_927
  assert models.count_params(models.abstract("promptcir", "small")) == 1_428_388


def test_official_table_matches_twin_state_dict(official):
  sd, model = official
  table = pcir.torch_table(model)
  assert len(table) == 870 and sum(e.jax_path is None for e in table) == 2
  assert [e.torch_key for e in table] == list(sd)
  for e in table[:2]:
    np.testing.assert_array_equal(e.buffer, sd[e.torch_key].numpy())
    assert e.buffer.dtype == np.int64


def test_official_export_loads_strictly_and_round_trips(official):
  sd, model = official
  out = convert.to_torch("promptcir", model)
  assert list(out) == list(sd)
  assert all(out[k].shape == tuple(sd[k].shape) and np.array_equal(out[k], sd[k].numpy())
             for k in sd)
  net = twin.create("official")
  missing, unexpected = net.load_state_dict({k: torch.from_numpy(v) for k, v in out.items()},
                                            strict=True)
  assert not missing and not unexpected
  assert net.relative_position_index_OCA.dtype == torch.int64


def test_import_is_strict(small):
  net, model = small
  sd = dict(net.state_dict())
  sd.pop("prompt2.prompt")
  sd["extra.weight"] = torch.zeros(1)
  sd["output.weight"] = torch.zeros(3, 7, 3, 3)
  with pytest.raises(core.ConversionError, match=r"prompt2\.prompt.*extra\.weight.*output\.weight"):
    core.from_torch(pcir.torch_table(model), model, sd, source="bad.pth")
  bad_buffer = dict(net.state_dict())
  bad_buffer["relative_position_index_OCA"] = bad_buffer["relative_position_index_OCA"] + 1
  with pytest.raises(core.ConversionError, match="relative_position_index_OCA"):
    core.from_torch(pcir.torch_table(model), model, bad_buffer)


def test_small_matches_twin_on_kodak_crop(small):
  net, model = small
  x = kodak_crop(64, 96, "kodim23", top=200, left=300)
  got = np.asarray(promptcir.jit_forward(model)(jnp.asarray(x)))
  with torch.no_grad():
    want = net(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  assert got.shape == x.shape
  assert np.abs(want - x).max() > 1e-2  # the body contributes, not only the global residual
  err = np.abs(got - want).max()
  assert err <= 1e-5 * np.abs(want).max(), err


def test_rejects_sizes_off_the_multiple(small):
  model = small[1]
  with pytest.raises(ValueError, match="multiples of 16"):
    model(jnp.zeros((1, 24, 32, 3)))


def test_flip_pad_equals_official_padding():
  x = kodak_crop(40, 70, "kodim05")
  got = np.asarray(promptcir.flip_pad(jnp.asarray(x), 32))
  t = torch.from_numpy(x).permute(0, 3, 1, 2)  # test_model.py's lines
  h_pad, w_pad = (40 // 32 + 1) * 32 - 40, (70 // 32 + 1) * 32 - 70
  t = torch.cat([t, torch.flip(t, [2])], 2)[:, :, :40 + h_pad, :]
  t = torch.cat([t, torch.flip(t, [3])], 3)[:, :, :, :70 + w_pad]
  np.testing.assert_array_equal(got, t.permute(0, 2, 3, 1).numpy())
  assert got.shape == (1, 64, 96, 3)
  assert promptcir.flip_pad(jnp.zeros((1, 64, 64, 3))).shape == (1, 96, 96, 3)  # always pads


def test_tile_positions_for_a_kodak_image():
  # 768x512 flip-pads to 800x544; official tiles of 384 with 96 overlap.
  assert promptcir.tile_positions(800, 384, 96) == [0, 288, 416]
  assert promptcir.tile_positions(544, 384, 96) == [0, 160]


def test_tile_forward_averages_overlaps():
  x = kodak_crop(96, 128, "kodim13")
  pointwise = lambda t: t * 1.5 - 0.2  # tiles agree on overlaps, so the blend is exact
  got = promptcir.tile_forward(pointwise, jnp.asarray(x), tile=64, overlap=16)
  np.testing.assert_allclose(got, np.clip(x * 1.5 - 0.2, 0, 1), atol=1e-6)


def test_restore_ensembles_checkpoints_and_transpose(small):
  m1 = small[1]
  m2 = convert.from_torch("promptcir", "small", _randomised_twin("small", seed=5).state_dict())
  x = kodak_crop(40, 56, "kodim19", top=300, left=200)
  both = promptcir.restore([m1, m2], x, tile=32, overlap=8)
  one = [promptcir.restore(m, x, tile=32, overlap=8) for m in (m1, m2)]
  assert both.shape == x.shape and both.min() >= 0 and both.max() <= 1
  np.testing.assert_allclose(both, (one[0] + one[1]) / 2, atol=1e-6)
  # Without the transpose view, one model on one view equals a direct padded, tiled forward.
  plain = promptcir.restore(m1, x, tile=32, overlap=8, transpose=False)
  fn = promptcir.jit_forward(m1)
  direct = promptcir.tile_forward(fn, promptcir.flip_pad(jnp.asarray(x)), 32, 8)[:, :40, :56]
  np.testing.assert_allclose(plain, direct, atol=1e-6)
  assert np.abs(plain - one[0]).max() > 0  # the transposed view changes the result
