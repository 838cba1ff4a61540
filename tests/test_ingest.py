"""data_prep.ingest: existing HR/LR pairs -> the prep step's shards, equal to its own records."""

import io
import json
import math

import numpy as np
from PIL import Image

from csr_jax.data import source
from data_prep import imresize
from data_prep import ingest
from tests.shards import kodak_u8, png_bytes, write_png, write_shards
from tests.test_records import parse_pb, read_all_checked

NAMES = ("kodim05", "kodim14")


def _hr(folder):
  return [write_png(folder / f"{n}.png", kodak_u8(64, 96, n, 150, 250)) for n in NAMES]


def _by_key(out) -> dict:
  recs = [parse_pb(p) for ps in source.find_shards(str(out)).values() for path in ps
          for p in read_all_checked(path)]
  return {(r["source"][0].decode(), r["codec"][0].decode(), r["quality"][0]): r for r in recs}


def _jpeg_lr(hr_path, quality) -> bytes:
  """What a third party's JPEG set holds: the MATLAB-bicubic LR saved by Pillow."""
  lr = imresize.downscale_uint8(np.asarray(Image.open(hr_path)), 4)
  buf = io.BytesIO()
  Image.fromarray(lr).save(buf, "JPEG", quality=quality)
  return buf.getvalue()


def test_ingest_of_a_jpeg_folder_equals_prepare(tmp_path):
  """The acceptance test: HR PNGs plus their q20 LR as .jpg files give the prep step's own
  JPEG q20 records byte for byte; only `encoder` says where they came from."""
  hrs = _hr(tmp_path / "hr")
  for p in hrs:
    (tmp_path / "lr").mkdir(exist_ok=True)
    (tmp_path / "lr" / f"{p.stem}.jpg").write_bytes(_jpeg_lr(p, 20))
  write_shards(tmp_path / "prep", hrs, codec="jpeg:20", name="k")
  want = _by_key(tmp_path / "prep")
  given = ["--lr_dir", str(tmp_path / "lr"), "--codec", "jpeg", "--quality", "20"]
  auto = ["--lr", f"{tmp_path / 'lr'}=jpeg:auto"]  # the quality read from the JPEG tables
  for out, lr_flags in (("ing", given), ("auto", auto)):
    ingest.main(["--hr_dir", str(tmp_path / "hr"), *lr_flags, "--scale", "4", "--out",
                 str(tmp_path / out), "--name", "k", "--workers", "0"])
    got = _by_key(tmp_path / out)
    assert sorted(got) == sorted(want) == [(f"{n}.png", "jpeg", 20) for n in NAMES]
    for k, r in got.items():
      assert r["encoder"] == [b"ingested JPEG file"]
      assert {f: v for f, v in r.items() if f != "encoder"} == {
          f: v for f, v in want[k].items() if f != "encoder"}
  m = json.loads((tmp_path / "ing" / "manifest.json").read_text())
  assert m["tool"] == "data_prep.ingest" and m["counts"]["records"] == 2
  assert m["grid"] == [{"codec": "jpeg", "qualities": [20], "implementation": "ingested LR files"}]
  assert [ingest.jpeg_quality(tmp_path / "lr" / f"{n}.jpg") for n in NAMES] == [20, 20]


def test_ingest_reports_bad_pairs_and_parses_names(tmp_path):
  """Codec and quality from file names; a PNG LR has no bitstream (bpp NaN); wrong sizes,
  corrupt files and unmatched names are skipped and reported, the rest is kept."""
  hrs = _hr(tmp_path / "hr")
  lr = tmp_path / "lr"
  for q in (10, 30):
    jpg = _jpeg_lr(hrs[0], q)
    write_png(lr / f"{NAMES[0]}_jpeg_q{q}.png", np.asarray(Image.open(io.BytesIO(jpg))))
  write_png(lr / f"{NAMES[1]}_jpeg_q10.png", kodak_u8(15, 24))  # 60 rows: HR has 64
  (lr / f"{NAMES[1]}_jpeg_q30.png").write_bytes(png_bytes(kodak_u8(16, 24))[:300])  # truncated
  write_png(lr / "kodim99_jpeg_q10.png", kodak_u8(16, 24))
  write_png(lr / "readme.png", kodak_u8(16, 24))
  m = ingest.main(["--hr_dir", str(tmp_path / "hr"), "--lr", str(lr), "--lr_pattern",
                   r"(?P<name>.+)_(?P<codec>[a-z]+)_q(?P<quality>\d+)", "--scale", "4",
                   "--out", str(tmp_path / "ing"), "--name", "k", "--workers", "0"])
  recs = _by_key(tmp_path / "ing")
  assert sorted(recs) == [(f"{NAMES[0]}.png", "jpeg", 10), (f"{NAMES[0]}.png", "jpeg", 30)]
  r = recs[f"{NAMES[0]}.png", "jpeg", 10]
  assert math.isnan(r["bpp"][0]) and r["encoder"] == [b"ingested lossless file"]
  reasons = {s["source"]: s["reason"] for s in m["skipped"]}
  assert reasons == {
      f"lr/{NAMES[1]}_jpeg_q10.png": f"size mismatch: LR 24x15 x4 != HR {NAMES[1]}.png 96x64 "
                                     "(after the top-left crop to a multiple of 4)",
      f"lr/{NAMES[1]}_jpeg_q30.png": reasons[f"lr/{NAMES[1]}_jpeg_q30.png"],
      "lr/kodim99_jpeg_q10.png": "no HR image named kodim99.*",
      "lr/readme.png": reasons["lr/readme.png"]}
  assert reasons[f"lr/{NAMES[1]}_jpeg_q30.png"].startswith("truncated or corrupt")
  assert reasons["lr/readme.png"].startswith("does not match --lr_pattern")
  assert m["counts"] == {"sources": 2, "images": 1, "skipped": 4, "records": 2}
