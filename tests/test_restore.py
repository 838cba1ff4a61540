"""`python -m csr_jax.restore` on real files of every kind, run as a user runs it (relative
paths, another directory, the trainer's real workdir); the streaming tiler against a whole-array
reference; the tile rule (exact where tiles keep the receptive field, the seam error otherwise);
the PromptCIR NTIRE 2024 preset against a transcription of the official test_model.py loop."""

import csv
import dataclasses
import io
import os
import struct
import zlib

import av
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from csr_jax import checkpoint, evaluate, inference, restore, weights
from csr_jax.family import Inference
from csr_jax.torch_twins import promptcir as pcir_twin
from tests.conftest import kodak_crop, kodak_path, run_module
from tests.shards import kodak_u8

def _png16(path, a: np.ndarray):
  """A 16-bit RGB or gray + alpha PNG (filter 0), written here: Pillow writes neither."""
  chunk = lambda k, d: struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))
  h, w, c = a.shape
  raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in a)
  ihdr = struct.pack(">IIBBBBB", w, h, 16, {2: 4, 3: 2}[c], 0, 0, 0)
  path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                   + chunk(b"IEND", b""))


def _half(name: str, top: int, left: int) -> np.ndarray:
  """An 80x112 Kodak crop averaged 2x2 into 40x56 at 16-bit precision (real 16-bit data)."""
  a = kodak_u8(80, 112, name, top, left).astype(np.float64)
  a = a.reshape(40, 2, 56, 2, 3).mean(axis=(1, 3))
  return np.round(a * 65535 / 255).astype(np.uint16)


def _read16(path, fmt: str = "rgb48le") -> np.ndarray:
  with av.open(str(path)) as c:
    return next(c.decode(video=0)).to_ndarray(format=fmt)


@pytest.fixture(scope="module")
def photos(trained_run):
  """A folder as users have them: Kodak PNGs (one in a subfolder), a JPEG, grayscale, RGBA,
  16-bit gray, RGB and gray + alpha PNGs, a palette PNG, an EXIF-rotated JPEG, a broken PNG
  and a text file.
  Every image is 40x56 (56x40 upright for the rotated one)."""
  cwd = trained_run / "restore_here"
  d = cwd / "photos"
  (d / "sub").mkdir(parents=True, exist_ok=True)
  Image.fromarray(kodak_u8(40, 56, "kodim01", 200, 300)).save(d / "kodim01.png")
  Image.fromarray(kodak_u8(40, 56, "kodim23", 150, 350)).save(d / "sub" / "kodim23.png")
  Image.fromarray(kodak_u8(40, 56, "kodim05", 100, 100)).save(d / "kodim05.jpg", quality=30)
  Image.fromarray(kodak_u8(40, 56, "kodim08", 300, 200)).convert("L").save(d / "gray.png")
  alpha = np.asarray(Image.fromarray(kodak_u8(40, 56, "kodim15", 10, 10)).convert("L"))
  rgba = np.concatenate([kodak_u8(40, 56, "kodim15", 200, 300), alpha[..., None]], axis=2)
  Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
  Image.fromarray(_half("kodim19", 300, 200)[..., 1]).save(d / "gray16.png")
  _png16(d / "rgb16.png", _half("kodim20", 200, 300))
  _png16(d / "gray_alpha16.png", _half("kodim12", 100, 100)[..., 1:])
  Image.fromarray(kodak_u8(40, 56, "kodim21", 100, 400)).quantize(64).save(d / "palette.png")
  exif = Image.Exif()
  exif[0x0112] = 6  # stored 56 wide, 40 high; shown rotated 90 degrees clockwise
  Image.fromarray(kodak_u8(40, 56, "kodim22", 250, 250)).save(d / "rotated.jpg", exif=exif)
  (d / "broken.png").write_bytes(kodak_path("kodim01").read_bytes()[:5000])
  (d / "notes.txt").write_text("not an image")
  return cwd


@pytest.fixture(scope="module")
def ucip(trained_run):
  """The trained UCIP small (jpeg prompt), tiles of 32 overlapping 8, built in this process as
  the CLI builds it; variants share its compiled forward (`dataclasses.replace`)."""
  return restore.build(checkpoints=[trained_run / "run"], codec="jpeg", tile=32,
                       tile_overlap=8)


def _infer(restorer, rgb01):
  return restorer(np.asarray(rgb01, np.float32))


