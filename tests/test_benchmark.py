"""Benchmark runner end to end: tiny TFRecord shards of Kodak/Set5 crops, a tiny NNX model saved
with Orbax in the checkpoint layout of DEVELOPERS.md, the CLI, the table, grids and report."""

import csv
import io
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from PIL import Image

from csr_jax import benchmark, evaluate
from csr_jax.convert import orbax_io
from csr_jax.data import records
from csr_jax.layers.conv import Conv2d
from csr_jax.layers.resize import pixel_shuffle, upsample_nearest
from tests.conftest import DATASETS, REPO, load_rgb

SCALE = 2


class TinySR(nnx.Module):
  """conv-gelu-conv-pixel shuffle plus a nearest skip and a per-task colour bias."""

  def __init__(self, *, rngs: nnx.Rngs, scale: int = SCALE):
    self.scale = scale
    self.body = nnx.List([Conv2d(3, 8, 3, padding=1, rngs=rngs),
                          Conv2d(8, 3 * scale * scale, 3, padding=1, rngs=rngs)])
    self.task_bias = nnx.Param(jax.random.normal(rngs.params(), (6, 3)) * 0.01)

  def __call__(self, x, task_id=None):
    h = jax.nn.gelu(self.body[0](x))
    y = pixel_shuffle(self.body[1](h), self.scale) * 0.1 + upsample_nearest(x, self.scale)
    if task_id is not None:
      y = y + self.task_bias[...][task_id][:, None, None, :]
    return y


def tiny_sr(variant: str, *, rngs: nnx.Rngs, **kw):
  """Factory named by the test config as 'tests.test_benchmark:tiny_sr'."""
  assert variant == "tiny", variant
  return TinySR(rngs=rngs, **kw)


def _jpeg(img, q):
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="JPEG", quality=q)
  with Image.open(io.BytesIO(buf.getvalue())) as im:
    return np.asarray(im.convert("RGB"))


def _png(img):
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="PNG")
  return buf.getvalue()


