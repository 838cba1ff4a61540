"""Every tool on what the main job really writes, reached as a user reaches it: by relative
paths, from another directory, through `python -m` (the session's `trained_run`)."""

import csv
import json
import os
import shutil

import numpy as np
import torch
from flax import nnx

from csr_jax import checkpoint, weights
from csr_jax.torch_twins import ucip as twin
from tests.conftest import REPO, kodak_crop, run_module


def _elsewhere(root):
  cwd = root / "elsewhere"
  cwd.mkdir(exist_ok=True)
  return cwd


def _last(path, name) -> float:
  rows = [r for r in csv.DictReader(open(path)) if r["name"] == name]
  return float(rows[-1]["value"])


def _table(path) -> dict:
  return {(r["dataset"], r["codec"], r["quality"], r["method"]): r
          for r in csv.DictReader(open(path))}


def test_run_wrote_checkpoints_logs_and_report(trained_run):
  run = trained_run / "run"
  assert checkpoint.intact_steps(run / "checkpoints") == [2, 3]
  assert {"metrics.csv", "curves.png", "report.md", "tb", "eval"} <= set(os.listdir(run))
  report = (run / "report.md").read_text()
  links = [line.split("](")[1].rstrip(")") for line in report.splitlines() if "](" in line]
  assert links and all((run / link).is_file() for link in links)  # relative, and they resolve
  assert "| all |  | model |" in report and "| jpeg | 40 | bicubic |" in report


def test_benchmark_cli_on_the_workdir_reproduces_the_training_eval(trained_run):
  cwd = _elsewhere(trained_run)
  config = os.path.relpath(REPO / "configs" / "ucip.py", cwd)
  res = run_module(["csr_jax.benchmark", "--config", f"{config}:small", "--checkpoint", "../run",
                    "--data", "../data/eval", "--ema", "--out", "bench"], cwd)
  assert "| all |  | model |" in res.stdout
  got = _table(cwd / "bench" / "table.csv")[("kodak", "all", "", "model")]
  # The trainer scored the same images with the same EMA params at its last step.
  want = _last(trained_run / "run" / "metrics.csv", "val/psnr_y")
  np.testing.assert_allclose(float(got["psnr_y"]), want, rtol=0, atol=1e-9)
  assert len(os.listdir(cwd / "bench" / "grids")) == 2


def test_export_loads_strictly_into_the_twin_and_reproduces_jax(trained_run, tmp_path):
  cwd = _elsewhere(trained_run)
  link = trained_run / "linked_run"
  if not link.exists():
    link.symlink_to("run")
  # The README's form (model named), then the model read from the checkpoint, through a
  # symlink and through '~'.
  run_module(["csr_jax.convert", "export", "--model", "ucip", "--variant", "small",
              "--checkpoint", "../run", "--out", "named.pth"], cwd)
  run_module(["csr_jax.convert", "export", "--checkpoint", "../linked_run", "--out", "auto.pth"],
             cwd)
  run_module(["csr_jax.convert", "export", "--checkpoint", "~/run", "--out", "home.pth"], cwd,
             env={"HOME": str(trained_run)})
  sds = [torch.load(cwd / f, weights_only=True) for f in ("named.pth", "auto.pth", "home.pth")]
  assert all(list(sd) == list(sds[0]) and all(torch.equal(sd[k], sds[0][k]) for k in sd)
             for sd in sds)
  assert json.loads((cwd / "auto.tasks.json").read_text())["jpeg"] == 0

  tw = twin.create("small")
  missing, unexpected = tw.load_state_dict(sds[0], strict=True)
  assert not missing and not unexpected
  _, model = weights.model_from(trained_run / "run")
  x = kodak_crop(32, 40, "kodim03", 200, 300)
  with torch.no_grad():
    want = tw.eval()(torch.from_numpy(x).permute(0, 3, 1, 2), torch.tensor([0])).numpy()
  got = np.asarray(nnx.jit(lambda m, a: m(a, np.array([0])))(model, x)).transpose(0, 3, 1, 2)
  assert float(np.abs(got - want).max() / np.abs(want).max()) <= 1e-5


def test_import_round_trips_the_weights_and_the_task_table(trained_run):
  cwd = _elsewhere(trained_run)
  if not (cwd / "named.pth").exists():
    run_module(["csr_jax.convert", "export", "--checkpoint", "../run", "--out", "named.pth"],
               cwd)
  shutil.rmtree(cwd / "imported", ignore_errors=True)
  run_module(["csr_jax.convert", "import", "--model", "ucip", "--variant", "small", "--pth",
              "named.pth", "--out", "imported"], cwd)
  got, meta = checkpoint.read_params(cwd / "imported")
  want, _ = checkpoint.read_params(trained_run / "run")
  assert got.keys() == want.keys()
  assert all(np.array_equal(got[k], want[k]) for k in got)
  assert meta["name"] == "ucip" and meta["variant"] == "small"
  assert meta["task_ids"] == json.loads((cwd / "named.tasks.json").read_text())


def test_init_from_a_relative_workdir_starts_from_its_weights(trained_run, tmp_path):
  cwd = _elsewhere(trained_run)
  config = os.path.relpath(REPO / "configs" / "ucip.py", cwd)
  shutil.rmtree(cwd / "tuned", ignore_errors=True)
  # lr 1e-30: one Adam step moves no float32 weight, so step 1 holds the loaded weights.
  run_module(["csr_jax.main", "--config", f"{config}:small,steps=1,batch=4,workers=0",
              "--workdir", "tuned", "--config.data.train_dir=../data/train",
              "--config.data.patch_size=16", "--config.init_from=../run",
              "--config.optim.lr=1e-30"], cwd)
  got, _ = checkpoint.read_params(cwd / "tuned")
  want, _ = checkpoint.read_params(trained_run / "run")
  assert all(np.array_equal(got[k], want[k]) for k in want)


def test_resume_with_other_workers_hits_the_compile_cache(trained_run, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(trained_run / "run", run)
  config = os.path.relpath(REPO / "configs" / "ucip.py", tmp_path)
  res = run_module(["csr_jax.main", "--config", f"{config}:small,steps=4,batch=4,workers=2",
                    "--workdir", "run", "--config.data.train_dir",
                    os.path.relpath(trained_run / "data" / "train", tmp_path),
                    "--config.data.patch_size=16", "--config.checkpoint_every=2",
                    "--config.log_every=1", "--config.optim.lr=1e-3"], tmp_path)
  assert "resuming from run/checkpoints step 3" in res.stderr
  assert "compilation cache hit" in res.stderr
  assert checkpoint.intact_steps(run / "checkpoints")[-1] == 4
