"""The prep CLI: bad-input corpus, kill -9 and resume, records that other readers parse, the
papers' grids (UCIP's 23 degradations, `none`, random qualities, the HEVC encoder named)."""

import collections
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from csr_jax import paths
from csr_jax.data import source
from csr_jax.data import tasks
from data_prep import grids
from data_prep import codecs, images, imresize, prepare, shards
from tests.conftest import REPO
from tests.shards import kodak_u8 as u8
from tests.shards import write_png, write_shards
from tests.test_records import parse_pb, read_all_checked


def raw_png(w: int, h: int, depth: int, ctype: int, idat: bytes) -> bytes:
  """A PNG written chunk by chunk: Pillow cannot write 16-bit colour or a lying header."""
  def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
          + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def png16(a: np.ndarray) -> bytes:
  """A 16-bit PNG (gray or RGB)."""
  h, w = a.shape[:2]
  raw = b"".join(b"\x00" + a[i].astype(">u2").tobytes() for i in range(h))
  return raw_png(w, h, 16, 0 if a.ndim == 2 else 2, zlib.compress(raw))


def encoded(img, fmt, **kw) -> bytes:
  buf = io.BytesIO()
  img.save(buf, fmt, **kw)
  return buf.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """Bad and odd inputs built from real Kodak crops -> {file name: expected uint8 RGB or reason}."""
  d = tmp_path_factory.mktemp("corpus")
  base = u8(72, 96, "kodim19", 100, 200)
  rng = np.random.default_rng(0)
  want = {}
  (d / "a_zero.png").write_bytes(b"")
  want["a_zero.png"] = "empty file"
  png = encoded(Image.fromarray(base), "PNG")
  (d / "b_trunc.png").write_bytes(png[:len(png) // 2])
  want["b_trunc.png"] = "truncated or corrupt"
  jpg = encoded(Image.fromarray(base), "JPEG", quality=90)
  (d / "c_trunc.jpg").write_bytes(jpg[:len(jpg) // 2])
  want["c_trunc.jpg"] = "truncated or corrupt"
  cmyk = Image.fromarray(base).convert("CMYK")
  (d / "d_cmyk.jpg").write_bytes(encoded(cmyk, "JPEG", quality=95))
  with Image.open(d / "d_cmyk.jpg") as im:
    assert im.mode == "CMYK"
    want["d_cmyk.jpg"] = np.asarray(im.convert("RGB"))
  v = base[..., 1].astype(np.int64) * 257 + rng.integers(-128, 129, base.shape[:2])
  v = np.clip(v, 0, 65535).astype(np.uint16)
  Image.fromarray(v).save(d / "e_gray16.png")
  want["e_gray16.png"] = np.repeat(np.floor(v / 257 + 0.5).astype(np.uint8)[..., None], 3, -1)
  v3 = np.clip(base.astype(np.int64) * 257 + rng.integers(-128, 129, base.shape), 0, 65535)
  (d / "f_rgb16.png").write_bytes(png16(v3.astype(np.uint16)))
  want["f_rgb16.png"] = np.floor(v3 / 257 + 0.5).astype(np.uint8)
  Image.fromarray(base[..., 0]).save(d / "g_gray.png")
  want["g_gray.png"] = np.repeat(base[..., :1], 3, -1)
  alpha = np.zeros(base.shape[:2], np.uint8)
  alpha[:, 48:] = 255  # half transparent: its colours are kept, not composited
  Image.fromarray(np.dstack([base, alpha])).save(d / "h_rgba.png")
  want["h_rgba.png"] = base
  pal = Image.fromarray(base).quantize(64)
  pal.save(d / "i_palette.png")
  want["i_palette.png"] = np.asarray(pal.convert("RGB"))
  exif = Image.Exif()
  exif[0x0112] = 6  # stored sideways, displayed rotated 90 degrees clockwise
  Image.fromarray(base).save(d / "j_exif.jpg", quality=95, exif=exif)
  with Image.open(d / "j_exif.jpg") as im:
    want["j_exif.jpg"] = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
  assert want["j_exif.jpg"].shape == (96, 72, 3)
  Image.fromarray(base[:40, :40]).save(d / "k_tiny.png")
  want["k_tiny.png"] = "too small"
  (d / "l_notes.txt").write_text("not an image\n")
  want["l_notes.txt"] = "not an image"
  Image.fromarray(base[:70, :90]).save(d / "m_odd.png")  # cropped to 68x88 at scale 4
  want["m_odd.png"] = base[:68, :88]
  # A decompression bomb's header: 10000 x 10000 RGB (300 MB decoded) in a 1 kB file. Pillow
  # only warns below 179 MP; the header is refused before any decoding.
  (d / "n_bomb.png").write_bytes(raw_png(10000, 10000, 8, 2, zlib.compress(bytes(30001) * 20)))
  want["n_bomb.png"] = "too many pixels: 10000x10000"
  return d, want


def test_bad_input_rules(corpus):
  d, want = corpus
  for name, exp in want.items():
    if isinstance(exp, str):
      with pytest.raises(images.BadImage, match=exp):
        images.prepare_hr(d / name, 4, 64)
    else:
      got = images.prepare_hr(d / name, 4, 64)
      exp = images.crop_to_multiple(exp, 4)
      assert got.dtype == np.uint8 and got.shape == exp.shape, name
      np.testing.assert_array_equal(got, exp, err_msg=name)


def test_bad_inputs_do_not_crash_the_run(corpus, tmp_path):
  d, want = corpus
  m = prepare.main(["--hr_dir", str(d), "--out", str(tmp_path), "--scale", "4", "--codec",
                    "jpeg:20", "--num_shards", "2", "--workers", "0", "--min_size", "64"])
  reasons = {s["source"]: s["reason"] for s in m["skipped"]}
  assert sorted(reasons) == sorted(k for k, v in want.items() if isinstance(v, str))
  for k, r in reasons.items():
    assert want[k] in r and "\n" not in r
  ok = sorted(k for k, v in want.items() if not isinstance(v, str))
  assert sorted(r["source"] for r in m["records"]) == ok
  assert m["counts"] == {"sources": len(want), "images": len(ok), "skipped": len(reasons),
                         "records": len(ok)}
  on_disk = json.loads((tmp_path / "manifest.json").read_text())
  assert on_disk["skipped"] == m["skipped"]


def _complete(out: Path, name: str, n: int) -> list[Path]:
  return [p for i in range(n) if (p := out / shards.shard_name(name, "train", i, n)).is_file()]


def test_kill9_then_resume(tmp_path):
  hr, out = tmp_path / "hr", tmp_path / "out"
  hr.mkdir()
  for i in range(1, 7):
    write_png(hr / f"kodim{i:02d}.png", u8(128, 128, f"kodim{i:02d}", 64, 64))
  cmd = [sys.executable, "-m", "data_prep.prepare", "--hr_dir", str(hr), "--out", str(out),
         "--scale", "4", "--codec", "jpeg:10,30", "--num_shards", "3", "--name", "kodak",
         "--min_size", "32"]
  log = open(tmp_path / "run1.log", "wb")
  # One worker and a pause per image give a window where 1 or 2 of the 3 shards are done.
  p = subprocess.Popen(cmd + ["--workers", "1", "--sleep_per_image", "0.4"], cwd=REPO,
                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
  deadline = time.time() + 120
  try:
    while time.time() < deadline and p.poll() is None and not _complete(out, "kodak", 3):
      time.sleep(0.02)
    done_at_kill = _complete(out, "kodak", 3)
    os.killpg(p.pid, signal.SIGKILL)  # the whole run: main process and its worker
  finally:
    p.wait()
    log.close()
  assert 1 <= len(done_at_kill) < 3, (tmp_path / "run1.log").read_text()
  assert not (out / "manifest.json").exists()
  inodes = {q.name: q.stat().st_ino for q in done_at_kill}

  r = subprocess.run(cmd + ["--workers", "2"], cwd=REPO, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 0, r.stderr
  assert f"resuming: {len(inodes)} of 3 shards complete" in r.stderr
  for name, ino in inodes.items():
    assert (out / name).stat().st_ino == ino  # verified and kept, not rewritten
  assert not [q for q in out.iterdir() if q.name.startswith(".")]  # no temp debris

  m = json.loads((out / "manifest.json").read_text())
  assert m["num_shards"] == 3 and m["missing_shards"] == []
  seen = collections.Counter()
  for s in m["shards"]:
    assert paths.sha256(out / s["file"]) == s["sha256"]
    payloads = read_all_checked(out / s["file"])
    assert len(payloads) == s["num_records"]
    idx = [tuple(map(int, ln.split())) for ln in (out / s["index"]).read_text().splitlines()]
    assert len(idx) == len(payloads)
    for pl in payloads:
      f = parse_pb(pl)
      seen[(f["source"][0].decode(), f["codec"][0].decode(), f["quality"][0])] += 1
  want = {(f"kodim{i:02d}.png", "jpeg", q) for i in range(1, 7) for q in (10, 30)}
  assert set(seen) == want and set(seen.values()) == {1}
  assert m["counts"]["records"] == 12


def test_record_contents_are_reproducible(tmp_path):
  """Decode one record and redo its LR and JPEG from its HR: same pixels, same bpp."""
  hr = tmp_path / "hr"
  hr.mkdir()
  write_png(hr / "k8.png", u8(96, 120, "kodim08", 200, 300))
  prepare.main(["--hr_dir", str(hr), "--out", str(tmp_path / "o"), "--scale", "3", "--codec",
                "jpeg:15", "--codec", "webp:30", "--workers", "0", "--name", "t", "--split",
                "test", "--min_size", "32"])
  path = tmp_path / "o" / "t-test.tfrecord-00000-of-00001"
  recs = [parse_pb(p) for p in read_all_checked(path)]
  assert [(r["codec"][0], r["quality"][0], r["encoder"][0]) for r in recs] == [
      (b"jpeg", 15, f"Pillow {Image.__version__} JPEG".encode()),
      (b"webp", 30, f"Pillow {Image.__version__} WEBP".encode())]
  r = recs[0]
  hr_img = np.asarray(Image.open(io.BytesIO(r["hr_png"][0])))
  lr_clean = np.asarray(Image.open(io.BytesIO(r["lr_clean_png"][0])))
  lr = np.asarray(Image.open(io.BytesIO(r["lr_png"][0])))
  np.testing.assert_array_equal(hr_img, u8(96, 120, "kodim08", 200, 300))
  np.testing.assert_array_equal(lr_clean, imresize.downscale_uint8(hr_img, 3))
  jpg = encoded(Image.fromarray(lr_clean), "JPEG", quality=15)
  np.testing.assert_array_equal(lr, np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB")))
  assert r["bpp"][0] == pytest.approx(8 * len(jpg) / (32 * 40), rel=1e-6)
  assert (r["scale"], r["hr_height"], r["hr_width"], r["lr_height"], r["lr_width"]) == (
      [3], [96], [120], [32], [40])
  assert r["source"] == [b"k8.png"]
  assert sorted(r) == sorted(shards.FEATURES)


def test_cli_errors(tmp_path):
  with pytest.raises(SystemExit, match="no VVC encoder installed"):
    prepare.main(["--hr_dir", str(tmp_path), "--out", str(tmp_path / "o"), "--codec", "vvc:32"])
  with pytest.raises(SystemExit, match="no files"):
    prepare.main(["--hr_dir", str(tmp_path), "--out", str(tmp_path / "o"), "--codec", "jpeg:10"])
  grid = prepare.resolve_grid("ucip", ["jpeg:10"])
  assert ("jpeg", (10,)) in grid and ("hevc", (32, 37, 42, 47)) in grid


def test_paper_grids():
  """UCIP section 4.1: JPEG, HM, VTM, C_PSNR, C_SSIM, HiFiC -> 4 + 4 + 4 + 4 + 4 + 3 = 23."""
  ucip = grids.GRIDS["ucip"]
  assert list(ucip) == ["jpeg", "hevc", "vvc", "cheng2020-anchor-mse",
                        "cheng2020-anchor-ms-ssim", "external:hific"]
  assert sum(len(q) for q in ucip.values()) == 23
  assert ucip["hevc"] == ucip["vvc"] == (32, 37, 42, 47) and ucip["external:hific"] == (1, 2, 3)
  assert grids.GRIDS["promptcir"] == {"jpeg": (10, 20, 30, 40, 50, 60, 70)}
  assert grids.GRIDS["cisr"] == {"jpeg": (10, 20, 30, 40, 50), "webp": (5, 10, 20, 30, 40)}
  for grid in grids.GRIDS.values():
    for codec, qs in grid.items():
      tasks.check_qualities(codec, qs)


def _records(out) -> list[dict]:
  return [parse_pb(p) for path in source.find_shards(str(out))["k"] for p in read_all_checked(path)]


def test_none_codec_is_the_clean_bicubic_lr(tmp_path):
  """PromptSR's clean SR data: lr_png is lr_clean_png bit for bit, bpp 24."""
  write_shards(tmp_path / "o", [("a", u8(48, 64, "kodim04", 100, 100))], codec="none",
               name="k", scale=2)
  (r,) = _records(tmp_path / "o")
  assert r["lr_png"] == r["lr_clean_png"] and r["codec"] == [b"none"] and r["quality"] == [0]
  assert r["bpp"] == [24.0] and r["encoder"] == [b"none (degraded LR = clean bicubic LR)"]
  clean = np.asarray(Image.open(io.BytesIO(r["lr_clean_png"][0])))
  np.testing.assert_array_equal(clean, imresize.downscale_uint8(u8(48, 64, "kodim04", 100, 100),
                                                                2))


def test_random_quality_is_per_image_seeded_and_recorded(tmp_path):
  """PromptCIR's blind sets: one JPEG quality per image from a range, the same whatever the
  sharding, recorded in the record; another seed draws others."""
  hr = [(f"i{i}", u8(32, 32, f"kodim{i + 1:02d}", 200, 200)) for i in range(4)]
  got = {}
  for seed, n in ((5, 1), (5, 3), (6, 1)):
    out = tmp_path / f"o{seed}{n}"
    write_shards(out, hr, codec=[], name="k", scale=2, num_shards=n,
                 extra=["--random_quality", "jpeg:10-70", "--seed", str(seed)])
    recs = _records(out)
    got[seed, n] = {r["source"][0].decode(): r["quality"][0] for r in recs}
    for r in recs:
      clean = np.asarray(Image.open(io.BytesIO(r["lr_clean_png"][0])))
      want = codecs.make_codec("jpeg")(clean, r["quality"][0]).image
      np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r["lr_png"][0]))), want)
  assert got[5, 1] == got[5, 3] == {
      s: prepare.random_quality(5, "jpeg", s, 10, 70) for s in ("i0.png", "i1.png", "i2.png",
                                                                "i3.png")}
  assert all(10 <= q <= 70 for q in got[5, 1].values()) and got[6, 1] != got[5, 1]
  m = json.loads((tmp_path / "o51" / "manifest.json").read_text())
  assert m["grid"] == [{"codec": "jpeg", "random_quality": [10, 70], "seed": 5,
                        "implementation": f"Pillow {Image.__version__} JPEG"}]


def test_ucip_grid_names_its_hevc_encoder_and_warns_about_x265(tmp_path, capsys):
  """Codecs that cannot run here are dropped; HEVC is x265 (its version named in the manifest,
  the summary and every record), with a warning that UCIP used HM."""
  write_shards(tmp_path / "o", [("a", u8(64, 64, "kodim09", 200, 200))], codec=[], name="k",
               extra=["--grid", "ucip", "--skip_unavailable"])
  printed = capsys.readouterr()
  m = json.loads((tmp_path / "o" / "manifest.json").read_text())
  assert [g["codec"] for g in m["grid"]] == ["jpeg", "hevc"]
  hevc = m["grid"][1]["implementation"]
  assert hevc.startswith(f"x265 {codecs.x265_version()} via PyAV")
  assert "warning: hevc runs on x265" in printed.err and "UCIP paper used the HM" in printed.err
  assert m["warnings"] == [printed.err.split("warning: ")[1].splitlines()[0]]
  assert f"\nhevc: {hevc}\n" in printed.out
  recs = _records(tmp_path / "o")
  assert len(recs) == 8
  assert {r["encoder"][0].decode() for r in recs if r["codec"] == [b"hevc"]} == {hevc}
