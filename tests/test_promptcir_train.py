"""PromptCIR through the training job on real Kodak crops: stage 1 (fixed JPEG qualities from
the shards) and stage 2 (initialised from stage 1, on-line JPEG), 2 steps each."""

import numpy as np
import pytest

from configs import promptcir as pcir_config
from csr_jax import checkpoint
from csr_jax import models
from csr_jax import train
from tests.shards import kodak_crops, write_shards

NAMES = ("kodim02", "kodim04", "kodim14", "kodim22")


def write_jpeg_shards(out_dir, qualities=(10, 40), size=48):
  """Scale-1 CIR records (HR = clean LR, LR = Pillow JPEG of it) from the prep step."""
  return str(write_shards(out_dir, kodak_crops(NAMES, size, top=200, left=300), scale=1,
                          codec=f"jpeg:{','.join(map(str, qualities))}", split="train"))


def small_config(variant, train_dir):
  c = pcir_config.get_config(variant)
  c.model.variant = "small"
  # One HAB per RHAG and one block per Restormer level keep the compile short on a shared CPU.
  c.model.overrides.num_blocks = (1, 1, 1, 1)
  c.data.train_dir, c.data.train_name = train_dir, "kodak"
  c.data.patch_size, c.data.batch_size, c.data.num_workers = 32, 2, 0
  c.total_steps, c.log_every, c.checkpoint_every, c.eval_every = 2, 1, 2, 1000
  return c


def test_paper_settings():
  s1, s2 = pcir_config.get_config("stage1"), pcir_config.get_config("stage2")
  assert (s1.model.variant, s1.data.scale, s1.data.patch_size, s1.data.augment) == (
      "official", 1, 128, True)
  assert s1.optim.name == "adamw" and s1.optim.schedule == "cosine" and s1.optim.lr == 2e-4
  assert s1.optim.lr * s1.optim.final_lr_ratio == pytest.approx(1e-6)
  assert s2.optim.lr == 1e-4 and tuple(s2.data.online_jpeg) == (10, 70)
  assert s2.optim.lr * s2.optim.final_lr_ratio == pytest.approx(1e-6)
  spec = models.spec("promptcir")
  assert spec.evaluation.crop_border == 0 and spec.evaluation.channel == "rgb"
  assert (spec.inference.tile, spec.inference.tile_overlap) == (384, 96)
  assert spec.inference.pad_mode == "flip" and spec.inference.pad_always
  assert spec.task_ids is None  # blind


def test_stage1_then_stage2_two_steps(tmp_path):
  data = write_jpeg_shards(tmp_path / "data")
  cfg1 = small_config("stage1", data)
  cfg1.data.eval_dir = str(write_shards(tmp_path / "eval", kodak_crops(("kodim05",), 44),
                                        scale=1, codec="jpeg:10"))
  cfg1.eval_every = 2
  state1, last = train.train_and_evaluate(cfg1, str(tmp_path / "s1"))
  assert int(state1["step"]) == 2
  # Validated as the paper scores it: RGB PSNR / SSIM / PSNR-B (and the best checkpoint by
  # RGB PSNR), after the official flip padding of the 44x44 image to 64x64.
  assert {"psnr", "ssim", "psnr_b"} <= set(last) and "psnr_b_y" not in last
  assert last["psnr_b"] <= last["psnr"]
  assert checkpoint.intact_steps(tmp_path / "s1" / "checkpoints")[-1] == 2

  cfg2 = small_config("stage2", data)
  cfg2.init_from = str(tmp_path / "s1" / "checkpoints")
  seen = []

  class Hooks:
    def after_batch(self, step, batch):
      seen.append(batch)

  state2, _ = train.train_and_evaluate(cfg2, str(tmp_path / "s2"), Hooks())
  assert int(state2["step"]) == 2
  # Stage 2 starts from stage 1's weights and moves them.
  p1 = np.asarray(state1["params"]["output"]["kernel"])
  p2 = np.asarray(state2["params"]["output"]["kernel"])
  assert 0 < np.abs(p2 - p1).max() < 1e-2
  # On-line JPEG: the LR is a fresh JPEG of the HR crop (same geometry, new artefacts).
  b = seen[0]
  assert b["lr"].shape == b["hr"].shape == (2, 32, 32, 3) and b["lr"].dtype == np.uint8
  diff = np.abs(b["lr"].astype(int) - b["hr"].astype(int)).mean()
  assert 0.5 < diff < 20
