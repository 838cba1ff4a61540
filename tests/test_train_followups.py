"""Training follow-ups: CISR per-step validation, early stopping, partial init_from for
fine-tuning, an overridable eval.crop_border, and the one strict flat-params loader."""

import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import cisr as cisr_config
from configs import promptcir, promptsr, ucip
from csr_jax import checkpoint, config_lib, evaluate, metrics, models, train, weights
from csr_jax import conversion as core
from csr_jax.data import pipeline
from csr_jax.tree import flatten
from tests.conftest import REPO, run_module
from tests.shards import kodak_crops, write_shards


def test_crop_border_override_keeps_the_scale():
  c = config_lib.base_config()
  assert c.eval.crop_border is None and c.data.scale == 4
  c.eval.crop_border = 0
  assert (c.data.scale, c.eval.crop_border) == (4, 0)
  c.update_from_flattened_dict({"eval.crop_border": 2})
  assert (c.data.scale, c.eval.crop_border) == (4, 2)
  c.data.scale = 3
  assert c.eval.crop_border == 2
  for cfg in (ucip.get_config("small"), promptsr.get_config("x3")):
    assert cfg.eval.crop_border is None  # -> scale, resolved by evaluate_pairs
  pc = promptcir.get_config("stage1")
  assert (pc.eval.crop_border, pc.data.scale) == (None, 1)
  assert models.spec("promptcir").evaluation.crop_border == 0  # the family's protocol


def test_early_stop_counts_evaluations_below_the_best():
  stop = train.EarlyStop(patience=2)
  seq = [stop.update(v) for v in (20.0, 21.0, 20.5, 21.0, 20.9, 20.8)]
  assert seq == [False, False, False, False, False, True] and stop.best == 21.0
  assert train.EarlyStop(1).update(1.0) is False
  with pytest.raises(ValueError, match="patience"):
    train.EarlyStop(0)


def _psr_params(upscale: int, seed: int):
  model = models.create("promptsr", "small", rngs=nnx.Rngs(seed), upscale=upscale)
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def test_init_from_skip_keeps_the_mismatched_decoder_fresh(tmp_path):
  """PromptSR x4 fine-tuned from x2: all params but upsample.0 come from the x2 checkpoint."""
  x2 = jax.tree.map(np.asarray, _psr_params(2, seed=1))
  checkpoint.write_params(tmp_path / "x2", x2, {})
  fresh = jax.tree.map(np.asarray, _psr_params(4, seed=0))
  r = weights.ref("promptsr", "small", {"upscale": 4})
  skip = promptsr.get_config("x4").init_from_skip
  assert promptsr.get_config("x2").init_from_skip == ""
  got = weights.load(tmp_path / "x2", r, fresh, skip=skip)
  flat_got, flat_x2, flat_fresh = flatten(got), flatten(x2), flatten(fresh)
  assert sorted(k for k in flat_got if k.startswith("upsample.")) == [
      "upsample.0.bias", "upsample.0.kernel"]
  for k, v in flat_got.items():
    assert v.dtype == flat_fresh[k].dtype
    want = flat_fresh[k] if k.startswith("upsample.0.") else flat_x2[k]
    np.testing.assert_array_equal(np.asarray(v), np.asarray(want))
  with pytest.raises(core.ConversionError) as err:  # strict without the skip
    weights.load(tmp_path / "x2", r, fresh)
  msg = str(err.value)
  assert "\n" not in msg and "upsample.0.kernel: got (3, 3, 16, 12), expected (3, 3, 16, 48)" in msg
  assert err.value.missing == [] and err.value.unexpected == []
  # An abstract target cannot keep a skipped parameter fresh.
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), fresh)
  with pytest.raises(ValueError, match="upsample.0.bias matches skip"):
    weights.load(tmp_path / "x2", r, abstract, skip=skip)


def test_x4_star_fine_tunes_from_x2_star(tmp_path):
  """x4_star from x2_star (both depth 4, the paper's x2-then-fine-tune protocol for PromptSR*):
  the skip keeps only upsample.0 fresh; everything else loads strictly from x2_star."""
  mk = lambda upscale, seed: jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(models.create(
      "promptsr", "small", rngs=nnx.Rngs(seed), upscale=upscale, depth=4), nnx.Param)))
  x2 = mk(2, seed=1)
  checkpoint.write_params(tmp_path / "x2_star", x2, {})
  fresh = mk(4, seed=0)
  skip = promptsr.get_config("x4_star").init_from_skip
  r = weights.ref("promptsr", "small", {"upscale": 4, "depth": 4})
  got = flatten(weights.load(tmp_path / "x2_star", r, fresh, skip=skip))
  flat_x2, flat_fresh = flatten(x2), flatten(fresh)
  kept = sorted(k for k in got if flat_x2[k].shape != got[k].shape)
  assert kept == ["upsample.0.bias", "upsample.0.kernel"]
  assert any(".blocks.3." in k for k in got)
  for k, v in got.items():
    want = flat_fresh[k] if k in kept else flat_x2[k]
    np.testing.assert_array_equal(np.asarray(v), np.asarray(want))


