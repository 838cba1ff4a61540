"""CISR trains: 2 steps of configs/cisr.py through csr_jax.train.train_and_evaluate with the
rho-weighted unfolded loss, on shards of real Kodak crops prepared with JPEG and WebP."""

import numpy as np
import pytest
from PIL import Image

from configs import cisr as cisr_config
from csr_jax.models import cisr
from tests.conftest import kodak_crop

pytest.importorskip("torch")  # the prep step (MATLAB-style bicubic) runs on torch


def test_config_matches_paper():
  for variant, steps in (("full", 3), ("tiny", 5)):
    c = cisr_config.get_config(f"{variant},scale=3")
    assert c.model.variant == f"{variant}_x3" and cisr.VARIANTS[c.model.variant]["steps"] == steps
    assert tuple(c.loss_weights.rhos) == cisr.rho(steps) and c.loss_weights.gamma == 1.0
    assert (c.data.batch_size, c.data.patch_size, c.optim.lr) == (32, 48, 1e-4)
  with pytest.raises(KeyError, match="cisr.py"):
    cisr_config.get_config("huge")


def test_two_train_steps_jpeg_and_webp(tmp_path):
  from csr_jax import train
  from data_prep import prepare
  hr_dir = tmp_path / "hr"
  hr_dir.mkdir()
  for name, top, left in (("kodim05", 100, 150), ("kodim23", 200, 300)):
    crop = (kodak_crop(64, 64, name, top, left)[0] * 255).round().astype(np.uint8)
    Image.fromarray(crop).save(hr_dir / f"{name}.png")
  data = tmp_path / "data"
  prepare.main(["--hr_dir", str(hr_dir), "--out", str(data), "--scale", "2", "--codec",
                "jpeg:10", "--codec", "webp:5", "--workers", "0", "--min_size", "32"])
  c = cisr_config.get_config("small,scale=2,steps=2,batch=2,workers=0")
  c.data.train_dir = str(data)
  c.data.patch_size = 16
  c.checkpoint_every = c.log_every = c.eval_every = 2
  workdir = tmp_path / "run"
  train.train_and_evaluate(c, str(workdir))
  assert (workdir / "checkpoints" / "2").is_dir()
  rows = [r.split(",") for r in (workdir / "metrics.csv").read_text().splitlines()[1:]]
  loss = {int(st): float(v) for st, name, v in rows if name == "train/loss"}
  grad = {int(st): float(v) for st, name, v in rows if name == "train/grad_norm"}
  assert sorted(loss) == [1, 2] and all(np.isfinite(v) and v > 0 for v in loss.values())
  assert all(np.isfinite(v) and v > 0 for v in grad.values())
  manifest = (data / "manifest.json").read_text()
  assert "jpeg" in manifest and "webp" in manifest
