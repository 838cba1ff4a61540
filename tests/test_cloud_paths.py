"""Workdirs and data on cloud storage (issue 17): every path is an epath, URLs stay URLs.

No network is reachable here, so the bucket is a local GCS emulator (gcp-storage-emulator, in
its own process); everything on our side is the real code path: epath over gcsfs for files,
Orbax over tensorstore's GCS driver for checkpoints, the Grain source's positioned reads. With
TensorFlow installed epath would use tf.io.gfile for gs://, which does not know the emulator,
hence EPATH_USE_TF=false here.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from csr_jax import checkpoint, paths, report
from csr_jax.data import source
from csr_jax.torch_twins import ucip as twin
from tests.conftest import REPO, run_module


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs():
  """A GCS emulator with bucket `bkt`; the environment that points clients at it."""
  port = _free_port()
  proc = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--port",
                           str(port), "--in-memory", "--default-bucket", "bkt", "-q"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
         "TENSORSTORE_GCS_HTTP_URL": f"http://127.0.0.1:{port}", "EPATH_USE_TF": "false"}
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  for _ in range(100):
    with socket.socket() as s:
      if s.connect_ex(("127.0.0.1", port)) == 0:
        break
    time.sleep(0.1)
  yield env
  proc.kill()
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


def test_url_paths_are_never_mangled():
  for url in ("gs://bucket/a/b", "s3://bucket/x/y"):
    p = paths.resolve(url)
    assert str(p) == url and paths.is_url(p) and paths.display(p) == url
    assert str(p / "checkpoints" / "3" / "state") == f"{url}/checkpoints/3/state"
    assert str(paths.resolve(f"{url}/run").parent) == url
    assert paths.relpath(f"{url}/eval/grids/k.png", url) == "eval/grids/k.png"
    assert str(paths.Reader(f"{url}/s.tfrecord").path) == f"{url}/s.tfrecord"
  assert str(paths.resolve("~/x")) == os.path.expanduser("~/x")
  assert str(paths.resolve("a/../b")) == os.path.join(os.getcwd(), "b")


def test_tools_read_and_write_a_bucket(gcs, trained_run, tmp_path):
  """The trainer's workdir and data uploaded to the bucket: benchmark and convert read the
  checkpoint there (Orbax over tensorstore's GCS driver) and write their outputs there; a new
  run starts from it with `init_from` and reads its shards through a sha256-verified cache.
  (Runs whose checkpoints go to the bucket are left out: the emulator does not return the
  object generations that tensorstore's OCDBT writer checks, so such saves fail at random.)"""
  for part in ("run", "data/train", "data/eval"):
    paths.copy_tree(str(trained_run / part), f"gs://bkt/{part}")
  assert sorted(source.find_shards("gs://bkt/data/train")) == ["kodak"]
  assert checkpoint.intact_steps("gs://bkt/run/checkpoints") == [2, 3]

  res = run_module(["csr_jax.benchmark", "--checkpoint", "gs://bkt/run", "--data",
                    "gs://bkt/data/eval", "--out", "gs://bkt/bench"], tmp_path, env=gcs)
  assert "| all |  | model |" in res.stdout
  bench = paths.resolve("gs://bkt/bench")
  assert "| all |  | model |" in (bench / "table.md").read_text()
  assert any((bench / "grids").iterdir()) and "](grids/" in (bench / "report.md").read_text()
  run_module(["csr_jax.convert", "export", "--checkpoint", "gs://bkt/run", "--out",
              "gs://bkt/m.pth"], tmp_path, env=gcs)
  (tmp_path / "m.pth").write_bytes(paths.resolve("gs://bkt/m.pth").read_bytes())
  tw = twin.create("small")
  tw.load_state_dict(torch.load(tmp_path / "m.pth", weights_only=True), strict=True)

  config = f"{os.path.relpath(REPO / 'configs' / 'ucip.py', tmp_path)}:small,batch=4,workers=0"
  run_module(["csr_jax.main", "--config", f"{config},steps=1", "--workdir", "local_run",
              "--config.data.train_dir=gs://bkt/data/train", "--config.data.patch_size=16",
              "--config.init_from=gs://bkt/run", "--config.data.cache_dir=cache"], tmp_path,
             env=gcs)
  cached = sorted(p.name for p in (tmp_path / "cache").rglob("*.tfrecord-*"))
  assert cached == ["kodak-train.tfrecord-00000-of-00001",
                    "kodak-train.tfrecord-00000-of-00001.idx"]
  assert checkpoint.intact_steps(tmp_path / "local_run" / "checkpoints") == [1]


def test_grain_source_reads_shards_on_the_bucket_by_offset(gcs, trained_run):
  local = report.find_datasets(trained_run / "data" / "eval")["kodak"]
  paths.copy_tree(str(trained_run / "data" / "eval"), "gs://bkt/src/eval")
  remote = source.find_shards("gs://bkt/src/eval")["kodak"]
  a, b = source.TFRecordSource(local), source.TFRecordSource(remote)
  assert len(a) == len(b) == 2 and all(a[i] == b[i] for i in (1, 0))
  meta = json.loads(paths.resolve("gs://bkt/src/eval/manifest.json").read_text())
  assert meta["shards"][0]["file"] == os.path.basename(remote[0])
  np.testing.assert_array_equal(source.decode(b[0])["hr"], source.decode(a[0])["hr"])
