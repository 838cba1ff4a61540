"""CISR: hand-counted parameters, weight sharing over the unfolded steps, eager = jitted init,
the figure's wiring (aligned copy, ARM backbone input), a blind forward on real crops in float32
and bfloat16, PyTorch twin parity after conversion, and the conversion round trip."""

import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from csr_jax import models
from csr_jax import conversion as core
from csr_jax.layers.conv import Conv2d, cpu_paths
from csr_jax.layers.resize import pixel_unshuffle
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
    "full_x2": (4_702_583, 4_702_592, 9_405_175),
    "full_x3": (4_711_223, 4_711_247, 9_422_470),
    "full_x4": (4_723_319, 4_723_364, 9_446_683),
    "tiny_x2": (1_912_103, 1_912_112, 3_824_215),
    "tiny_x3": (1_920_743, 1_920_767, 3_841_510),
    "tiny_x4": (1_932_839, 1_932_884, 3_865_723),
}


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_hand_count_table(variant):
  s = int(variant[-1])
  groups = 5 if variant.startswith("full") else 2
  arm, rem = module_count(3 * s * s, 1, groups=groups), module_count(3, s, groups=groups)
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
  assert counts[1] == counts[5] == 35_879


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


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, x):
  return nnx.merge(graphdef, state)(x)


def _forward(model, x):
  graphdef, state = nnx.split(model)
  return _apply(graphdef, state, jnp.asarray(x))


def test_init_is_the_same_eager_and_jitted():
  def build():
    return nnx.to_pure_dict(nnx.state(models.create("cisr", "small_x2", rngs=nnx.Rngs(5)),
                                      nnx.Param))
  eager, jitted = jax.tree.leaves(build()), jax.tree.leaves(jax.jit(build)())
  assert len(eager) == len(jitted) == 64
  for a, b in zip(eager, jitted):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_forward_steps(lr):
  model = models.create("cisr", "small_x3", rngs=nnx.Rngs(0), steps=3)
  out = _forward(model, lr)
  assert [y.shape for y in out["y"]] == [(2, 16, 16, 3)] * 3
  assert [x.shape for x in out["x"]] == [(2, 48, 48, 3)] * 3
  assert all(np.isfinite(np.asarray(v)).all() for v in out["y"] + out["x"])
  assert float(jnp.abs(out["x"][0] - out["x"][2]).max()) > 1e-4  # steps refine


def test_split_copies_guide_is_the_named_copy():
  """k = round half up of (s + 1) / 2, 1-based, per axis: offsets 1, 1, 2 for s = 2, 3, 4."""
  x = jnp.asarray(kodak_crop(24, 24, "kodim05", 100, 100))
  for s, offset in ((2, 1), (3, 1), (4, 2)):
    g, copies = cisr.split_copies(x, s)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(x[:, offset::s, offset::s]))
    np.testing.assert_array_equal(np.asarray(copies), np.asarray(pixel_unshuffle(x, s)))


def test_arm_backbone_gets_every_copy_and_g(lr, monkeypatch):
  """Fig. 2(a): the ARM head sees [u, z, x_1..x_{s^2}], the aligned copy g = x_k among them."""
  model = models.create("cisr", "small_x3", rngs=nnx.Rngs(0))
  seen, call = {}, Conv2d.__call__

  def record(conv, x):
    seen[id(conv)] = x
    return call(conv, x)

  def head_input(x_prev, z):  # jitted: XLA drops everything after the head
    model.arm_step(x_prev, z, model.keep_mask(z))
    return seen[id(model.arm.head)]

  monkeypatch.setattr(Conv2d, "__call__", record)
  x_prev = jnp.asarray(kodak_crop(48, 48, "kodim23", 200, 300))
  head_in = np.asarray(jax.jit(head_input)(x_prev, jnp.asarray(lr[:1])))
  assert head_in.shape == (1, 16, 16, 6 + 27)
  np.testing.assert_array_equal(head_in[..., 3:6], lr[:1])
  np.testing.assert_array_equal(head_in[..., 6:], np.asarray(pixel_unshuffle(x_prev, 3)))
  g = np.asarray(x_prev[:, 1::3, 1::3])
  np.testing.assert_array_equal(head_in[..., 6 + 4::9], g)


def test_table_follows_twin_order():
  torch_twin = pytest.importorskip("csr_jax.torch_twins.cisr")
  model = models.abstract("cisr", "small_x3")
  keys = [e.torch_key for e in cisr_model.torch_table(model)]
  assert keys == list(torch_twin.CISR(**cisr.VARIANTS["small_x3"]).state_dict())
  assert "arm.body.0.blocks.1.ca.attention.3.weight" in keys


@pytest.mark.parametrize("variant", ["small_x2", "small_x3"])
def test_matches_torch_twin(variant, lr):
  torch = pytest.importorskip("torch")
  from csr_jax.torch_twins import cisr as twin
  model = models.create("cisr", variant, rngs=nnx.Rngs(1))
  sd = core.to_torch(cisr_model.torch_table(model), model)
  ref_model = twin.CISR(**cisr.VARIANTS[variant])
  ref_model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  out = _forward(model, lr)
  with torch.no_grad():
    ref = ref_model(torch.from_numpy(lr).permute(0, 3, 1, 2))
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


def _convs(jaxpr):
  """Every conv_general_dilated equation in a jaxpr and the jaxprs nested in it."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      yield eqn
    for v in eqn.params.values():
      for sub in v if isinstance(v, (list, tuple)) else (v,):
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          yield from _convs(sub)


def test_bfloat16_forward(lr):
  """bfloat16 params and input (the trainer's `model.dtype`): every conv runs in bfloat16 (no
  float32 constant promotes one; counted on the plain-XLA path), the output is bfloat16, and its x_J has a PSNR above 40 dB
  against the float32 x_J on the JPEG q10 crops (measured: 50.7 dB)."""
  model = models.create("cisr", "small_x2", rngs=nnx.Rngs(1))
  graphdef, state = nnx.split(model)
  args = jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), (state, lr))
  with cpu_paths(False):  # plain XLA convs (the CPU path runs 1x1 convs as matmuls)
    convs = list(_convs(_apply.trace(graphdef, *args).jaxpr.jaxpr))
  assert len(convs) == 32  # 16 per module: the scan body appears once
  assert all(v.aval.dtype == jnp.bfloat16 for e in convs for v in e.invars + e.outvars)
  traced = _apply.trace(graphdef, *args)
  out = traced.lower().compile()(*args)["x"][-1]
  assert out.dtype == jnp.bfloat16
  ref = _forward(model, lr)["x"][-1]  # compiled already by test_matches_torch_twin[small_x2]
  mse = float(jnp.mean(jnp.square(out.astype(jnp.float32) - ref)))
  assert -10 * np.log10(mse) > 40.0, mse


def test_blind_and_bad_input_shape(lr):
  assert cisr.SPEC.task_ids is None
  model = models.create("cisr", "small_x2", rngs=nnx.Rngs(0))
  with pytest.raises(TypeError):
    model(jnp.asarray(lr), jnp.asarray([0, 5]))
  with pytest.raises(ValueError, match="NHWC RGB"):
    model(jnp.zeros((1, 3, 8, 8)))
