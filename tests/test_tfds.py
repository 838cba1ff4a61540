"""Every prep output folder is a tensorflow-datasets dataset: tfds itself (with TensorFlow, in
its own process: tests/tfds_dump.py) opens prepare and ingest outputs, one with a lost shard,
with `builder_from_directory` and yields every record unchanged."""

import importlib.util
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from csr_jax.data import records
from csr_jax.data import source
from data_prep import ingest
from data_prep import shards
from data_prep import tfds_meta
from tests.conftest import REPO
from tests.shards import kodak_crops, kodak_u8, write_png, write_shards

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow_datasets") is None,
                                reason="tensorflow-datasets is in the `dev` extra")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
  """Three prep outputs, each read by tfds in one subprocess: {label: (folder, split, tfds's
  split info, its records as {feature: array})}."""
  root = tmp_path_factory.mktemp("tfds")
  made = {}
  made["prepare"] = (write_shards(root / "prep", kodak_crops(("kodim01", "kodim02", "kodim03"),
                                                             48),
                                  codec=["jpeg:30", "none"], num_shards=2), "test")
  hr, lr = root / "hr", root / "lr"
  for n in ("kodim05", "kodim06"):  # lossless LR files: bpp NaN
    write_png(hr / f"{n}.png", kodak_u8(32, 48, n, 200, 200))
    write_png(lr / f"{n}.png", kodak_u8(16, 24, n, 200, 200))
  ingest.main(["--hr_dir", str(hr), "--lr", f"{lr}=jpeg:20", "--scale", "2", "--out",
               str(root / "ing"), "--name", "live", "--split", "val", "--workers", "0"])
  made["ingest"] = (root / "ing", "val")
  # A folder squatting on shard 1's name makes its worker fail when publishing: shard lost.
  lost = root / "lost"
  (lost / shards.shard_name("kodak", "test", 1, 3) / "x").mkdir(parents=True)
  write_shards(lost, kodak_crops(("kodim01", "kodim02", "kodim03", "kodim04"), 32),
               num_shards=3, extra=["--workers", "1"])
  made["lost"] = (lost, "test")
  m = json.loads((lost / "manifest.json").read_text())
  assert m["missing_shards"] == [shards.shard_name("kodak", "test", 1, 3)]
  (lost / m["missing_shards"][0] / "x").rmdir()
  (lost / m["missing_shards"][0]).rmdir()
  dump = root / "dump"
  dump.mkdir()
  r = subprocess.run([sys.executable, "-m", "tests.tfds_dump", str(dump)] +
                     [f"{d}:{s}" for d, s in made.values()], cwd=REPO, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  infos = json.loads(r.stdout.strip().splitlines()[-1])
  out = {}
  for i, (label, (folder, split)) in enumerate(made.items()):
    with np.load(dump / f"{i}.npz") as z:
      recs = {}
      for key in z.files:
        n, feat = key.split("/")
        recs.setdefault(int(n), {})[feat] = z[key]
    out[label] = (folder, split, infos[i], [recs[n] for n in range(len(recs))])
  return out


def _ours(folder) -> list[dict]:
  """Every record through our own reader, in shard order."""
  name = json.loads((folder / "manifest.json").read_text())["name"]
  src = source.TFRecordSource(source.find_shards(str(folder))[name])
  return [records.decode_example(src[i]) for i in range(len(src))]


@pytest.mark.parametrize("label,count", [("prepare", 6), ("ingest", 2), ("lost", 3)])
def test_tfds_yields_every_record_unchanged(outputs, label, count):
  folder, split, info, got = outputs[label]
  m = json.loads((folder / "manifest.json").read_text())
  lengths = {s["file"]: s["num_records"] for s in m["shards"]}
  assert info["shard_lengths"] == [lengths.get(shards.shard_name(m["name"], split, i,
                                                                 m["num_shards"]), 0)
                                   for i in range(m["num_shards"])]
  assert info["num_examples"] == m["counts"]["records"] == count
  assert sorted(info["features"]) == sorted(shards.FEATURES)
  ours = _ours(folder)
  assert len(got) == len(ours) == count
  for g, o in zip(got, ours):
    assert sorted(g) == sorted(o) == sorted(shards.FEATURES)
    for k in tfds_meta.IMAGES:  # decoded by TensorFlow's PNG decoder
      assert g[k].dtype == np.uint8 and g[k].shape[2] == 3
      np.testing.assert_array_equal(g[k], source.decode_png(o[k][0]), err_msg=k)
    for k in tfds_meta.TEXTS:
      assert g[k].item() == o[k][0], k
    for k in set(o) - set(tfds_meta.IMAGES) - set(tfds_meta.TEXTS) - set(tfds_meta.FLOATS):
      assert g[k].dtype == np.int64 and g[k].item() == o[k][0], k
    bpp = np.float32(o["bpp"][0])
    assert g["bpp"].dtype == np.float32
    assert g["bpp"] == bpp or (math.isnan(g["bpp"]) and math.isnan(bpp))
  if label == "ingest":
    assert all(math.isnan(g["bpp"]) for g in got)
  if label == "lost":
    assert json.loads((folder / "dataset_info.json").read_text())["splits"][0][
        "shardLengths"] == ["2", "0", "1"]
    assert [s["source"] for s in m["skipped"]] == ["kodim02.png"]
    assert "lost: worker error (IsADirectoryError" in m["skipped"][0]["reason"]
