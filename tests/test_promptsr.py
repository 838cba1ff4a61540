"""PromptSR: published sizes (Tables I, III, V, VII), conversion round trip, JAX vs PyTorch twin,
init convention, bf16 forward, 2-step training."""

import jax.extend
import numpy as np
import pytest
import jax
import jax.numpy as jnp
from flax import nnx

from csr_jax import convert
from csr_jax import models
from csr_jax import conversion as core
from csr_jax.models import promptsr
from tests.conftest import kodak_crop

# (variant, overrides) -> (exact count of this implementation, the paper's). Table I / III: the
# main models and PromptSR* (N = 4); Table V: N = 2 at d = 2 / 4 / 8; Table VII: N = 2, ws = 8
# and 16 (d = 8, ws = 16 is Table V's 562 K model).
COUNTS = {
    ("x2", ()): (764_628, 764e3), ("x3", ()): (771_123, 770e3), ("x4", ()): (780_216, 779e3),
    ("x2_star", ()): (982_684, 982e3), ("x3_star", ()): (989_179, 989e3),
    ("x4_star", ()): (998_272, 998e3),
    ("x4", (("depth", 2), ("anchor_down", 2))): (534_512, 534e3),
    ("x4", (("depth", 2), ("anchor_down", 4))): (540_656, 540e3),
    ("x4", (("depth", 2),)): (562_160, 562e3),
    ("x4", (("depth", 2), ("window_size", 8))): (562_160, 562e3),
}


@pytest.fixture(scope="module")
def abstract_models():
  return {key: models.abstract("promptsr", key[0], **dict(key[1])) for key in COUNTS}


@pytest.mark.parametrize("key", list(COUNTS),
                         ids=lambda k: "-".join([k[0]] + [f"{n}{v}" for n, v in k[1]]))
def test_param_count_matches_paper(key, abstract_models):
  n = models.count_params(abstract_models[key])
  exact, paper = COUNTS[key]
  assert n == exact
  assert abs(n - paper) / paper < 0.01


@pytest.mark.parametrize("src, dst", [("x2", "x3"), ("x2", "x4"), ("x2_star", "x3_star"),
                                      ("x2_star", "x4_star")])
def test_fine_tune_configs_need_init_from_and_skip_only_the_decoder(src, dst, abstract_models):
  """x3/x4 (x3*/x4*) start from x2 (x2*): init_from is required and every parameter but the
  ones `init_from_skip` leaves fresh has the same path and shape in both models."""
  import re
  from configs import promptsr as cfg_lib
  c = cfg_lib.get_config(dst)
  assert c.require_init_from and not cfg_lib.get_config(src).get("require_init_from", False)
  shapes = [{p: v.shape for p, v in core.flat_params(abstract_models[v, ()]).items()}
            for v in (src, dst)]
  skipped = {p for p in shapes[1] if re.search(c.init_from_skip, p)}
  assert skipped == {"upsample.0.kernel", "upsample.0.bias"}
  assert {p: s for p, s in shapes[1].items() if p not in skipped} == {
      p: s for p, s in shapes[0].items() if p not in skipped}


def test_x4_multiply_adds_match_paper(abstract_models):
  """XLA's count (flops / 2) of the 320x180 -> 1280x720 forward: paper 53.5 G. The lowered HLO
  is counted (no compile; benchmarks/promptsr_speed.py counts the compiled one, 0.2 % apart)."""
  graphdef, state = nnx.split(abstract_models["x4", ()])
  lowered = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(
      state, jax.ShapeDtypeStruct((1, 180, 320, 3), jnp.float32))
  macs = lowered.cost_analysis()["flops"] / 2
  assert abs(macs / 53.5e9 - 1) < 0.1, macs / 1e9


def _perturbed(variant="small", seed=3, std=0.2, **overrides):
  """The model with every parameter moved by N(0, std): attention and categories matter."""
  model = models.create("promptsr", variant, rngs=nnx.Rngs(seed), **overrides)
  leaves, tree = jax.tree.flatten(nnx.state(model, nnx.Param))
  rng = np.random.default_rng(seed)
  leaves = [x + std * rng.standard_normal(x.shape).astype(np.float32) for x in leaves]
  nnx.update(model, jax.tree.unflatten(tree, leaves))
  return model


