"""Each codec really encodes and decodes a Kodak crop; YUV 4:2:0 conversions; codec errors."""

import re
import shlex
import sys

import numpy as np
import pytest

from csr_jax.data import tasks
from data_prep import codecs
from data_prep import yuv
from tests.conftest import kodak_crop


def crop_u8(h, w, name="kodim01", top=0, left=0):
  return (kodak_crop(h, w, name, top, left, dtype=np.float64)[0] * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def lr():
  return crop_u8(64, 96, "kodim01", top=200, left=300)


# ---- YUV ----

@pytest.mark.parametrize("full_range", [True, False])
def test_yuv_gray_roundtrip(full_range):
  g = crop_u8(32, 48, "kodim07").mean(-1).round().astype(np.uint8)
  gray = np.repeat(g[..., None], 3, -1)
  y, cb, cr = yuv.rgb_to_yuv420(gray, full_range)
  assert (cb == 128).all() and (cr == 128).all()
  back = yuv.yuv420_to_rgb(y, cb, cr, full_range)
  if full_range:
    np.testing.assert_array_equal(back, gray)  # lossless
    np.testing.assert_array_equal(y, g)
  else:
    assert np.abs(back.astype(int) - gray).max() <= 1


@pytest.mark.parametrize("full_range", [True, False])
def test_yuv_chroma_constant_blocks_roundtrip(full_range):
  small = crop_u8(16, 24, "kodim23", top=100, left=200)
  img = np.repeat(np.repeat(small, 2, 0), 2, 1)  # constant colour on every 2x2 block
  back = yuv.yuv420_to_rgb(*yuv.rgb_to_yuv420(img, full_range), full_range)
  # Only 8-bit rounding of Y, Cb, Cr remains: <= 1 level at full range, <= 2 at studio range
  # (its 219/224-level scales stretch the rounding error).
  assert np.abs(back.astype(int) - img).max() <= (1 if full_range else 2)
  # Subsampling is the only loss on a real image: re-encoding the decoded frame is stable.
  real = crop_u8(32, 48, "kodim23")
  planes = yuv.rgb_to_yuv420(real, full_range)
  again = yuv.rgb_to_yuv420(yuv.yuv420_to_rgb(*planes, full_range), full_range)
  for a, b in zip(planes, again):
    assert np.abs(a.astype(int) - b).max() <= 1


def test_yuv_file_io(tmp_path):
  planes = yuv.rgb_to_yuv420(crop_u8(8, 12))
  yuv.write_yuv(tmp_path / "a.yuv", planes)
  for a, b in zip(planes, yuv.read_yuv(tmp_path / "a.yuv", 8, 12)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="a.yuv: 144 bytes, want 216"):
    yuv.read_yuv(tmp_path / "a.yuv", 12, 12)


# ---- classic codecs: real bitstreams, monotone in quality ----

@pytest.mark.parametrize("name,qualities", [("jpeg", (40, 10)), ("webp", (40, 5)),
                                            ("hevc", (32, 47))])
def test_bpp_and_psnr_fall_as_quality_worsens(lr, name, qualities):
  codec = codecs.make_codec(name)
  assert tasks.worse_order(name, qualities) == list(qualities)
  bpp, psnr = [], []
  for q in qualities:
    out = codec(lr, q)
    assert out.image.shape == lr.shape and out.image.dtype == np.uint8
    bpp.append(out.bits / (lr.shape[0] * lr.shape[1]))
    psnr.append(codecs.psnr(out.image, lr))
  assert bpp[0] > bpp[1] > 0, bpp
  assert psnr[0] > psnr[1] > 15, psnr


def test_jpeg_bits_are_the_file_size(lr):
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out = codecs.make_codec("jpeg")(lr, 20)
  buf = io.BytesIO()
  Image.fromarray(lr).save(buf, "JPEG", quality=20)
  assert out.bits == 8 * len(buf.getvalue())
  np.testing.assert_array_equal(out.image, np.asarray(Image.open(buf).convert("RGB")))


def test_hevc_odd_size():
  img = crop_u8(37, 51, "kodim05")
  out = codecs.make_codec("hevc")(img, 37)
  assert out.image.shape == img.shape
  assert codecs.psnr(out.image, img) > 25
  assert out.bits > 0


# ---- learned codec: real entropy coder, bitstream length == reported bits ----

@pytest.mark.parametrize("arch", ["anchor"])
def test_compressai_untrained_real_bitstream(arch, tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  img = crop_u8(40, 56, "kodim01", top=300, left=400)  # padded to 64x64 inside
  codec = codecs.make_codec(f"cheng2020-{arch}-mse", codecs.CodecOptions(untrained=True))
  strings, shape, pad = codec.compress(img, 1)
  assert pad == (4, 4, 12, 12)
  nbytes = sum(len(s) for group in strings for s in group)
  out = codec(img, 1)
  assert out.bits == 8 * nbytes and nbytes > 0
  assert out.image.shape == img.shape and out.image.dtype == np.uint8
  # decompress of the same strings reproduces the decoded image (real ANS round trip).
  with torch.no_grad():
    x_hat = codec._net(1).decompress(strings, shape)["x_hat"]
  again = x_hat[0, :, 12:52, 4:60].clamp(0, 1).permute(1, 2, 0).numpy()
  np.testing.assert_array_equal(np.floor(again.astype(np.float64) * 255 + 0.5), out.image)
  # The same weights saved under the zoo file name load through --weights_dir.
  with pytest.raises(codecs.CodecUnavailable, match="weights not found offline; put "
                     "cheng2020-anchor-1-dad2ebff.pth.tar"):
    codecs.CompressAICodec("cheng2020-anchor-mse", str(tmp_path)).weight_file(1)
  torch.save(codec._net(1).state_dict(), tmp_path / "cheng2020-anchor-1-dad2ebff.pth.tar")
  local = codecs.make_codec("cheng2020-anchor-mse", codecs.CodecOptions(weights_dir=str(tmp_path)))
  out2 = local(img, 1)
  assert out2.bits == out.bits
  np.testing.assert_array_equal(out2.image, out.image)


def test_torchvision_stub_only_when_absent():
  from data_prep import torchvision_stub  # pylint: disable=g-import-not-at-top
  cai = torchvision_stub.import_compressai()
  assert "torchvision" in sys.modules and cai.__version__.startswith("1.2")
  assert torchvision_stub.install() is False  # already present: never replaced


# ---- external command codec ----

EXTERNAL_SCRIPT = """
import sys
from PIL import Image
src, dst, bitstream, q = sys.argv[1:]
Image.open(src).convert("RGB").save(bitstream, "JPEG", quality=int(q))
Image.open(bitstream).convert("RGB").save(dst)
"""


def test_external_command_codec_matches_pillow_jpeg(tmp_path, lr):
  script = tmp_path / "my codec.py"  # a space: the template is split with shlex, no shell
  script.write_text(EXTERNAL_SCRIPT)
  template = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {{input}} {{output}} " \
             "{bitstream} {quality}"
  ext = codecs.make_codec("external:pyjpeg", codecs.CodecOptions(external=(("pyjpeg", template),)))
  got, want = ext(lr, 25), codecs.make_codec("jpeg")(lr, 25)
  assert got.bits == want.bits
  np.testing.assert_array_equal(got.image, want.image)


def test_external_errors(tmp_path, lr):
  with pytest.raises(ValueError, match="must contain {input} and {output}"):
    codecs.ExternalCodec("x", "cat {input}")
  bad = codecs.ExternalCodec("x", f"{shlex.quote(sys.executable)} -c 'raise SystemExit(3)' "
                                  "{input} {output}")
  with pytest.raises(RuntimeError, match="external:x: .* exited with 3"):
    bad(lr, 1)
  with pytest.raises(codecs.CodecUnavailable, match="external:hific: no command template"):
    codecs.make_codec("external:hific")
  with pytest.raises(codecs.CodecUnavailable, match="program 'hific_nope' not found on PATH"):
    codecs.ExternalCodec("hific", "hific_nope {input} {output}")
  with pytest.raises(codecs.CodecUnavailable, match="/nonexistent/hific is not an executable"):
    codecs.ExternalCodec("hific", "/nonexistent/hific {input} {output}")
  with pytest.raises(ValueError, match="unknown placeholder {qualty}"):
    codecs.ExternalCodec("x", "cp {input} {output} {qualty}")


# ---- reference binaries ----

def test_vvc_without_vtm_says_so():
  with pytest.raises(codecs.CodecUnavailable, match="no VVC encoder installed"):
    codecs.make_codec("vvc")
  with pytest.raises(codecs.CodecUnavailable, match="not an executable file"):
    codecs.make_codec("hevc", codecs.CodecOptions(hm_encoder="/nonexistent/TAppEncoder",
                                                  hm_decoder="/nonexistent/TAppDecoder"))


def test_reference_argv_is_all_intra_fixed_qp():
  enc, dec = codecs.reference_argv("TAppEncoder", "TAppDecoder", "intra.cfg", "in.yuv", "b.bin",
                                   "rec.yuv", 64, 96, 37)
  assert enc[:3] == ["TAppEncoder", "-c", "intra.cfg"]
  for flag in ("--SourceWidth=96", "--SourceHeight=64", "--QP=37", "--IntraPeriod=1",
               "--InputChromaFormat=420", "--FramesToBeEncoded=1"):
    assert flag in enc
  assert dec == ["TAppDecoder", "-b", "b.bin", "-o", "rec.yuv", "-d", "8"]


def test_codec_args_and_quality_ranges():
  assert not hasattr(tasks, "TASK_IDS")  # prompt ids belong to each family's spec
  assert tasks.parse_codec_arg("external:hific:1,2,3") == ("external:hific", (1, 2, 3))
  assert tasks.parse_codec_arg("none") == tasks.parse_codec_arg("none:0") == ("none", (0,))
  assert tasks.parse_random_arg("jpeg:10-70") == ("jpeg", 10, 70)
  assert tasks.worse_order("hevc", (47, 32, 37)) == [32, 37, 47]
  assert [tasks.quality_range(c) for c in ("jpeg", "webp", "vvc", "cheng2020-attn-mse",
                                           "external:hific", "external:other", "none")] == [
      (1, 100), (0, 100), (0, 51), (1, 6), (1, 3), None, (0, 0)]
  for bad, msg in [("jpeg", "expected NAME:Q1"), ("jpeg:a", "integers"), ("foo:1", "unknown"),
                   ("cheng2020-x-mse:1", "unknown learned"), ("hevc:52", "accepted: 0-51")]:
    with pytest.raises(ValueError, match=msg):
      tasks.parse_codec_arg(bad)


def test_none_codec_returns_its_input(lr):
  out = codecs.make_codec("none")(lr, 0)
  np.testing.assert_array_equal(out.image, lr)
  assert out.bits == 24 * lr.shape[0] * lr.shape[1]


def test_x265_version_read_from_its_bitstream():
  assert re.fullmatch(r"\d+\.\d+\S*", codecs.x265_version())
  assert codecs.make_codec("hevc").describe().startswith(f"x265 {codecs.x265_version()} via PyAV")
