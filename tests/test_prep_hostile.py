"""Issue 11's prep and loader cases on real files: each crashed, hung, mixed shard sets or
reported nothing useful before the fix."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from csr_jax import paths
from csr_jax.data import records
from csr_jax.data import source
from data_prep import images
from data_prep import jobs
from data_prep import prepare
from data_prep import shards
from tests.conftest import REPO
from tests.shards import kodak_u8, write_png


def _hr(folder: Path, n: int = 2, h: int = 48, w: int = 64) -> Path:
  for i in range(n):
    write_png(folder / f"k{i}.png", kodak_u8(h, w, f"kodim{i + 1:02d}", 100, 200))
  return folder


def _prep(hr: Path, out: Path, *more) -> dict:
  return prepare.main(["--hr_dir", str(hr), "--out", str(out), "--codec", "jpeg:20",
                       "--workers", "0", "--min_size", "16", "--name", "kodak", *more])


def _one_line_error(exc_info, *parts):
  msg = str(exc_info.value.code if isinstance(exc_info.value, SystemExit) else exc_info.value)
  assert "\n" not in msg, msg
  for part in parts:
    assert part in msg, msg


def test_non_utf8_file_name_keeps_every_image(tmp_path):
  """Item 1: was UnicodeEncodeError and no shard at all; now the image is kept under the
  printable name `bad\\xff\\xfename.png` (backslash-x escapes of the undecodable bytes)."""
  hr = _hr(tmp_path / "hr")
  os.rename(hr / "k1.png", os.path.join(os.fsencode(hr), b"bad\xff\xfename.png"))
  m = _prep(hr, tmp_path / "out")
  assert sorted(r["source"] for r in m["records"]) == ["bad\\xff\\xfename.png", "k0.png"]
  src = source.TFRecordSource(source.find_shards(str(tmp_path / "out"))["kodak"])
  assert sorted(source.decode(src[i])["source"] for i in range(len(src))) == [
      "bad\\xff\\xfename.png", "k0.png"]
  assert json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["images"] == 2


def test_other_num_shards_into_the_same_out_is_refused(tmp_path):
  """Item 2: was exit 0 with the old -of-00002 shards left beside the new -of-00001 one."""
  hr = _hr(tmp_path / "hr")
  _prep(hr, tmp_path / "out", "--num_shards", "2")
  before = sorted(p.name for p in (tmp_path / "out").iterdir())
  with pytest.raises(SystemExit) as e:
    _prep(hr, tmp_path / "out", "--num_shards", "1")
  _one_line_error(e, "already holds 2 shard(s)", "kodak-train.tfrecord-00000-of-00002")
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before
  assert len(source.find_shards(str(tmp_path / "out"))["kodak"]) == 2


def test_loaders_take_the_shard_list_from_the_manifest(tmp_path):
  """Item 2, reader side: a glob read stale shards too; now the manifest rules and any
  disagreement with the folder is one line naming the file."""
  out = tmp_path / "out"
  _prep(_hr(tmp_path / "hr"), out, "--num_shards", "2")
  listed = source.find_shards(str(out))["kodak"]
  stale = out / "kodak-train.tfrecord-00003-of-00004"
  shutil.copy(listed[0], stale)
  with pytest.raises(source.ManifestError) as e:
    source.find_shards(str(out))
  _one_line_error(e, str(stale), "shard not in")
  stale.unlink()
  os.rename(listed[1], listed[1] + ".moved")
  with pytest.raises(source.ManifestError) as e:
    source.find_shards(str(out))
  _one_line_error(e, "manifest.json: lists shard kodak-train.tfrecord-00001-of-00002")
  with pytest.raises(FileNotFoundError, match="no manifest.json here or one folder down"):
    source.find_shards(str(tmp_path / "hr"))


def _temp_shard_pid(out: Path, shard_file: str):
  for p in out.glob(f".{shard_file}.tmp-*") if out.is_dir() else ():
    return int(p.name.rsplit("-", 1)[1])
  return None


def test_sigkilled_worker_is_reported_and_the_run_finishes(tmp_path):
  """Item 3: the parent hung forever. Now the shard being written is reported lost image by
  image, the other shards are complete and verified, and the run ends on its own."""
  hr, out = _hr(tmp_path / "hr", n=4), tmp_path / "out"
  target = shards.shard_name("kodak", "train", 0, 3)  # holds k0 and k3
  cmd = [sys.executable, "-m", "data_prep.prepare", "--hr_dir", str(hr), "--out", str(out),
         "--codec", "jpeg:20", "--num_shards", "3", "--workers", "2", "--name", "kodak",
         "--min_size", "16", "--sleep_per_image", "1.0"]
  p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       start_new_session=True)
  try:
    deadline = time.time() + 120
    pid = None
    while pid is None and time.time() < deadline and p.poll() is None:
      pid = _temp_shard_pid(out, target)
      time.sleep(0.02)
    assert pid is not None, p.communicate()
    os.kill(pid, signal.SIGKILL)  # what the OOM killer does
    stdout, stderr = p.communicate(timeout=120)
  finally:
    if p.poll() is None:
      os.killpg(p.pid, signal.SIGKILL)
      p.wait()
  assert p.returncode == 0, stderr
  m = json.loads((out / "manifest.json").read_text())
  assert m["missing_shards"] == [target]
  lost = {s["source"]: s["reason"] for s in m["skipped"]}
  assert sorted(lost) == ["k0.png", "k3.png"]
  assert all(f"killed by SIGKILL (out of memory?) while writing {target}" in r
             for r in lost.values())
  assert "skipped k0.png: lost: the worker" in stdout
  assert sorted(r["source"] for r in m["records"]) == ["k1.png", "k2.png"]
  for s in m["shards"]:
    assert paths.sha256(out / s["file"]) == s["sha256"]
  assert not [q.name for q in out.iterdir() if q.name.startswith(".")]  # no temp debris
  assert len(source.find_shards(str(out))["kodak"]) == 2


def test_malformed_index_is_one_line_naming_the_file(tmp_path):
  """Item 4: was `ValueError: invalid literal for int()` without the file."""
  out = tmp_path / "out"
  _prep(_hr(tmp_path / "hr"), out)
  shard = source.find_shards(str(out))["kodak"][0]
  idx = Path(shard + ".idx")
  good = idx.read_text()
  n0 = int(good.split()[1])
  for text, part in [("0 12ab\n", "line 1 is not 'offset length': '0 12ab'"),
                     ("0\n", "line 1 is not 'offset length'"),
                     (f"{n0} 100\n", "line 1: record at offset"),
                     ("\xff\xfe garbage", "not a text index")]:
    idx.write_bytes(text.encode("latin-1"))
    with pytest.raises(records.RecordError) as e:
      source.TFRecordSource([shard])
    _one_line_error(e, str(idx), part)
  idx.write_text(good.splitlines()[0] + "\n")  # one record short of the shard
  with pytest.raises(records.RecordError) as e:
    source.TFRecordSource([shard])
  _one_line_error(e, str(idx), f"indexes {n0} bytes but the shard has")


@pytest.mark.parametrize("template,part", [
    ("no_such_codec_xyz {input} {output}", "program 'no_such_codec_xyz' not found on PATH"),
    ("/bin/sh -c 'oops {input} {output}", "No closing quotation"),
    ("/bin/cp {inptu} {output}", "unknown placeholder {inptu}"),
    ("/bin/cp {input} out.png", "must contain {input} and {output}"),
])
def test_external_codec_is_checked_before_the_run(tmp_path, template, part):
  """Item 10: a missing program or broken template ran anyway and exited 0 with 0 images."""
  hr = _hr(tmp_path / "hr")
  with pytest.raises(SystemExit) as e:
    prepare.main(["--hr_dir", str(hr), "--out", str(tmp_path / "out"), "--codec",
                  "external:hific:1", "--external", f"hific={template}", "--workers", "0"])
  _one_line_error(e, "error: ", part)
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag,value,part", [
    ("--codec", "hevc:99", "--codec hevc: quality 99 out of range (accepted: 0-51)"),
    ("--codec", "webp:-5", "quality -5 out of range (accepted: 0-100)"),
    ("--codec", "jpeg:101", "quality 101 out of range (accepted: 1-100)"),
    ("--codec", "jpeg:0", "quality 0 out of range (accepted: 1-100)"),
    ("--codec", "cheng2020-anchor-ms-ssim:7", "accepted: 1-6"),
    ("--codec", "external:hific:4", "accepted: 1-3"),
    ("--codec", "none:5", "accepted: 0)"),
    ("--random_quality", "jpeg:10-101", "--random_quality jpeg: quality 101 out of range"),
    ("--random_quality", "jpeg:70-10", "LOW <= HIGH"),
])
def test_qualities_are_range_checked(tmp_path, flag, value, part):
  """Item 11: hevc:99 and webp:-5 exited 0 with 0 records; jpeg:101 was stored."""
  with pytest.raises(SystemExit) as e:
    prepare.main(["--hr_dir", str(tmp_path), "--out", str(tmp_path / "out"), flag, value])
  _one_line_error(e, part)


@pytest.mark.parametrize("args,part", [
    (["--max_images", "-1"], "--max_images -1: must be >= 1"),
    (["--max_images", "0"], "--max_images 0: must be >= 1"),
    (["--scale", "1000"], "--scale 1000: must be 1-16"),
    (["--scale", "0"], "--scale 0: must be 1-16"),
    (["--name", "../X"], "--name '../X': use letters, digits and '_'"),
    (["--name", "a/b"], "--name 'a/b'"),
    (["--name", "kodak-x"], "--name 'kodak-x'"),
    (["--split", ".hidden"], "--split '.hidden'"),
])
def test_bad_flags_are_one_line_errors(tmp_path, args, part):
  """Item 12 and `--name ../X`: -1 dropped the last file, 1000 skipped all with exit 0, and a
  name with a path in it wrote outside --out."""
  with pytest.raises(SystemExit) as e:
    prepare.main(["--hr_dir", str(tmp_path), "--out", str(tmp_path / "out"), "--codec",
                  "jpeg:10", *args])
  _one_line_error(e, "error: ", part)


def _unprivileged(fn):
  """fn()'s JSON-able result with permission bits in force: as uid 65534 in a forked child
  when this process is root (root reads any file), else directly."""
  fn()  # imports whatever fn needs while they can still be read
  if os.geteuid() != 0:
    return fn()
  r, w = os.pipe()
  pid = os.fork()
  if pid == 0:  # child: drop root, run, report, exit without pytest's teardown
    os.close(r)
    try:
      os.setgroups([])
      os.setgid(65534)
      os.setuid(65534)
      data = json.dumps(fn())
    except BaseException as e:  # pylint: disable=broad-except
      data = json.dumps({"child error": repr(e)})
    with os.fdopen(w, "w") as f:
      f.write(data)
    os._exit(0)
  os.close(w)
  with os.fdopen(r) as f:
    data = f.read()
  os.waitpid(pid, 0)
  return json.loads(data)


def test_links_and_unreadable_entries_are_reported(tmp_path):
  """Dangling and looping symlinks and unreadable folders vanished from the counts; an
  unreadable file was reported as `codec failed: [Errno 13]`."""
  root = Path(tempfile.mkdtemp(prefix="hostile_", dir="/tmp"))  # reachable by uid 65534
  try:
    hr = _hr(root / "hr")
    (hr / "dangling.png").symlink_to(root / "missing.png")
    (hr / "loop.png").symlink_to("loop.png")
    (hr / "sub").mkdir()
    (hr / "sub" / "up").symlink_to("..")
    write_png(hr / "locked" / "x.png", kodak_u8(48, 64))
    secret = write_png(hr / "secret.png", kodak_u8(48, 64))
    for p in (root, hr, hr / "sub"):
      p.chmod(0o755)
    (hr / "locked").chmod(0o000)
    secret.chmod(0o000)

    def look():
      files, problems = jobs.list_files(hr)
      try:
        images.load_rgb(secret)
        why = "read"
      except images.BadImage as e:
        why = str(e)
      return [f[1] for f in files], problems, why
    files, problems, why = _unprivileged(look)
    assert files == ["k0.png", "k1.png", "secret.png"]
    assert {p["source"]: p["reason"] for p in problems} == {
        "dangling.png": "broken symlink (its target does not exist)",
        "locked": "unreadable folder (Permission denied)",
        "loop.png": "symlink loop",
        "sub/up": "folder already listed as . (symlink loop)"}
    assert why == "unreadable (Permission denied)"
    (hr / "locked").chmod(0o755)
    m = _prep(hr, root / "out")  # the listing problems reach the manifest
    assert {s["source"] for s in m["skipped"]} == {"dangling.png", "loop.png", "sub/up"}
    assert m["counts"]["sources"] == m["counts"]["images"] + 3 == 7
  finally:
    shutil.rmtree(root, ignore_errors=True)


def test_nothing_usable_exits_nonzero_after_writing_the_report(tmp_path):
  """A batch job goes on past bad items and fails only when nothing usable came out."""
  hr = tmp_path / "hr"
  write_png(hr / "tiny.png", kodak_u8(8, 8))
  (hr / "notes.png").write_text("not an image\n")
  with pytest.raises(SystemExit) as e:
    _prep(hr, tmp_path / "out")
  _one_line_error(e, "error: no usable image: all 2 inputs skipped")
  m = json.loads((tmp_path / "out" / "manifest.json").read_text())
  assert [(s["source"], s["reason"].split(":")[0]) for s in m["skipped"]] == [
      ("notes.png", "not an image Pillow can identify"), ("tiny.png", "too small")]
