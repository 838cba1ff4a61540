"""Grain source and pipelines over TFRecord shards that the real prep step writes from Kodak."""

import os

import numpy as np
import pytest
from PIL import Image

from csr_jax.data import pipeline
from csr_jax.data import source
from csr_jax.data import transforms
from tests.conftest import load_rgb, kodak_path
from tests.shards import shard_paths, write_shards

NAMES = ("kodim01", "kodim03", "kodim05", "kodim07", "kodim13", "kodim23")


def make_shards(out_dir, *, names=NAMES, hr_size=96, scale=4, qualities=(30,), num_shards=2,
                name="kodak", split="train") -> list[str]:
  """hr_size x hr_size Kodak crops through `data_prep.prepare` (JPEG at `qualities`)."""
  crops = [(n, load_rgb(kodak_path(n))[100:100 + hr_size, 150:150 + hr_size]) for n in names]
  write_shards(out_dir, crops, codec="jpeg:" + ",".join(map(str, qualities)), scale=scale,
               name=name, split=split, num_shards=num_shards)
  return shard_paths(out_dir)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  return make_shards(tmp_path_factory.mktemp("data") / "kodak", qualities=(20, 40))


def _batches(it, n):
  return [next(it) for _ in range(n)]


def test_source_reads_every_record(shards):
  src = source.TFRecordSource(shards)
  assert len(src) == 12
  ex = source.decode(src[3])
  assert ex["hr"].shape == (96, 96, 3) and ex["lr"].shape == (24, 24, 3)
  assert ex["hr"].dtype == np.uint8 and ex["codec"] == "jpeg" and ex["scale"] == 4
  assert sorted(source.decode(src[i])["source"] for i in range(12)) == sorted(
      f"{n}.png" for n in NAMES for _ in (20, 40))
  folder = shards[0].rsplit("/", 1)[0]
  assert source.find_shards(folder, "kodak") == {"kodak": shards}
  assert source.find_shards(os.path.dirname(folder), split="train") == {"kodak": shards}
  with pytest.raises(FileNotFoundError, match="no dataset with split='test'"):
    source.find_shards(folder, split="test")


def test_missing_index_names_file(tmp_path):
  p = tmp_path / "x-train.tfrecord-00000-of-00001"
  p.write_bytes(b"")
  with pytest.raises(FileNotFoundError, match="x-train.tfrecord-00000-of-00001.idx"):
    source.TFRecordSource([str(p)])


def test_paired_crop_is_aligned(shards):
  ex = source.decode(source.TFRecordSource(shards)[0])
  rng = np.random.default_rng(0)
  out = transforms.paired_random_crop(ex, 8, 4, rng)
  # The clean LR is the bicubic downscale of the HR window, so the crops must agree closely.
  down = np.asarray(Image.fromarray(out["hr"]).resize((8, 8), Image.BICUBIC)).astype(int)
  inner = np.abs(down - out["lr_clean"].astype(int))[1:-1, 1:-1]
  assert out["hr"].shape == (32, 32, 3) and out["lr"].shape == (8, 8, 3)
  assert inner.mean() < 3.0


def test_flip_rotate_same_on_pair():
  lr = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
  hr = lr.repeat(2, 0).repeat(2, 1)
  for seed in range(8):
    out = transforms.flip_rotate({"hr": hr, "lr": lr}, np.random.default_rng(seed))
    np.testing.assert_array_equal(out["hr"][::2, ::2], out["lr"])


def test_train_batches_deterministic_and_resumable(shards):
  ds = pipeline.train_dataset(shards, patch=16, scale=4, batch_size=4, seed=3,
                              keys=("hr", "lr", "quality"))
  it = pipeline.train_iterator(ds)
  first = _batches(it, 2)
  state = it.get_state()
  after = _batches(it, 3)
  b = first[0]
  assert b["lr"].shape == (4, 16, 16, 3) and b["hr"].shape == (4, 64, 64, 3)
  assert b["lr"].dtype == np.uint8 and b["quality"].dtype == np.int32
  assert set(b["quality"].tolist()) <= {20, 40}
  again = pipeline.train_iterator(ds)
  again.set_state(state)
  for x, y in zip(after, _batches(again, 3)):
    np.testing.assert_array_equal(x["lr"], y["lr"])
    np.testing.assert_array_equal(x["hr"], y["hr"])
  other = _batches(pipeline.train_iterator(pipeline.train_dataset(
      shards, patch=16, scale=4, batch_size=4, seed=4, keys=("hr", "lr"))), 1)[0]
  assert not np.array_equal(other["lr"], b["lr"])


def test_workers_give_same_batches(shards):
  ds = pipeline.train_dataset(shards, patch=16, scale=4, batch_size=4, seed=3, keys=("hr", "lr"))
  ref = _batches(pipeline.train_iterator(ds), 4)
  it = pipeline.train_iterator(ds, num_workers=1)
  try:
    got = _batches(it, 2)
    state = it.get_state()
  finally:
    it.close()
  it2 = pipeline.train_iterator(ds, num_workers=1)
  try:
    it2.set_state(state)
    got += _batches(it2, 2)
  finally:
    it2.close()
  for x, y in zip(ref, got):
    np.testing.assert_array_equal(x["hr"], y["hr"])


def test_process_shards_are_disjoint(shards):
  seen = []
  for i in range(2):
    ds = pipeline.apply_shard(
        pipeline.grain.MapDataset.source(source.TFRecordSource(shards)),
        pipeline.shard_options(i, 2))
    seen.append({(source.decode(r)["source"], source.decode(r)["quality"]) for r in ds})
  assert len(seen[0]) == len(seen[1]) == 6 and not seen[0] & seen[1]


def test_online_jpeg_recompresses_clean_crop(shards):
  ds = pipeline.train_dataset(shards, patch=16, scale=4, batch_size=2, seed=0, augment=False,
                              jpeg_qualities=(10, 10), keys=("hr", "lr", "lr_clean", "quality"))
  b = ds[0]
  np.testing.assert_array_equal(b["lr"], np.stack([transforms.jpeg(c, 10) for c in b["lr_clean"]]))
  assert (b["quality"] == 10).all()
  assert np.abs(b["lr"].astype(int) - b["lr_clean"].astype(int)).mean() > 1.0


def test_eval_dataset_whole_images(shards):
  exs = list(pipeline.eval_dataset(shards, max_images=3))
  assert len(exs) == 3
  assert set(exs[0]) == {"hr", "lr", "lr_clean", "codec", "quality", "scale", "source",
                         "task_id"}
  # The task id is the model's, looked up from the codec when the example is made.
  assert [ex["task_id"] for ex in pipeline.eval_dataset(shards, 2, task_ids={"jp*": 3})] == [3, 3]
  (miss,) = pipeline.eval_dataset(shards, 1, task_ids={"webp": 0})
  assert "codec 'jpeg' has no prompt" in miss["task_id"]
  b = pipeline.train_dataset(shards, patch=8, scale=4, batch_size=2, task_ids={"jpeg": 4})[0]
  assert b["task_id"].tolist() == [4, 4]
  assert exs[0]["hr"].shape == (96, 96, 3) and exs[0]["lr_clean"].shape == (24, 24, 3)