def test_cli_restores_a_mixed_folder(photos, ucip):
  res = run_module(["csr_jax.restore", "--checkpoint", "../run", "--input", "photos",
                    "--output", "restored", "--codec", "jpeg", "--tile", "32",
                    "--tile_overlap", "8"], photos)
  out = photos / "restored"
  skipped = [line for line in res.stderr.splitlines() if "skipped broken.png" in line]
  assert len(skipped) == 1 and "cannot read the image" in skipped[0]
  rows = {r["file"]: r for r in csv.DictReader(open(out / "restore.csv"))}
  assert set(rows) == {"kodim01.png", "sub/kodim23.png", "kodim05.jpg", "gray.png", "rgba.png",
                       "gray16.png", "rgb16.png", "gray_alpha16.png", "palette.png",
                       "rotated.jpg", "broken.png"}
  assert rows["broken.png"]["status"].startswith("skipped: cannot read the image")
  assert all(r["status"] == "ok" for f, r in rows.items() if f != "broken.png")
  assert rows["rotated.jpg"]["size"] == "40x56" and rows["rotated.jpg"]["out_size"] == "160x224"
  assert not (out / "broken.png").exists() and not (out / "notes.png").exists()

  modes = {}
  for f in ("kodim01", "sub/kodim23", "kodim05", "gray", "rgba", "gray16", "palette",
            "rotated"):
    with Image.open(out / f"{f}.png") as im:
      modes[f] = (im.mode, im.size)
  assert modes == {"kodim01": ("RGB", (224, 160)), "sub/kodim23": ("RGB", (224, 160)),
                   "kodim05": ("RGB", (224, 160)), "gray": ("L", (224, 160)),
                   "rgba": ("RGBA", (224, 160)), "gray16": ("I;16", (224, 160)),
                   "palette": ("RGB", (224, 160)), "rotated": ("RGB", (160, 224))}

  # Values: the model through infer, quantised as the official scripts do, equals the files.
  src = photos / "photos"
  want = evaluate.to_uint8(_infer(ucip, kodak_u8(40, 56, "kodim01", 200, 300) / 255.0))
  np.testing.assert_array_equal(np.asarray(Image.open(out / "kodim01.png")), want)
  with Image.open(src / "rotated.jpg") as im:
    upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
  assert upright.shape == (56, 40, 3)
  np.testing.assert_array_equal(np.asarray(Image.open(out / "rotated.png")),
                                evaluate.to_uint8(_infer(ucip, upright / 255.0)))
  rgba = np.asarray(Image.open(src / "rgba.png"))
  got = np.asarray(Image.open(out / "rgba.png"))
  np.testing.assert_array_equal(got[..., :3], evaluate.to_uint8(_infer(ucip, rgba[..., :3] / 255.)))
  np.testing.assert_array_equal(got[..., 3], np.asarray(Image.fromarray(rgba[..., 3]).resize(
      (224, 160), Image.Resampling.BICUBIC)))  # alpha: Pillow's bicubic, not the model
  # 16-bit in, 16-bit out, at full precision: value / 65535 in, round(y * 65535) out.
  g16 = np.asarray(Image.open(src / "gray16.png")).astype(np.float32)[..., None] / 65535
  y = _infer(ucip, np.repeat(g16, 3, axis=2)).astype(np.float64) @ np.array(restore.LUMA)
  got16 = np.asarray(Image.open(out / "gray16.png"))
  np.testing.assert_array_equal(got16, np.clip(np.round(y * 65535), 0, 65535))
  inner = got16[(got16 > 0) & (got16 < 65535)]  # the 3-step model clips some pixels
  assert inner.size > 1000 and np.mean(inner % 257 != 0) > 0.9  # not 8-bit values stretched
  rgb16 = _read16(src / "rgb16.png").astype(np.float32) / 65535
  want16 = np.clip(np.round(_infer(ucip, rgb16).astype(np.float64) * 65535), 0, 65535)
  np.testing.assert_array_equal(_read16(out / "rgb16.png"), want16)
  ga = _read16(src / "gray_alpha16.png", "rgba64le")
  got_ga = _read16(out / "gray_alpha16.png", "rgba64le")
  assert rows["gray_alpha16.png"]["mode"] == "LA;16" and got_ga.shape == (160, 224, 4)
  y = _infer(ucip, np.repeat(ga[..., :1] / np.float32(65535), 3, axis=2)).astype(
      np.float64) @ np.array(restore.LUMA)
  np.testing.assert_array_equal(got_ga[..., 0], np.clip(np.round(y * 65535), 0, 65535))
  np.testing.assert_array_equal(got_ga[..., 3], np.asarray(Image.fromarray(ga[..., 3]).resize(
      (224, 160), Image.Resampling.BICUBIC)))  # 16-bit alpha: Pillow's I;16 bicubic


