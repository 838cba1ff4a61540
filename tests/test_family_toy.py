"""A family registered from a test module alone (tests/toy_family.py: spec, model, twin, table,
config) trains, resumes, evaluates, benchmarks and converts through the same CLIs as the
built-in four, with no edit under csr_jax/."""

import csv
import os

import numpy as np
import torch
from flax import nnx

from csr_jax import checkpoint, weights
from tests import toy_family
from tests.conftest import REPO, kodak_crop, run_module
from tests.shards import kodak_crops, write_shards


def test_toy_family_trains_resumes_evaluates_benchmarks_and_converts(tmp_path):
  names = ("kodim01", "kodim05", "kodim13")
  write_shards(tmp_path / "data" / "train", kodak_crops(names, 48), codec=["jpeg:30", "webp:20"],
               scale=2, name="toy", split="train")
  write_shards(tmp_path / "data" / "eval", kodak_crops(("kodim02",), 48), codec="webp:40",
               scale=2, name="toy")
  cwd = tmp_path / "elsewhere"
  cwd.mkdir()
  config = os.path.relpath(REPO / "tests" / "toy_family.py", cwd)
  data = ["--workdir", "run", "--config.data.train_dir=../data/train",
          "--config.data.eval_dir=../data/eval"]
  run_module(["csr_jax.main", "--config", f"{config}:tiny,steps=2", *data], cwd)
  assert checkpoint.intact_steps(cwd / "run" / "checkpoints") == [1, 2]
  res = run_module(["csr_jax.main", "--config", f"{config}:tiny,steps=3", *data], cwd)
  assert "resuming from run/checkpoints step 2" in res.stderr
  rows = list(csv.DictReader(open(cwd / "run" / "metrics.csv")))
  assert {r["step"] for r in rows if r["name"] == "val/psnr_y"} == {"2", "3"}

  res = run_module(["csr_jax.benchmark", "--checkpoint", "run", "--data", "../data/eval",
                    "--out", "bench"], cwd)
  assert "| webp | 40 | model |" in res.stdout and "| all |  | bicubic |" in res.stdout

  run_module(["csr_jax.convert", "export", "--checkpoint", "run", "--out", "toy.pth"], cwd)
  sd = torch.load(cwd / "toy.pth", weights_only=True)
  assert list(sd) == ["task_bias", "body.0.weight", "body.0.bias", "body.1.weight",
                      "body.1.bias"]
  twin = toy_family.TorchToy()
  twin.load_state_dict(sd, strict=True)
  _, model = weights.model_from(cwd / "run")
  x = kodak_crop(12, 16, "kodim03", 200, 300)
  with torch.no_grad():
    want = twin(torch.from_numpy(x).permute(0, 3, 1, 2), torch.tensor([1])).numpy()
  got = np.asarray(nnx.jit(lambda m, a: m(a, np.array([1])))(model, x)).transpose(0, 3, 1, 2)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  run_module(["csr_jax.convert", "import", "--model", "tests.toy_family:SPEC", "--variant",
              "tiny", "--pth", "toy.pth", "--out", "imported"], cwd)
  a, meta = checkpoint.read_params(cwd / "imported")
  b, _ = checkpoint.read_params(cwd / "run")
  assert meta["task_ids"] == {"jpeg": 0, "webp": 1}
  assert all(np.array_equal(a[k], b[k]) for k in b)


def test_loss_mean_is_the_mean_of_the_steps_since_the_last_log(tmp_path):
  """train/loss_mean (what curves.png plots) against the per-step losses of the same run logged
  at every step: the run is deterministic, so logging every 3rd step must average steps 2-3."""
  from csr_jax import train
  write_shards(tmp_path / "train", kodak_crops(("kodim01", "kodim05"), 48), codec="jpeg:30",
               scale=2, name="toy", split="train")
  logged = {}
  for every in (1, 3):
    c = toy_family.get_config("tiny,steps=4")
    c.data.train_dir, c.log_every, c.checkpoint_every = str(tmp_path / "train"), every, 4
    train.train_and_evaluate(c, str(tmp_path / f"run{every}"))
    with open(tmp_path / f"run{every}" / "metrics.csv") as f:
      logged[every] = {(int(r["step"]), r["name"]): float(r["value"]) for r in csv.DictReader(f)}
  per_step = [logged[1][s, "train/loss"] for s in range(1, 5)]
  assert [logged[1][s, "train/loss_mean"] for s in range(1, 5)] == per_step
  assert {s for s, name in logged[3] if name == "train/loss_mean"} == {1, 3, 4}
  assert per_step[1] != per_step[2]  # so the mean differs from either step's loss
  np.testing.assert_allclose(logged[3][3, "train/loss_mean"], np.mean(per_step[1:3]), rtol=1e-6)
  assert logged[3][4, "train/loss_mean"] == per_step[3]