def test_gapl_folded_projections_equal_paper_formula():
  """The GAPL folds Q, K, V into the anchor side; the paper's order gives the same result."""
  model = _perturbed(seed=4)
  x = jnp.asarray(kodak_crop(40, 44, name="kodim19", top=300, left=200)) - 0.44
  p_prev = np.random.default_rng(1).normal(size=(9, 16, 16)).astype(np.float32)  # 3x3 regions
  region, scale = 16, 16 ** -0.5

  @nnx.jit
  def run(model, x, p_prev):
    gapl = model.layers[0].blocks[0].gapl
    x = model.conv_first(x)
    xn = promptsr.flip_pad(gapl.norm1(x), region)  # 48x48
    t = promptsr._to_regions(xn, region)
    a = promptsr._to_regions(gapl.a(gapl.down(xn)), region // gapl.d)
    q, k, v = gapl.q(t), gapl.k(t), gapl.v(t)
    m_coarse = a @ jnp.swapaxes(k, 1, 2) * scale
    p_ref = 0.01 * p_prev + 0.99 * jax.nn.softmax(m_coarse, -1) @ v
    m_fine = q @ jnp.swapaxes(gapl.kp(p_ref) + a, 1, 2) * scale
    xp = promptsr._from_regions(jax.nn.softmax(m_fine, -1) @ gapl.vp(p_ref), region, 1, 48, 48)
    ref = x + xp[:, :40, :44]
    ref = ref + gapl.ffn(gapl.norm2(ref))
    return gapl(x, p_prev), (ref, p_ref, m_coarse, m_fine)

  (out, p, cat_coarse, cat_fine), (ref, p_ref, m_coarse, m_fine) = run(model, x, p_prev)
  assert model.layers[0].blocks[0].gapl.region == region
  np.testing.assert_allclose(p, p_ref, atol=1e-5 * np.abs(p_ref).max())
  np.testing.assert_allclose(out, ref, atol=1e-5 * np.abs(ref).max())
  offset = (np.arange(9) * 16)[:, None]
  for cat, m, axis in ((cat_coarse, m_coarse, 1), (cat_fine, m_fine, -1)):
    full = promptsr._from_regions((np.argmax(m, axis) + offset)[..., None], region, 1, 48, 48)
    np.testing.assert_array_equal(cat, full[:, :40, :44].reshape(1, -1))
  assert len(np.unique(cat_coarse)) > 10 and len(np.unique(cat_fine)) > 10


def _jax_forward(model, x):
  graphdef, state = nnx.split(model)
  return np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.asarray(x)))


@pytest.mark.parametrize("overrides", [dict(category_size=40), dict(anchor_region=None)],
                         ids=["regional_padded_groups", "global_anchors"])