def test_nothing_restored_exits_non_zero_and_bad_flags_are_one_line(photos, trained_run):
  res = run_module(["csr_jax.restore", "--checkpoint", "../run", "--input",
                    "photos/broken.png", "--output", "none", "--codec", "jpeg"], photos,
                   check=False)
  assert res.returncode == 1 and "restored 0 of 1" in res.stderr
  assert "skipped: cannot read" in (photos / "none" / "restore.csv").read_text()
  run = trained_run / "run"
  with pytest.raises(KeyError, match=r"--codec 'webp': not in the task table of .*known: jpeg, "
                     r"hevc, vvc"):
    restore.build(checkpoints=[run], codec="webp")
  with pytest.raises(ValueError, match="--codec is needed: ucip small"):
    restore.build(checkpoints=[run])
  with pytest.raises(ValueError, match="preset promptcir-ntire24 is for promptcir, but"):
    restore.build(checkpoints=[run], preset="promptcir-ntire24", codec="jpeg")
  with pytest.raises(KeyError, match="unknown preset 'ntire'; known: promptcir-ntire24"):
    restore.build(checkpoints=[run], preset="ntire")


def _reference(fns, x, p: Inference):
  """The whole-array procedure `infer` had before it streamed: every view's full output
  accumulated, clipped, turned back, then the views averaged."""
  views = []
  for fn in fns:
    for k in inference.ENSEMBLES[p.ensemble]:
      v = inference._dihedral(x, k)
      hp = inference._ceil_to(v.shape[1], p.multiple, p.pad_always)
      wp = inference._ceil_to(v.shape[2], p.multiple, p.pad_always)
      vp = inference.pad_to(v, hp, wp, p.pad_mode)
      t = min(p.tile, hp, wp)
      o = min(p.tile_overlap, t - 1)
      acc = cnt = 0
      for i in inference.tile_starts(hp, t, o):
        for j in inference.tile_starts(wp, t, o):
          y = np.asarray(fn(vp[:, i:i + t, j:j + t]))
          f = y.shape[1] // t
          if np.ndim(acc) == 0:
            acc = np.zeros((1, hp * f, wp * f, 3), np.float32)
            cnt = np.zeros((1, hp * f, wp * f, 1), np.float32)
          acc[:, i * f:(i + t) * f, j * f:(j + t) * f] += y
          cnt[:, i * f:(i + t) * f, j * f:(j + t) * f] += 1
      out = np.clip(acc / cnt, 0, 1)[:, :v.shape[1] * f, :v.shape[2] * f]
      views.append(inference._dihedral(out, k, inverse=True))
  return np.mean(views, axis=0)


def _position_dependent(seed: int):
  """A non-local, non-equivariant x2 function (running sums, a column ramp): tiles, pads and
  flips all change its output, so the bookkeeping has nowhere to hide."""
  w = np.random.default_rng(seed).normal(size=(3, 3)).astype(np.float32)

  def fn(v):
    y = v @ w * 0.5 + np.cumsum(v, axis=1) * 0.02 + np.linspace(-0.2, 0.3, v.shape[2])[:, None]
    return np.repeat(np.repeat(y.astype(np.float32), 2, 1), 2, 2)
  return fn


def test_streamed_tiles_equal_the_whole_array_procedure():
  x = kodak_crop(45, 61, "kodim07", 100, 200)
  fns = [_position_dependent(0), _position_dependent(1)]
  for ensemble in ("none", "x8"):
    p = Inference(multiple=4, pad_mode="flip", pad_always=True, tile=16, tile_overlap=5,
                  ensemble=ensemble)
    bands = list(inference.stream(fns, x, p, tile_batch=3))
    got = np.concatenate([b[2]["image"] for b in bands], axis=1)
    want = _reference(fns, x, p)
    if ensemble == "none":  # same additions in the same order
      np.testing.assert_array_equal(got, want)
    else:  # flipped views add a pixel's tiles in another order: float reassociation only
      np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert [b[0] for b in bands[1:]] == [b[1] for b in bands[:-1]] and bands[-1][1] == 45
    assert len(bands) >= 3 and max(b[1] - b[0] for b in bands) <= 16  # a tile's rows at a time


def _toy_dir(root):
  """Fresh weights of the test family `tests.toy_family` (two 3x3 convs, no image-wide
  statistics: receptive radius 2 input pixels) as a params directory."""
  r = weights.ref("tests.toy_family:SPEC", "tiny")
  where = root / "toy"
  if not where.exists():
    checkpoint.write_params(where, weights.init_params(r, 3), r.meta(source="init seed 3"))
  return where


