"""PromptSR: published sizes, conversion round trip, JAX vs PyTorch twin, 2-step training."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp
from flax import nnx

from csr_jax import convert
from csr_jax import models
from csr_jax.convert import core
from csr_jax.models import promptsr
from tests.conftest import kodak_crop

# Exact counts of this implementation; the paper's are 764K / 770K / 779K / 998K.
COUNTS = {"x2": (763_716, 764e3), "x3": (770_211, 770e3), "x4": (779_304, 779e3),
          "x4_star": (997_056, 998e3)}



@pytest.fixture(scope="module")
def abstract_models():
  return {v: models.abstract("promptsr", v) for v in COUNTS}


@pytest.mark.parametrize("variant", sorted(COUNTS))
def test_param_count_matches_paper(variant, abstract_models):
  n = models.count_params(abstract_models[variant])
  exact, paper = COUNTS[variant]
  assert n == exact
  assert abs(n - paper) / paper < 0.02


def test_x4_multiply_adds_match_paper(abstract_models):
  """XLA's count (flops / 2) of the compiled 320x180 -> 1280x720 forward: paper 53.5 G."""
  graphdef, state = nnx.split(abstract_models["x4"])
  lowered = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(
      state, jax.ShapeDtypeStruct((1, 180, 320, 3), jnp.float32))
  cost = lowered.compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  macs = cost["flops"] / 2
  assert abs(macs / 53.5e9 - 1) < 0.1, macs / 1e9


def _perturbed(variant="small", seed=3, **overrides):
  """The model with every parameter moved by N(0, 0.2): attention and categories matter."""
  model = models.create("promptsr", variant, rngs=nnx.Rngs(seed), **overrides)
  state = nnx.state(model, nnx.Param)
  leaves, tree = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  leaves = [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  nnx.update(model, jax.tree.unflatten(tree, leaves))
  return model


def test_gapl_folded_projections_equal_paper_formula():
  """The GAPL folds Q, K, V into the anchor side; the paper's order gives the same result."""
  model = _perturbed(seed=4)
  gapl = model.layers[0].blocks[0].gapl
  x = model.conv_first(jnp.asarray(kodak_crop(40, 44, name="kodim19", top=300, left=200)) - 0.44)
  p_prev = jax.random.normal(jax.random.key(1), (9, 16, 16))  # 3x3 regions of 16 anchors
  out, p, cat_coarse, cat_fine = gapl(x, p_prev)

  region, scale = gapl.region, 16 ** -0.5
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
  np.testing.assert_allclose(p, p_ref, atol=1e-5 * np.abs(p_ref).max())
  np.testing.assert_allclose(out, ref, atol=1e-5 * np.abs(ref).max())
  offset = (jnp.arange(9) * 16)[:, None]
  for cat, m, axis in ((cat_coarse, m_coarse, 1), (cat_fine, m_fine, -1)):
    full = promptsr._from_regions((jnp.argmax(m, axis) + offset)[..., None], region, 1, 48, 48)
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
  back = convert.from_torch("promptsr", "small", path, rngs=nnx.Rngs(9))
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
  table = convert.table("promptsr", abstract_models["x4"])
  with torch.device("meta"):
    net = twin.PromptSR(**promptsr.VARIANTS["x4"])
  sd = net.state_dict()
  assert [e.torch_key for e in table] == list(sd)
  assert sum(v.numel() for v in sd.values()) == COUNTS["x4"][0]


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
