"""Every prep output folder is a tensorflow-datasets dataset: tfds itself (with TensorFlow)
opens it with `builder_from_directory` and yields every record unchanged."""

import json
import math

import numpy as np
import pytest

from csr_jax.data import records
from csr_jax.data import source
from data_prep import ingest
from data_prep import shards
from data_prep import tfds_meta
from tests.shards import kodak_crops, kodak_u8, write_png, write_shards

tfds = pytest.importorskip("tensorflow_datasets")  # the `dev` extra has it (and TensorFlow)


def _ours(out) -> list[dict]:
  """Every record through our own reader, in shard order."""
  src = source.TFRecordSource(source.find_shards(str(out))[json.loads(
      (out / "manifest.json").read_text())["name"]])
  return [records.decode_example(src[i]) for i in range(len(src))]


def _check_against_tfds(out, split: str) -> int:
  m = json.loads((out / "manifest.json").read_text())
  builder = tfds.builder_from_directory(str(out))
  info = builder.info.splits[split]
  assert info.num_examples == m["counts"]["records"]
  lengths = {s["file"]: s["num_records"] for s in m["shards"]}
  assert info.shard_lengths == [lengths.get(shards.shard_name(m["name"], split, i, m["num_shards"]),
                                            0) for i in range(m["num_shards"])]
  assert sorted(builder.info.features.keys()) == sorted(shards.FEATURES)
  got = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
  ours = _ours(out)
  assert len(got) == len(ours) == m["counts"]["records"]
  for g, o in zip(got, ours):
    assert sorted(g) == sorted(o) == sorted(shards.FEATURES)
    for k in tfds_meta.IMAGES:  # decoded by TensorFlow's PNG decoder
      assert g[k].dtype == np.uint8
      np.testing.assert_array_equal(g[k], source.decode_png(o[k][0]), err_msg=k)
    for k in tfds_meta.TEXTS:
      assert g[k] == o[k][0], k
    for k in set(o) - set(tfds_meta.IMAGES) - set(tfds_meta.TEXTS) - set(tfds_meta.FLOATS):
      assert g[k].dtype == np.int64 and g[k] == o[k][0], k
    bpp = np.float32(o["bpp"][0])
    assert g["bpp"].dtype == np.float32
    assert g["bpp"] == bpp or (math.isnan(g["bpp"]) and math.isnan(bpp))
  return len(got)


def test_prepare_output_is_a_tfds_dataset(tmp_path):
  out = write_shards(tmp_path / "prep", kodak_crops(("kodim01", "kodim02", "kodim03"), 48),
                     codec=["jpeg:30", "none"], num_shards=2, name="kodak", split="test")
  assert _check_against_tfds(out, "test") == 6


def test_ingest_output_is_a_tfds_dataset(tmp_path):
  """Lossless LR files: bpp is NaN in the record and in TensorFlow."""
  hr, lr = tmp_path / "hr", tmp_path / "lr"
  for n in ("kodim05", "kodim06"):
    write_png(hr / f"{n}.png", kodak_u8(32, 48, n, 200, 200))
    write_png(lr / f"{n}.png", kodak_u8(16, 24, n, 200, 200))
  ingest.main(["--hr_dir", str(hr), "--lr", f"{lr}=jpeg:20", "--scale", "2", "--out",
               str(tmp_path / "ing"), "--name", "live", "--split", "val", "--workers", "0"])
  assert _check_against_tfds(tmp_path / "ing", "val") == 2


def test_lost_shard_is_left_out_of_the_tfds_split(tmp_path):
  """A folder squatting on shard 1's name makes its worker fail when publishing it: the shard
  is lost (the manifest's `missing_shards`), listed with 0 records in dataset_info.json, and
  tfds reads the other shards' records."""
  out = tmp_path / "o"
  squat = out / shards.shard_name("kodak", "test", 1, 3)
  (squat / "x").mkdir(parents=True)
  write_shards(out, kodak_crops(("kodim01", "kodim02", "kodim03", "kodim04"), 32),
               num_shards=3, extra=["--workers", "1"])
  m = json.loads((out / "manifest.json").read_text())
  assert m["missing_shards"] == [squat.name]
  assert [s["source"] for s in m["skipped"]] == ["kodim02.png"]
  assert "lost: worker error (IsADirectoryError" in m["skipped"][0]["reason"]
  info = json.loads((out / "dataset_info.json").read_text())
  assert info["splits"][0]["shardLengths"] == ["2", "0", "1"]
  (squat / "x").rmdir()
  squat.rmdir()
  assert _check_against_tfds(out, "test") == 3