def test_tiles_equal_the_whole_image_when_overlap_covers_the_receptive_field(tmp_path):
  # Rule: with --tile_blend stitch, a model of receptive radius r without image-wide
  # statistics gives its untiled output when tile_overlap >= 2 r (each output pixel comes
  # from a tile where it is at least r from any cut edge). 'mean' (the official blend)
  # averages tile edges in and is exact only for r = 0.
  rgb = kodak_crop(45, 61, "kodim03", 200, 300)[0]
  kw = dict(checkpoints=[_toy_dir(tmp_path)], codec="webp")
  whole = restore.build(**kw, tile=0)(rgb)
  err = {(blend, ov): float(np.abs(restore.build(**kw, tile=16, tile_overlap=ov,
                                                 tile_blend=blend)(rgb) - whole).max())
         for blend, ov in (("stitch", 4), ("stitch", 6), ("stitch", 2), ("mean", 4))}
  print(f"toy (r = 2) tiled 16 vs untiled, max abs error: {err}")
  assert err[("stitch", 4)] <= 1e-5 and err[("stitch", 6)] <= 1e-5
  assert err[("stitch", 2)] > 1e-3 and err[("mean", 4)] > 1e-3  # the rule is tight


def test_ucip_seam_error_is_measured(ucip):
  # UCIP normalises (SPADE instance norm) and pools (ATM fusion) over the whole image: its
  # receptive field is the image, so every tiling changes the output; report by how much.
  rgb = kodak_crop(40, 56, "kodim01", 200, 300)[0]
  assert ucip.protocol.tile == 32 and ucip.protocol.tile_overlap == 8
  whole = dataclasses.replace(ucip, protocol=dataclasses.replace(ucip.protocol, tile=0))(rgb)
  for blend in ("mean", "stitch"):
    tiled = dataclasses.replace(ucip, protocol=dataclasses.replace(ucip.protocol,
                                                                  tile_blend=blend))(rgb)
    diff = np.abs(tiled.astype(np.float64) - whole)
    psnr = 10 * np.log10(1 / np.mean(diff ** 2))
    print(f"UCIP small (3 steps), 40x56 tiles 32/8 {blend} vs untiled: max {diff.max():.2e}, "
          f"mean {diff.mean():.2e}, PSNR {psnr:.1f} dB")
    assert diff.max() > 1e-5


# ---- the PromptCIR NTIRE 2024 preset against the official procedure ----