def test_strict_loader_is_shared_by_convert_checkpoint_and_benchmark():
  from csr_jax import convert
  assert convert.load_flat_params is core.load_flat_params
  target = {"a": {0: np.zeros((2,), np.float32)}, "b": np.zeros((3,), np.float32)}
  got = core.load_flat_params(target, {"a.0": np.ones(2), "b": np.arange(3)})
  assert got["b"].dtype == np.float32 and list(got["b"]) == [0, 1, 2]
  with pytest.raises(core.ConversionError, match=r"missing \(1\): \['b'\]; unexpected \(1\): "
                     r"\['c'\]; mis-shaped \(1\): \['a.0: got \(3,\), expected \(2,\)'\]"):
    core.load_flat_params(target, {"a.0": np.ones(3), "c": np.ones(1)}, source="x")


@pytest.fixture(scope="module")
def cisr_run(tmp_path_factory):
  """CISR small x2, evaluated every step with raw params and a large learning rate, so the
  validation PSNR falls and the run stops early."""
  root = tmp_path_factory.mktemp("cisr_followup")
  write_shards(root / "train", kodak_crops(("kodim05",), 48), codec="jpeg:20", scale=2,
               split="train")
  write_shards(root / "eval", kodak_crops(("kodim02",), 32), codec="jpeg:20", scale=2)
  c = cisr_config.get_config("small,scale=2,steps=6,batch=1,workers=0")
  c.data.train_dir, c.data.eval_dir = str(root / "train"), str(root / "eval")
  c.data.patch_size = 12
  c.log_every = c.eval_every = c.checkpoint_every = 1
  c.keep_checkpoints = 1
  c.eval.use_ema = False
  c.eval.patience = 1
  c.optim.lr = 0.01
  wd = root / "run"
  state, last = train.train_and_evaluate(c, str(wd))
  with open(wd / "metrics.csv") as f:
    rows = list(csv.reader(f))[1:]
  val = {}
  for step, name, value in rows:
    if name.startswith("val/"):
      val.setdefault(int(step), {})[name[4:]] = float(value)
  return c, wd, state, last, val


def test_cisr_validation_reports_every_step(cisr_run):
  c, wd, state, last, val = cisr_run
  assert c.eval.stop_when_worse and c.eval.crop_border is None
  step = max(val)
  for m in val.values():
    assert {"psnr_y", "psnr_y_x1", "psnr_y_x2", "psnr_y_y1", "psnr_y_y2"} <= set(m)
    assert m["psnr_y_x2"] == m["psnr_y"]  # the main metric is the final x_J
  # Recompute the last evaluation's y_j PSNR from the model itself.
  shards = [p for ps in train.report.find_datasets(wd.parent / "eval").values() for p in ps]
  ex = list(pipeline.eval_dataset(shards, keys=("hr", "lr", "lr_clean")))[0]
  r = weights.ref_from_config(c)
  graphdef, rest, _ = weights.abstract(r)
  model = weights.merge(graphdef, rest, jax.device_get(state["params"]))
  out = nnx.jit(lambda m, x: r.spec.apply(m, x, jnp.zeros((1,), jnp.int32)))(
      model, jnp.asarray(ex["lr"][None], jnp.float32) / 255.0)
  for j in (1, 2):
    y = evaluate.to_uint8(np.asarray(out["y"][j - 1][0]))
    want = metrics.psnr(y, ex["lr_clean"], 1, y_channel=True)
    assert abs(val[step][f"psnr_y_y{j}"] - want) < 0.05, (j, val[step], want)
    assert 10 < want < 60


def test_cisr_stops_when_validation_psnr_falls(cisr_run):
  c, wd, state, last, val = cisr_run
  stop = train.EarlyStop(c.eval.patience)
  expected = next((s for s in sorted(val) if stop.update(val[s]["psnr_y"])), c.total_steps)
  assert expected < c.total_steps, f"PSNR never fell: {val}"  # the large lr makes it fall
  assert int(state["step"]) == expected == max(val)
  kept = sorted(int(d) for d in os.listdir(wd / "checkpoints") if d.isdigit())
  best = max(val, key=lambda s: val[s]["psnr_y"])
  assert kept == sorted({best, expected})  # the last and the best
  with open(wd / train.EARLY_STOP_FILE) as f:
    marker = json.load(f)
  assert marker["step"] == expected and marker["metric"] == "psnr_y"
  assert marker["value"] == pytest.approx(val[expected]["psnr_y"], abs=1e-4)
  # Relaunching the same command keeps the stopped run: no further steps, nothing new saved.
  again, _ = train.train_and_evaluate(c, str(wd))
  assert int(again["step"]) == expected
  assert sorted(int(d) for d in os.listdir(wd / "checkpoints") if d.isdigit()) == kept


def test_cisr_benchmark_writes_per_step_table(cisr_run, tmp_path):
  c, wd, state, last, val = cisr_run
  step = os.path.relpath(wd / "checkpoints" / str(max(val)), tmp_path)
  res = run_module(["csr_jax.benchmark", "--config",
                    f"{os.path.relpath(REPO / 'configs' / 'cisr.py', tmp_path)}:small,scale=2",
                    "--checkpoint", step, "--data", os.path.relpath(wd.parent / "eval", tmp_path),
                    "--out", "bench"], tmp_path)
  rows = list(csv.DictReader(open(tmp_path / "bench" / "table.csv")))
  (g,) = [g for g in rows if g["method"] == "model" and g["codec"] != "all"]
  for k in ("psnr_y", "psnr_y_x1", "psnr_y_x2", "psnr_y_y1", "psnr_y_y2"):
    assert abs(float(g[k]) - val[max(val)][k]) < 0.05, k
  assert "| x1 | x2 | y1 | y2 |" in res.stdout