def test_matches_torch_twin_after_conversion(overrides):
  torch = pytest.importorskip("torch")
  from csr_jax.torch_twins import promptsr as twin
  model = _perturbed(**overrides)
  sd = convert.to_torch("promptsr", model)
  net = twin.PromptSR(**{**promptsr.VARIANTS["small"], **overrides}).eval()
  assert list(net.state_dict()) == list(sd)
  net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, strict=True)
  x = kodak_crop(40, 44, top=200, left=300)  # GAPL pads to 48x48, WSA to 40x48 inside
  y = _jax_forward(model, x)
  with torch.no_grad():
    ref = net(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  assert y.shape == ref.shape == (1, 160, 176, 3)
  scale = np.abs(ref).max()
  assert np.abs(y - ref).max() <= 1e-5 * scale, np.abs(y - ref).max() / scale
  assert np.abs(y - x.repeat(4, 1).repeat(4, 2)).mean() > 0.05  # not an identity-like net


def test_round_trip_through_a_pth_file(tmp_path):
  torch = pytest.importorskip("torch")
  model = _perturbed(seed=5)
  sd = convert.to_torch("promptsr", model)
  path = tmp_path / "promptsr_small.pth"
  torch.save({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, path)
  back = convert.from_torch("promptsr", "small", path)
  a, b = core.flat_params(model), core.flat_params(back)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  bad = dict(sd)
  bad["layers.0.blocks.0.lpl1.extra"] = bad.pop("layers.0.blocks.0.lpl1.logit_scale")
  with pytest.raises(core.ConversionError, match="lpl1.logit_scale.*lpl1.extra|lpl1.extra"):
    convert.from_torch("promptsr", "small", bad)


def test_full_size_export_layout_equals_twin(abstract_models):
  torch = pytest.importorskip("torch")
  from csr_jax.torch_twins import promptsr as twin
  table = convert.table("promptsr", abstract_models["x4", ()])
  with torch.device("meta"):
    net = twin.PromptSR(**promptsr.VARIANTS["x4"])
  sd = net.state_dict()
  assert [e.torch_key for e in table] == list(sd)
  assert sum(v.numel() for v in sd.values()) == COUNTS["x4", ()][0]


def test_eager_and_jitted_init_give_the_same_params():
  make = lambda: nnx.to_pure_dict(nnx.state(
      models.create("promptsr", "small", rngs=nnx.Rngs(7)), nnx.Param))
  eager, jitted = make(), jax.jit(make)()
  flat_e, flat_j = jax.tree.leaves_with_path(eager), jax.tree.leaves_with_path(jitted)
  assert [p for p, _ in flat_e] == [p for p, _ in flat_j]
  for (path, a), (_, b) in zip(flat_e, flat_j):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
  assert float(np.std(eager["layers"][0]["blocks"][0]["lpl1"]["qkv"]["kernel"])) > 0.015


def _dots(jaxpr):
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
      yield eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _dots(sub)


def test_bfloat16_forward_stays_close_to_float32():
  """Params and input cast to bf16 (as the train step does for model.dtype='bfloat16'): the
  output is bf16 and within 40 dB (of its range) of the f32 forward; every matmul and conv on
  activations takes bf16 operands (only the position-bias MLP on its constant table is f32)."""
  model = _perturbed(category_size=40)  # the parity test's model and crop: f32 compiles once
  x = kodak_crop(40, 44, top=200, left=300)
  y32 = _jax_forward(model, x)
  graphdef, state = nnx.split(model)
  fwd = lambda s, x: nnx.merge(graphdef, s)(x)
  to16 = lambda a: a.astype(jnp.bfloat16) if jnp.issubdtype(a.dtype, jnp.floating) else a
  state16, x16 = jax.tree.map(to16, state), jnp.asarray(x, jnp.bfloat16)
  traced = jax.jit(fwd).trace(state16, x16)
  y16 = traced.lower().compile()(state16, x16)
  assert y16.dtype == jnp.bfloat16
  err = np.asarray(y16, np.float32) - y32
  psnr = 10 * np.log10(np.ptp(y32) ** 2 / np.mean(err ** 2))
  assert psnr > 40, psnr
  table_rows = (2 * promptsr.VARIANTS["small"]["window_size"] - 1) ** 2
  for eqn in _dots(traced.jaxpr.jaxpr):
    shapes, dtypes = [v.aval.shape for v in eqn.invars], [v.aval.dtype for v in eqn.invars]
    assert all(d == jnp.bfloat16 for d in dtypes) or shapes[0][0] == table_rows, (shapes, dtypes)


def test_two_step_training_smoke(tmp_path):
  from configs import promptsr as cfg_lib
  from csr_jax import train
  from tests.test_data_pipeline import make_shards
  make_shards(tmp_path / "train", hr_size=96, qualities=(30,), num_shards=1)
  make_shards(tmp_path / "eval", names=("kodim02",), hr_size=64, qualities=(40,), num_shards=1,
              split="test")
  c = cfg_lib.get_config("demo")
  c.data.demo, c.report = False, False
  c.data.train_dir, c.data.eval_dir = str(tmp_path / "train"), str(tmp_path / "eval")
  c.data.patch_size, c.data.batch_size, c.data.num_workers = 16, 2, 0
  c.optim.warmup_steps = 0
  c.total_steps, c.log_every, c.checkpoint_every, c.eval_every = 2, 1, 1000, 1000
  state, means = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert int(state["step"]) == 2
  assert np.isfinite(means["psnr_y"]) and 5 < means["psnr_y"] < 60