def _write_shards(root, name, images, scale, qualities=(10, 30), hw=(48, 64)):
  """One `<name>-test` shard (+ .idx) of centre crops x JPEG qualities, as data_prep writes."""
  path = os.path.join(root, f"{name}-test.tfrecord-00000-of-00001")
  examples = []
  with records.TFRecordWriter(path) as w:
    for q in qualities:
      for img_name in images:
        img = load_rgb(DATASETS / name / f"{img_name}.png")
        top, left = (img.shape[0] - hw[0]) // 2, (img.shape[1] - hw[1]) // 2
        hr = np.ascontiguousarray(img[top:top + hw[0], left:left + hw[1]])
        clean = hr if scale == 1 else np.asarray(Image.fromarray(hr).resize(
            (hw[1] // scale, hw[0] // scale), Image.Resampling.BICUBIC))
        lq = _jpeg(clean, q)
        examples.append({"lr": lq, "hr": hr, "quality": q, "source": f"{img_name}.png"})
        w.write(records.encode_example({
            "hr_png": _png(hr), "lr_clean_png": _png(clean), "lr_png": _png(lq),
            "codec": "jpeg", "quality": q, "task_id": 0, "scale": scale, "bpp": 1.5,
            "source": f"{img_name}.png", "hr_height": hw[0], "hr_width": hw[1],
            "lr_height": lq.shape[0], "lr_width": lq.shape[1]}))
  records.write_index(w.index, path + ".idx")
  return examples


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("shards")
  _write_shards(root, "kodak", ["kodim01", "kodim23"], SCALE)
  _write_shards(root, "set5", ["bird", "butterfly"], SCALE)
  return str(root)


def _tiny_params(seed: int) -> dict:
  """Pure-dict params of TinySR drawn with numpy (no JAX init work)."""
  abstract = nnx.eval_shape(lambda: tiny_sr("tiny", rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (rng.normal(size=s.shape) * 0.1).astype(s.dtype),
                      nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))


def _tiny_model(params: dict) -> TinySR:
  graphdef, state = nnx.split(nnx.eval_shape(lambda: tiny_sr("tiny", rngs=nnx.Rngs(0))))
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
  return nnx.merge(graphdef, state)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """workdir/checkpoints/<step>/{state,config} with params, opt_state, ema, step, rng."""
  params, ema = _tiny_params(1), _tiny_params(2)
  zeros = jax.tree.map(np.zeros_like, params)
  state = {"params": params, "ema": ema, "step": np.int64(7),
           "opt_state": {"count": np.int32(7), "mu": zeros, "nu": zeros},
           "rng": np.array([0, 42], np.uint32)}
  workdir = tmp_path_factory.mktemp("workdir")
  with ocp.CheckpointManager(workdir / "checkpoints") as mngr:
    for step in (3, 7):
      mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                              config=ocp.args.JsonSave({"step": step})))
    mngr.wait_until_finished()
  return str(workdir), params, ema


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("configs") / "tiny.py"
  path.write_text(
      "import ml_collections\n\n\n"
      "def get_config(arg=None):\n"
      "  c = ml_collections.ConfigDict()\n"
      "  c.model = dict(name='tests.test_benchmark:tiny_sr', variant=arg or 'tiny',\n"
      "                 use_task_id=True)\n"
      "  c.eval = dict(multiple=4, tile=0)\n"
      "  return c\n")
  return str(path)


def test_read_examples_round_trip(tmp_path):
  written = _write_shards(tmp_path, "set5", ["baby"], SCALE, qualities=(20,))
  shards = benchmark.find_shards(str(tmp_path))
  assert list(shards) == ["set5"]
  (ex,) = list(benchmark.read_examples(shards["set5"]))
  np.testing.assert_array_equal(ex["lr"], written[0]["lr"])
  np.testing.assert_array_equal(ex["hr"], written[0]["hr"])
  assert (ex["codec"], ex["quality"], ex["scale"], ex["source"]) == ("jpeg", 20, 2, "baby.png")
  with pytest.raises(FileNotFoundError, match="no '<name>-<split>.tfrecord"):
    benchmark.find_shards(str(tmp_path), split="train")


def test_load_params_latest_step_params_only_and_strict(checkpoint, tmp_path):
  workdir, params, ema = checkpoint
  target = jax.tree.map(np.zeros_like, _tiny_params(5))
  for ckpt in (workdir, os.path.join(workdir, "checkpoints"),
               os.path.join(workdir, "checkpoints", "7")):
    got = benchmark.load_params(ckpt, target, ema=True)
    jax.tree.map(np.testing.assert_array_equal, got, ema)
  orbax_io.write_params(tmp_path / "imported", params)  # `python -m csr_jax.convert import`
  got = benchmark.load_params(str(tmp_path / "imported"), target)
  jax.tree.map(np.testing.assert_array_equal, got, params)
  bad = dict(target, extra={"kernel": np.zeros((1,))})
  bad["body"] = {0: target["body"][0]}
  with pytest.raises(ValueError, match=r"missing extra\.kernel.*unexpected body\.1\.bias"):
    benchmark.load_params(workdir, bad)


def test_cli_writes_table_csv_grids_report(data_dir, checkpoint, config_file, tmp_path):
  workdir, params, _ = checkpoint
  out = str(tmp_path / "bench")
  res = benchmark.main(["--config", f"{config_file}:tiny", "--checkpoint", workdir, "--data",
                        data_dir, "--out", out, "--tile", "16", "--tile_overlap", "4"])
  md = open(os.path.join(out, "table.md")).read()
  assert "| Codec | Quality | Method | kodak | set5 |" in md
  assert "| jpeg | 10 | bicubic |" in md and "| jpeg | 30 | model |" in md
  with open(os.path.join(out, "table.csv")) as f:
    table = list(csv.DictReader(f))
  assert len(table) == 2 * 2 * 2  # datasets x qualities x methods
  assert {r["images"] for r in table} == {"2"}
  with open(os.path.join(out, "per_image.csv")) as f:
    assert len(list(csv.DictReader(f))) == 2 * 2 * 2 * 2
  assert len(res["files"]["grids"]) == 4
  with Image.open(res["files"]["grids"][0]) as g:
    assert g.size == (3 * 64 + 8, 48 + 14)
  report = open(os.path.join(out, "report.md")).read()
  assert "grids/kodak_jpeg_q10_kodim01.png" in report and "| kodak | set5 |" in report

  # The same numbers straight from evaluate_pairs with the saved params.
  model = _tiny_model(params)
  apply_fn = jax.jit(lambda x, t: model(x, t))
  examples = list(benchmark.read_examples(benchmark.find_shards(data_dir)["set5"]))
  rows, _ = evaluate.evaluate_pairs(apply_fn, examples, scale=SCALE, multiple=4, tile=16,
                                    tile_overlap=4)
  got = [r for r in res["rows"] if r["dataset"] == "set5"]
  for a, b in zip(got, rows):
    assert a["method"] == b["method"] and a["source"] == b["source"]
    assert a["psnr_y"] == pytest.approx(b["psnr_y"], abs=1e-6)
  cell = next(g for g in res["groups"] if (g["dataset"], g["quality"], g["method"])
              == ("set5", 30, "model"))
  want = np.mean([r["ssim_y"] for r in rows if r["quality"] == 30 and r["method"] == "model"])
  assert cell["ssim_y"] == pytest.approx(want, abs=1e-9)
  assert f"{cell['psnr_y']:.2f} / {cell['ssim_y']:.4f}" in md

  ema_res = benchmark.main(["--config", config_file, "--checkpoint", workdir, "--data", data_dir,
                            "--ema", "--limit", "1", "--config.eval.multiple=8",
                            "--crop_border", "3"])
  assert "border crop 3;" in ema_res["table_md"]
  assert len(ema_res["rows"]) == 2 * 2  # one image per dataset, two methods
  assert ema_res["files"]["table_md"] == os.path.join(workdir, "benchmark", "table.md")
  assert ema_res["rows"][0]["psnr_y"] != res["rows"][0]["psnr_y"]


def test_cli_with_ucip_config_and_checkpoint(tmp_path):
  """configs/ucip.py with the registry's UCIP `tiny` variant, x4 shards, a training-layout
  checkpoint of numpy-drawn params."""
  from csr_jax import models
  abstract = models.abstract("ucip", "tiny")
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (rng.normal(size=s.shape) * 0.05).astype(s.dtype),
                        nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))
  with ocp.CheckpointManager(tmp_path / "run" / "checkpoints") as mngr:
    mngr.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(
        {"params": params, "ema": params, "step": np.int64(1)})))
    mngr.wait_until_finished()
  (tmp_path / "data").mkdir()
  _write_shards(tmp_path / "data", "kodak", ["kodim01", "kodim23"], 4, qualities=(20,),
                hw=(64, 64))
  res = benchmark.main(["--config", os.path.join(REPO, "configs", "ucip.py") + ":small",
                        "--config.model.variant=tiny", "--checkpoint", str(tmp_path / "run"),
                        "--data", str(tmp_path / "data"), "--ema"])
  assert res["files"]["table_md"] == str(tmp_path / "run" / "benchmark" / "table.md")
  model_rows = [r for r in res["rows"] if r["method"] == "model"]
  assert [r["source"] for r in model_rows] == ["kodim01.png", "kodim23.png"]
  assert all(np.isfinite(r["psnr_y"]) and 0 < r["ssim_y"] < 1 for r in model_rows)
  assert "| jpeg | 20 | model |" in res["table_md"]


def test_restoration_table_has_psnr_b(tmp_path):
  _write_shards(tmp_path, "kodak", ["kodim05"], 1, qualities=(10,), hw=(64, 64))
  res = benchmark.run_benchmark(lambda x, t: x, str(tmp_path), str(tmp_path / "out"),
                                grid_images=1)
  assert "PSNR (dB) / SSIM / PSNR-B (dB) on Y" in res["table_md"]
  model, bic = res["groups"]
  assert model["psnr_b_y"] < model["psnr_y"]  # q10 blocking, identity "model"
  assert model["psnr_b_y"] == pytest.approx(bic["psnr_b_y"])


def test_write_report_links_are_relative(tmp_path):
  curves = tmp_path / "plots" / "curves.png"
  curves.parent.mkdir()
  Image.new("RGB", (4, 4)).save(curves)
  path = benchmark.write_report(str(tmp_path / "run"), table_md="| a |\n|---|\n| 1 |",
                                curves_png=str(curves), grid_pngs=[str(curves)],
                                extra_md="Trained 10 steps.")
  text = open(path).read()
  assert "![training curves](../plots/curves.png)" in text
  assert text.startswith("# csr_jax report") and "Trained 10 steps." in text
