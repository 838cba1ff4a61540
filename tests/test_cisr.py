"""CISR: hand-counted parameters, weight sharing over the unfolded steps, forward on real
crops, PyTorch twin parity after conversion, and the conversion round trip."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from csr_jax import models
from csr_jax.convert import core
from csr_jax.models import cisr as cisr_model
from csr_jax.models import cisr
from tests.conftest import kodak_crop


def conv(cin, cout, k):
  return cin * cout * k * k + cout


def module_count(aux, up, c=64, r=16, groups=5, blocks=12, hidden=64):
  rcab = 2 * conv(c, c, 3) + conv(c, c // r, 1) + conv(c // r, c, 1)
  group = blocks * rcab + conv(c, c, 3)
  non_local = conv(3, hidden, 3) + conv(hidden, 1, 1)
  mix = conv(9, hidden, 1) + conv(hidden, 3, 1)
  return (non_local + conv(6 + aux, c, 3) + groups * group + conv(c, c, 3)
          + conv(c, 3 * up * up, 3) + mix)


# (ARM, REM, total) as module_count gives them, written out for the report.
EXPECTED = {
    "full_x2": (4_700_855, 4_702_592, 9_403_447),
    "full_x3": (4_709_495, 4_711_247, 9_420_742),
    "full_x4": (4_721_591, 4_723_364, 9_444_955),
    "tiny_x2": (1_910_375, 1_912_112, 3_822_487),
    "tiny_x3": (1_919_015, 1_920_767, 3_839_782),
    "tiny_x4": (1_931_111, 1_932_884, 3_863_995),
}


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_hand_count_table(variant):
  s = int(variant[-1])
  groups = 5 if variant.startswith("full") else 2
  arm, rem = module_count(3 * (s * s - 1), 1, groups=groups), module_count(3, s, groups=groups)
  assert (arm, rem, arm + rem) == EXPECTED[variant]


@pytest.mark.parametrize("variant", ["full_x2", "tiny_x3"])
def test_param_counts_by_hand(variant):
  model = models.abstract("cisr", variant)
  got = (models.count_params(model.arm), models.count_params(model.rem),
         models.count_params(model))
  assert got == EXPECTED[variant]


def test_unfolding_shares_weights():
  """J only changes how often the shared ARM/REM run, never the parameter count."""
  counts = {j: models.count_params(models.abstract("cisr", "small_x2", steps=j)) for j in (1, 5)}
  assert counts[1] == counts[5] == 35_447


def _jpeg(x, quality=10):
  buf = io.BytesIO()
  Image.fromarray((x[0] * 255).round().astype(np.uint8)).save(buf, format="JPEG",
                                                              quality=quality)
  buf.seek(0)
  with Image.open(buf) as im:
    return (np.asarray(im.convert("RGB"), np.float32) / 255.0)[None]


@pytest.fixture(scope="module")
def lr():
  """Two JPEG q10 Kodak crops, 16x16 (the blocking grid fits twice per side)."""
  return np.concatenate([_jpeg(kodak_crop(16, 16, "kodim23", 200, 300)),
                         _jpeg(kodak_crop(16, 16, "kodim05", 120, 200))])


def _forward(model, x, task_id=None, chunk=None):
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda s, x, t: nnx.merge(graphdef, s)(x, t, chunk=chunk))
  return fn(state, jnp.asarray(x), None if task_id is None else jnp.asarray(task_id))


def test_forward_steps(lr):
  model = models.create("cisr", "small_x3", rngs=nnx.Rngs(0), steps=3)
  out = _forward(model, lr, [0, 5])
  assert [y.shape for y in out["y"]] == [(2, 16, 16, 3)] * 3
  assert [x.shape for x in out["x"]] == [(2, 48, 48, 3)] * 3
  assert all(np.isfinite(np.asarray(v)).all() for v in out["y"] + out["x"])
  assert float(jnp.abs(out["x"][0] - out["x"][2]).max()) > 1e-4  # steps refine


def test_split_copies_guide_is_aligned_copy():
  x = jnp.arange(2 * 6 * 6 * 3, dtype=jnp.float32).reshape(2, 6, 6, 3)
  g, aux = cisr.split_copies(x, 3)
  np.testing.assert_array_equal(np.asarray(g), np.asarray(x[:, 1::3, 1::3]))
  assert aux.shape == (2, 2, 2, 24)
  g2, _ = cisr.split_copies(x, 2)
  np.testing.assert_array_equal(np.asarray(g2), np.asarray(x[:, 0::2, 0::2]))


def test_table_follows_twin_order():
  torch_twin = pytest.importorskip("csr_jax.torch_twins.cisr")
  model = models.abstract("cisr", "small_x3")
  keys = [e.torch_key for e in cisr_model.torch_table(model)]
  assert keys == list(torch_twin.create("small_x3").state_dict())


@pytest.mark.parametrize("variant", ["small_x2", "small_x3"])
def test_matches_torch_twin(variant, lr):
  torch = pytest.importorskip("torch")
  from csr_jax.torch_twins import cisr as twin
  model = models.create("cisr", variant, rngs=nnx.Rngs(1))
  sd = core.to_torch(cisr_model.torch_table(model), model)
  ref_model = twin.create(variant)
  ref_model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  task = [0, 5]
  out = _forward(model, lr, task)
  with torch.no_grad():
    ref = ref_model(torch.from_numpy(lr).permute(0, 3, 1, 2), torch.tensor(task))
  for key in ("y", "x"):
    for a, b in zip(out[key], ref[key]):
      b = b.permute(0, 2, 3, 1).numpy()
      assert float(np.abs(np.asarray(a) - b).max()) <= 1e-5 * float(np.abs(b).max())


def test_conversion_round_trip_and_strictness():
  model = models.create("cisr", "small_x2", rngs=nnx.Rngs(3))
  table = cisr_model.torch_table(model)
  sd = core.to_torch(table, model)
  other = models.create("cisr", "small_x2", rngs=nnx.Rngs(4))
  core.from_torch(cisr_model.torch_table(other), other, sd)
  a, b = core.flat_params(model), core.flat_params(other)
  assert a.keys() == b.keys()
  assert all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)
  bad = dict(sd)
  bad.pop("rem.mix.conv2.bias")
  bad["arm.head.weight"] = bad["arm.head.weight"][:, :3]
  with pytest.raises(core.ConversionError, match="rem.mix.conv2.bias.*arm.head.weight"):
    core.from_torch(table, other, bad)


def test_step_psnr_and_rho(lr):
  assert cisr.rho(3) == (0.3, 0.6, 1.0) and cisr.rho(5) == (0.2, 0.4, 0.6, 0.8, 1.0)
  clean = kodak_crop(16, 16, "kodim23", 200, 300)
  hr = np.repeat(np.repeat(clean, 2, 1), 2, 2)
  out = {"y": [jnp.asarray(lr[:1])], "x": [jnp.asarray(hr)]}
  res = cisr.step_psnr(out, clean, hr)
  mse = np.mean((np.clip(lr[:1], 0, 1) - clean) ** 2)
  np.testing.assert_allclose(float(res["y1"]), -10 * np.log10(mse), rtol=1e-5)
  assert float(res["x1"]) == np.inf


def test_bad_input_shape():
  model = models.create("cisr", "small_x2", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="NHWC RGB"):
    model(jnp.zeros((1, 3, 8, 8)))
