"""Prep's output paths go through `csr_jax.paths`: URLs are never mangled, local paths behave as
before; `--device cuda` without a GPU is one line."""

import json
import os
import pickle

import pytest

from csr_jax import paths
from csr_jax.data import records
from data_prep import beam_runner
from data_prep import jobs
from data_prep import prepare
from data_prep import shards
from tests.shards import kodak_u8, write_png


@pytest.mark.parametrize("url", ["gs://bucket/runs/prep", "s3://b/a/b", "gs://b/x"])
def test_url_outputs_stay_urls(url, tmp_path):
  """What a Beam worker receives for `--out gs://...` still names the bucket, and every file
  of a shard is computed inside it (nothing is written: there is no network here)."""
  args = prepare.parse_args(["--hr_dir", str(tmp_path), "--out", url, "--codec", "jpeg:10",
                             "--runner", "beam", "--beam_pipeline_options=--runner=DirectRunner"])
  assert os.fspath(args.out) == url and args.beam_args == ["--runner=DirectRunner"]
  assert paths.display(args.out) == url
  shard = records.shard_name("kodak", "test", 0, 2)
  job = jobs.ShardJob(os.fspath(args.out), shard, (("a.png", "a.png"),), None, "hash")
  shipped = pickle.loads(pickle.dumps(job))  # as Beam and the process pool ship jobs
  assert shipped.out_dir == url
  assert [os.fspath(p) for p in shards.shard_files(shipped.out_dir, shard)] == [
      f"{url}/{shard}", f"{url}/{shard}.idx", f"{url}/{shard}.done"]
  assert os.fspath(paths.resolve(shipped.out_dir) / "manifest.json") == f"{url}/manifest.json"


def test_url_inputs_stay_urls(tmp_path):
  """`--hr_dir gs://...`: the folder and each image path a worker opens stay in the bucket."""
  args = prepare.parse_args(["--hr_dir", "gs://b/DF2K_HR", "--out", str(tmp_path), "--codec",
                             "jpeg:10"])
  assert os.fspath(args.hr_dir) == "gs://b/DF2K_HR"
  one = jobs.join(os.fspath(args.hr_dir), "sub/0001.png")
  assert os.fspath(one) == "gs://b/DF2K_HR/sub/0001.png"
  assert jobs.join(str(tmp_path), "a.png") == tmp_path / "a.png"


def test_local_relative_out_is_resolved_against_the_cwd(tmp_path, monkeypatch):
  hr = tmp_path / "hr"
  write_png(hr / "a.png", kodak_u8(32, 32, "kodim06", 100, 100))
  monkeypatch.chdir(tmp_path)
  args = prepare.parse_args(["--hr_dir", "hr", "--out", "rel/out", "--codec", "jpeg:10"])
  assert os.fspath(args.out) == str(tmp_path / "rel" / "out")
  m = prepare.main(["--hr_dir", "hr", "--out", "rel/out", "--codec", "jpeg:10", "--workers",
                    "0", "--min_size", "0", "--name", "k"])
  on_disk = json.loads((tmp_path / "rel" / "out" / "manifest.json").read_text())
  assert on_disk == m and m["counts"]["records"] == 1
  assert sorted(p.name for p in (tmp_path / "rel" / "out").iterdir()) == [
      "dataset_info.json", "features.json", "k-train.tfrecord-00000-of-00001",
      "k-train.tfrecord-00000-of-00001.done", "k-train.tfrecord-00000-of-00001.idx",
      "manifest.json"]


def test_default_beam_options_use_the_worker_count():
  assert beam_runner.pipeline_args(None, 3) == [
      "--runner=DirectRunner", "--direct_num_workers=3", "--direct_running_mode=multi_processing"]
  assert beam_runner.pipeline_args(None, 0)[1:] == [
      "--direct_num_workers=1", "--direct_running_mode=in_memory"]
  assert beam_runner.pipeline_args("--runner=DataflowRunner --labels='a=b c'", 2) == [
      "--runner=DataflowRunner", "--labels=a=b c"]


def test_device_cuda_without_a_gpu_is_one_line(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  if torch.cuda.is_available():
    pytest.skip("a GPU is visible: benchmarks/compressai_device.py compares it with the CPU")
  with pytest.raises(SystemExit) as e:
    prepare.main(["--hr_dir", str(tmp_path), "--out", str(tmp_path / "o"), "--codec",
                  "cheng2020-anchor-mse:1", "--untrained_learned", "--device", "cuda"])
  msg = str(e.value.code)
  assert msg == (f"error: --device cuda: torch {torch.__version__} is a CPU-only build; use "
                 "--device cpu") or ("no GPU is visible" in msg and "\n" not in msg), msg
  assert not (tmp_path / "o").exists()
