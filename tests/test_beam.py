"""`--runner beam` on Beam's DirectRunner: the local runner's shards byte for byte, bad images
reported the same way, and a run killed part-way that a re-run completes with no duplicate
and no lost record."""

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from csr_jax import paths
from csr_jax.data import records
from csr_jax.data import source
from data_prep import prepare
from data_prep import shards
from tests.conftest import REPO
from tests.shards import kodak_u8, png_bytes, write_png
from tests.test_records import parse_pb, read_all_checked

NAMES = ("kodim01", "kodim02", "kodim03", "kodim04")
TWO_PROCESSES = ("--runner=DirectRunner --direct_num_workers=2 "
                 "--direct_running_mode=multi_processing")
IN_PROCESS = "--runner=DirectRunner --direct_num_workers=1 --direct_running_mode=in_memory"


def _hr(folder: Path, broken: bool) -> Path:
  for n in NAMES:
    write_png(folder / f"{n}.png", kodak_u8(48, 64, n, 100, 150))
  if broken:
    png = png_bytes(kodak_u8(48, 64, "kodim05", 100, 150))
    (folder / "kodim05_cut.png").write_bytes(png[:len(png) // 2])
  return folder


def _argv(hr, out, num_shards, *more) -> list[str]:
  return ["--hr_dir", str(hr), "--out", str(out), "--scale", "4", "--codec", "jpeg:30",
          "--codec", "webp:20", "--codec", "none", "--num_shards", str(num_shards),
          "--name", "kodak", "--split", "test", "--min_size", "16", *more]


def _files(out: Path) -> dict[str, bytes]:
  return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_direct_runner_writes_the_local_runners_shards(tmp_path):
  """4 Kodak crops x (jpeg, webp, none) plus a truncated PNG, into 6 shards: shard 4 holds only
  the broken file and shard 5 no file at all, and both are still written (empty)."""
  hr = _hr(tmp_path / "hr", broken=True)
  local = prepare.main(_argv(hr, tmp_path / "local", 6, "--workers", "0"))
  beam = prepare.main(_argv(hr, tmp_path / "beam", 6, "--runner", "beam",
                            f"--beam_pipeline_options={TWO_PROCESSES}"))
  assert beam == local
  assert local["counts"] == {"sources": 5, "images": 4, "skipped": 1, "records": 12}
  (bad,) = local["skipped"]
  assert bad["source"] == "kodim05_cut.png" and bad["reason"].startswith("truncated or corrupt")
  assert [s["num_records"] for s in local["shards"]] == [3, 3, 3, 3, 0, 0]
  assert local["missing_shards"] == []
  got, want = _files(tmp_path / "beam"), _files(tmp_path / "local")
  assert sorted(got) == sorted(want)  # shards, .idx, .done, manifest, tfds metadata; no temp
  for name, data in want.items():
    assert got[name] == data, name
  out = tmp_path / "beam"
  keys = collections.Counter()
  for s in beam["shards"]:
    path = out / s["file"]
    assert paths.sha256(path) == s["sha256"]
    payloads = read_all_checked(path)  # the `tfrecord` package, CRCs checked
    index = records.read_index(str(out / s["index"]))
    assert index == records.scan_offsets(str(path)) and len(index) == s["num_records"]
    with open(path, "rb") as f:
      assert [records.read_record_at(f, off, str(path)) for off, _ in index] == payloads
    for p in payloads:
      r = parse_pb(p)
      keys[r["source"][0].decode(), r["codec"][0].decode(), r["quality"][0]] += 1
  assert keys == {(f"{n}.png", c, q): 1 for n in NAMES for c, q in
                  (("jpeg", 30), ("webp", 20), ("none", 0))}
  src = source.TFRecordSource(source.find_shards(str(out))["kodak"])
  assert len(src) == 12 and source.decode(src[11])["source"] == "kodim04.png"


def _published(out: Path, n: int) -> list[Path]:
  return [p for i in range(n) if (p := out / shards.shard_name("kodak", "test", i, n)).is_file()]


def test_killed_run_resumes_without_duplicate_or_lost_record(tmp_path):
  """SIGKILL of the whole DirectRunner run (driver and workers) while shards are being written,
  then the same command again: the shards published before the kill are verified and kept,
  the rest are written whole, and the result equals the local runner's byte for byte."""
  hr = _hr(tmp_path / "hr", broken=False)
  prepare.main(_argv(hr, tmp_path / "local", 3, "--workers", "0"))
  out = tmp_path / "beam"
  cmd = [sys.executable, "-m", "data_prep.prepare",
         *_argv(hr, out, 3, "--runner", "beam", f"--beam_pipeline_options={IN_PROCESS}")]
  log = open(tmp_path / "run1.log", "wb")
  # A pause per image in the write step opens a window in which 1 or 2 of 3 shards are out.
  p = subprocess.Popen(cmd + ["--sleep_per_image", "0.5"], cwd=REPO, stdout=log,
                       stderr=subprocess.STDOUT, start_new_session=True)
  try:
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and not _published(out, 3):
      time.sleep(0.02)
    before = _published(out, 3)
    os.killpg(p.pid, signal.SIGKILL)
  finally:
    p.wait()
    log.close()
  assert 1 <= len(before) < 3, (tmp_path / "run1.log").read_text()
  assert not (out / "manifest.json").exists()
  inodes = {q.name: q.stat().st_ino for q in before}

  r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  assert f"resuming: {len(inodes)} of 3 shards complete" in r.stderr
  for name, ino in inodes.items():
    assert (out / name).stat().st_ino == ino  # verified and kept, not rewritten
  got, want = _files(out), _files(tmp_path / "local")
  assert sorted(got) == sorted(want)  # no temp debris either
  for name, data in want.items():
    assert got[name] == data, name
  m = json.loads(got["manifest.json"])
  assert m["counts"]["records"] == 12 and m["missing_shards"] == []
  assert len({(r["source"], r["codec"], r["quality"]) for r in m["records"]}) == 12


@pytest.mark.parametrize("args,part", [
    (["--beam_pipeline_options=--runner=DirectRunner"],
     "--beam_pipeline_options needs --runner beam"),
    (["--runner", "beam", "--beam_pipeline_options=--runner='DirectRunner"],
     "--beam_pipeline_options \"--runner='DirectRunner\": No closing quotation"),
])
def test_beam_flag_errors_are_one_line(tmp_path, args, part):
  with pytest.raises(SystemExit) as e:
    prepare.main(["--hr_dir", str(tmp_path), "--out", str(tmp_path / "o"), "--codec", "jpeg:10",
                  *args])
  msg = str(e.value.code)
  assert msg.startswith("error: ") and part in msg and "\n" not in msg