def _official_test(model, img):
  """test_model.py's test() and tile_eval(), transcribed (NCHW torch)."""
  _, _, h_old, w_old = img.size()
  padding = 16 * 2
  h_pad = (h_old // padding + 1) * padding - h_old
  w_pad = (w_old // padding + 1) * padding - w_old
  img = torch.cat([img, torch.flip(img, [2])], 2)[:, :, :h_old + h_pad, :]
  img = torch.cat([img, torch.flip(img, [3])], 3)[:, :, :, :w_old + w_pad]
  b, c, h, w = img.shape
  tile = min(384, h, w)
  stride = tile - 96
  h_idx_list = list(range(0, h - tile, stride)) + [h - tile]
  w_idx_list = list(range(0, w - tile, stride)) + [w - tile]
  e = torch.zeros(b, c, h, w).type_as(img)
  wgt = torch.zeros_like(e)
  for h_idx in h_idx_list:
    for w_idx in w_idx_list:
      in_patch = img[..., h_idx:h_idx + tile, w_idx:w_idx + tile]
      out_patch = model(in_patch)
      e[..., h_idx:(h_idx + tile), w_idx:(w_idx + tile)].add_(out_patch)
      wgt[..., h_idx:(h_idx + tile), w_idx:(w_idx + tile)].add_(torch.ones_like(out_patch))
  restored = torch.clamp(e.div_(wgt), 0, 1)
  return restored[..., :h_old, :w_old]


def _official_main(model, model2, img):
  """The loop body of test_model.py: two checkpoints x {identity, transpose}, averaged."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)  # beside XLA's threads on 2 shared cores, 1 is ~4x faster
  try:
    return _official_views(model, model2, img)
  finally:
    torch.set_num_threads(threads)


def _official_views(model, model2, img):
  with torch.no_grad():
    e0 = _official_test(model, img)
    e1 = _official_test(model2, img)
    l_t = img.transpose(-2, -1)
    e2 = _official_test(model, l_t).transpose(-2, -1)
    e3 = _official_test(model2, l_t).transpose(-2, -1)
    return (e0.clamp_(0, 1) + e1.clamp_(0, 1) + e2.clamp_(0, 1) + e3.clamp_(0, 1)) / 4.0


def _twin(seed: int):
  """The small twin with its init moved by noise, saved as an official-layout state_dict."""
  torch.manual_seed(seed)
  net = pcir_twin.create("small")
  g = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for p in net.parameters():
      p.add_(0.02 * torch.randn(p.shape, generator=g))
  return net.eval()


def test_promptcir_preset_equals_the_official_procedure(tmp_path):
  nets = [_twin(0), _twin(5)]
  for n, net in enumerate(nets):
    torch.save(net.state_dict(), tmp_path / f"model_best{n or ''}.pth")
  lq = kodak_u8(150, 110, "kodim20", 200, 300)  # flip-pads to 160x128: two 128 tiles a view
  x = lq.astype(np.float32) / 255.0
  want = _official_main(*nets, torch.from_numpy(x).permute(2, 0, 1)[None])
  want = want[0].permute(1, 2, 0).numpy()
  ours = restore.build(weights_files=[tmp_path / "model_best.pth", tmp_path / "model_best1.pth"],
                       preset="promptcir-ntire24", variant="small")
  assert ours.protocol.ensemble == "transpose" and len(ours.predictors) == 2
  got = ours(x)
  err = float(np.abs(got - want).max())
  print(f"promptcir-ntire24 preset vs official loop (small twins): max abs {err:.2e}")
  assert err <= 1e-5 and np.abs(want - x).max() > 1e-2

  # What restore writes: test_model.py's quantisation of the same floats.
  u8 = evaluate.to_uint8(got).astype(int)
  official_u8 = np.clip(np.round(want * 255.0), 0, 255)
  assert np.abs(u8 - official_u8).max() <= 1 and np.mean(u8 == official_u8) > 0.999


# ---- pieces ----

def test_exif_orientations_match_pillow():
  a = kodak_u8(5, 7, "kodim02", 100, 100)
  for orientation in range(1, 9):
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG", exif=exif)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
      want = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(restore.orient(a, orientation), want)


@pytest.mark.parametrize("channels,bits", [(1, 8), (2, 8), (3, 8), (4, 8), (1, 16), (3, 16),
                                           (4, 16)])
def test_png_writer_round_trips(tmp_path, channels, bits):
  rgb = kodak_u8(37, 53, "kodim14", 30, 40).astype(np.uint16)
  a = np.concatenate([rgb, rgb[..., :1]], axis=2)[..., :channels] if channels > 1 else rgb[..., 1:2]
  a = (a * 257 + np.arange(53)[None, :, None]).astype(np.uint16) if bits == 16 else a.astype(
      np.uint8)
  with open(tmp_path / "x.png", "wb") as f:
    w = restore.PngWriter(f, 53, 37, channels, bits, icc=b"fake-profile-bytes")
    w.write(a[:20])
    w.write(a[20:])
    w.close()
  if bits == 16 and channels > 1:
    with av.open(str(tmp_path / "x.png")) as c:
      got = next(c.decode(video=0)).to_ndarray(format="rgb48le" if channels == 3 else "rgba64le")
  else:
    with Image.open(tmp_path / "x.png") as im:
      got = np.asarray(im)
      assert im.info["icc_profile"] == b"fake-profile-bytes"
  np.testing.assert_array_equal(got.reshape(a.shape), a)


def test_inputs_outputs_and_name_clashes(tmp_path):
  d = tmp_path / "in"
  for name in ("a/x.jpg", "a/x.png", "b.webp", ".hidden/c.png", "a/.d.png", "out/e.png",
               "readme.md"):
    (d / name).parent.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(b"")
  base, files = restore.collect(str(d), str(d / "out"))
  assert [os.path.relpath(f, d) for f in files] == ["a/x.jpg", "a/x.png", "b.webp"]
  assert restore.output_names(base, files) == ["a/x.jpg.png", "a/x.png.png", "b.png"]
  base, files = restore.collect(str(d / "a" / "*.jpg"))
  assert str(base) == str(d / "a") and [f.name for f in files] == ["x.jpg"]
  base, files = restore.collect(str(d / "**" / "*.png"))
  assert str(base) == str(d) and [os.path.relpath(f, d) for f in files] == ["a/x.png",
                                                                            "out/e.png"]
  with pytest.raises(FileNotFoundError, match="no such file, folder or pattern"):
    restore.collect(str(d / "missing"))
