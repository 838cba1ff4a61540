"""The benchmark report over real prep outputs (Kodak and Set5 crops, JPEG q10/q30): the table
with one column per dataset and the overall average row, the CSVs, grids and report.md, and
images that cannot be scored skipped and listed instead of aborting the run."""

import csv

import jax
import numpy as np
import pytest

from csr_jax import report
from csr_jax.family import Evaluation, Inference
from csr_jax.layers.resize import resize_bicubic
from tests.conftest import DATASETS, load_rgb
from tests.shards import kodak_u8, write_shards

SCALE = 2


def _centre(img, h, w):
  top, left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
  return np.ascontiguousarray(img[top:top + h, left:left + w])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("bench_data")
  kodak = [(n, kodak_u8(48, 64, n, 200, 300)) for n in ("kodim01", "kodim23")]
  set5 = [(n, _centre(load_rgb(DATASETS / "set5" / f"{n}.png"), 48, 64))
          for n in ("bird", "butterfly")]
  set5 += [("=1+2", set5[0][1][::-1]),  # a name a spreadsheet would run as a formula
           ("thin", kodak_u8(64, 2, "kodim05", 0, 0))]  # its LR is one pixel wide
  write_shards(root / "kodak", kodak, codec="jpeg:10,30", scale=SCALE, name="kodak")
  write_shards(root / "set5", set5, codec="jpeg:10,30", scale=SCALE, name="set5")
  return root


_up = jax.jit(lambda x: resize_bicubic(x, (x.shape[1] * SCALE, x.shape[2] * SCALE)))


def test_tables_csvs_grids_and_skipped_images(data_dir, tmp_path):
  datasets = report.find_datasets(data_dir)
  assert sorted(datasets) == ["kodak", "set5"] and report.dataset_scale(datasets) == SCALE
  res = report.run_benchmark(lambda x, t: {"image": _up(x)}, datasets, tmp_path / "out",
                             scale=SCALE, ev=Evaluation(), protocol=Inference(multiple=4),
                             grid_images=3, title="bicubic check")
  md = res["table_md"]
  assert "| Codec | Quality | Method | kodak | set5 |" in md
  for row in ("| jpeg | 10 | model |", "| jpeg | 30 | bicubic |", "| all |  | model |"):
    assert row in md
  assert res["skipped"] and all(s.startswith("set5/thin.png") for s, _ in res["skipped"])
  assert all("too small" in why for _, why in res["skipped"])
  groups = {(g["dataset"], g["codec"], g["quality"], g["method"]): g for g in res["groups"]}
  assert groups[("set5", "all", "", "model")]["images"] == 6  # 3 images x 2 qualities
  q10, q30 = groups[("kodak", "jpeg", 10, "model")], groups[("kodak", "jpeg", 30, "model")]
  assert 20 < q10["psnr_y"] < q30["psnr_y"] < 45
  overall = groups[("kodak", "all", "", "model")]
  assert overall["psnr_y"] == pytest.approx((q10["psnr_y"] + q30["psnr_y"]) / 2)

  rows = list(csv.DictReader(open(tmp_path / "out" / "per_image.csv")))
  assert {r["source"] for r in rows} >= {"'=1+2.png", "bird.png", "thin.png"}
  assert [r["method"] for r in rows if r["source"] == "thin.png"] == ["skipped", "skipped"]
  text = (tmp_path / "out" / "report.md").read_text()
  assert "## Skipped (2)" in text and "thin.png" in text
  grids = sorted(p.name for p in (tmp_path / "out" / "grids").iterdir())
  assert len(grids) == 3 and all(f"](grids/{g})" in text for g in grids)


def test_restoration_table_is_rgb_with_psnr_b(tmp_path):
  write_shards(tmp_path / "cir", [("kodim03", kodak_u8(64, 64, "kodim03", 100, 100))],
               codec="jpeg:10", scale=1, name="kodak")
  ev = Evaluation(channel="rgb", crop_border=0, psnr_b=True, best_metric="psnr")
  res = report.run_benchmark(lambda x, t: x, report.find_datasets(tmp_path / "cir"),
                             tmp_path / "out", scale=1, ev=ev, protocol=Inference())
  assert "PSNR (dB) / SSIM / PSNR-B (dB) on RGB, border crop 0" in res["table_md"]
  (g,) = [g for g in res["groups"] if g["method"] == "model" and g["codec"] == "jpeg"]
  assert g["psnr_b"] < g["psnr"]  # the identity keeps the blocking the JPEG made


def test_nothing_to_score_is_one_error(data_dir, tmp_path):
  with pytest.raises(ValueError, match="no image could be evaluated"):
    report.run_benchmark(lambda x, t: x, report.find_datasets(data_dir, "set5"), tmp_path,
                         scale=SCALE, ev=Evaluation(), protocol=Inference(), limit=0)
