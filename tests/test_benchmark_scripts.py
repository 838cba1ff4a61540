"""The benchmark scripts run as a user runs them (`python -m benchmarks.X` from the repository
root) on what the code really builds or trains; these tests check they run and print sane
values, never how fast anything was."""

import json
import os
import re

from tests.conftest import REPO, run_module


def test_device_check_smoke_runs_every_row(tmp_path):
  """The accelerator check in --smoke mode on CPU: every family row compiles, runs and reports
  images/s, compile seconds and XLA's planned temporaries; the bfloat16 UCIP row too."""
  out = tmp_path / "rows.json"
  res = run_module(["benchmarks.device_check", "--smoke", "--repeats", "1", "--out", out], REPO)
  rows = json.loads(out.read_text())
  assert [(r["family"], r["dtype"]) for r in rows] == [
      ("ucip", "float32"), ("ucip", "bfloat16"), ("promptcir", "float32"),
      ("promptsr", "float32"), ("cisr", "float32")], rows
  for r in rows:
    assert "error" not in r, r
    assert r["images_per_s"] > 0 and r["compile_s"] > 0 and r["xla_temp_bytes"] > 0, r
  assert res.stdout.count("\n| ") >= 6 and "smoke sizes" in res.stdout


def test_bf16_quality_on_the_trained_workdir(trained_run):
  """bfloat16 against float32 on the main job's own workdir and eval shards, by relative
  paths: both PSNRs printed, and bfloat16 stays within 0.5 dB of float32."""
  rel = os.path.relpath(trained_run, REPO)
  res = run_module(["benchmarks.bf16_quality", "--checkpoint", f"{rel}/run", "--data",
                    f"{rel}/data/eval"], REPO)
  m = re.search(r"float32 ([\d.]+) dB, bfloat16 ([\d.]+) dB, difference ([-+][\d.]+) dB",
                res.stdout)
  assert m, res.stdout
  f32, bf16, diff = map(float, m.groups())
  assert 10 < f32 < 60 and abs(bf16 - f32 - diff) < 1e-3 and abs(diff) < 0.5, res.stdout


def test_loader_bench_on_the_trained_runs_shards(trained_run):
  """The loader-vs-step benchmark on the main job's own train shards, by relative path: both
  rates are printed from the real Grain pipeline and the real train step."""
  rel = os.path.relpath(trained_run, REPO)
  res = run_module(["benchmarks.loader_bench", "--data", f"{rel}/data/train", "--variant",
                    "small", "--batch", "2", "--patch", "16", "--batches", "4", "--steps", "1",
                    "--workers", "0"], REPO)
  loader = re.search(r"loader: ([\d.]+) batches/s \(0 workers, batch 2, LR patch 16, (\d+) "
                     r"records\)", res.stdout)
  step = re.search(r"train step \(UCIP small\): ([\d.]+) batches/s", res.stdout)
  assert loader and step, res.stdout
  assert float(loader.group(1)) > 0 and int(loader.group(2)) == 4 and float(step.group(1)) > 0
