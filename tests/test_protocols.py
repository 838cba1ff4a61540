"""The papers' protocols as the family specs state them (issue 13): UCIP's six prompts are the
paper's six codecs and the id comes from the model, not the data; PromptCIR is scored on RGB
with PSNR-B and validated with the official padding; unknown codecs never reach a prompt."""

import os

import numpy as np

from configs import promptcir as pcir_config
from csr_jax import family, models, train
from csr_jax.data import pipeline
from data_prep import grids
from tests.conftest import REPO, run_module
from tests.shards import kodak_crops, write_shards


def test_ucip_grid_is_the_papers_23_degradations_on_six_prompts():
  grid = grids.GRIDS["ucip"]
  assert sum(len(q) for q in grid.values()) == 23
  table = models.spec("ucip").task_ids
  ids = [family.task_id(table, codec) for codec in grid]  # paper order: JPEG HM VTM C_PSNR C_SSIM HiFiC
  assert ids == [0, 1, 2, 3, 4, 5]
  assert family.task_id(table, "cheng2020-attn-ms-ssim") == 4  # C_SSIM whatever the variant


def test_one_shard_set_serves_families_with_and_without_task_ids(tmp_path):
  data = write_shards(tmp_path / "d", kodak_crops(("kodim01", "kodim03"), 64),
                      codec="jpeg:30,40", split="train")
  shards = [p for ps in train.report.find_datasets(data).values() for p in ps]
  ucip = pipeline.train_dataset(shards, patch=8, scale=4, batch_size=4,
                                task_ids=models.spec("ucip").task_ids)[0]
  assert ucip["task_id"].tolist() == [0, 0, 0, 0]
  cisr = pipeline.train_dataset(shards, patch=8, scale=4, batch_size=4,
                                keys=("hr", "lr", "lr_clean"))[0]
  assert "task_id" not in cisr and models.spec("cisr").task_ids is None
  np.testing.assert_array_equal(ucip["hr"], cisr["hr"])  # the same examples either way


def test_a_codec_without_a_prompt_is_one_line_before_training(tmp_path):
  write_shards(tmp_path / "webp", kodak_crops(("kodim01",), 64), codec="webp:20", split="train")
  config = f"{os.path.relpath(REPO / 'configs' / 'ucip.py', tmp_path)}:small"
  res = run_module(["csr_jax.main", "--config", config, "--workdir", "w",
                    "--config.data.train_dir=webp"], tmp_path, check=False)
  line = res.stderr.strip().splitlines()[-1]
  assert res.returncode == 2 and line.startswith("error: webp/manifest.json: codec 'webp' has "
                                                  "no prompt in this model's task table")
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_promptcir_is_validated_and_scored_as_its_paper_says():
  protocol, ev = train.protocols(pcir_config.get_config("stage1"), models.spec("promptcir"))
  assert (protocol.multiple, protocol.pad_mode, protocol.pad_always) == (32, "flip", True)
  assert (protocol.tile, protocol.tile_overlap) == (384, 96)
  assert (ev.channel, ev.psnr_b, ev.crop_border, ev.best_metric) == ("rgb", True, 0, "psnr")
