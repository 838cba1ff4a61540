"""Codec registry: each codec really encodes an 8-bit RGB image and decodes the bitstream.

`make_codec(name, options)(img, quality)` returns the decoded uint8 HWC image and the bitstream
size in bits; bpp is bits / (H * W) of the coded (LR) image. Names, quality ranges and grids
live in `csr_jax.data.tasks`; `describe()` names the implementation (stored per record as
`encoder`).
"""

import dataclasses
import functools
import io
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from csr_jax.data import tasks
from data_prep import yuv


class Coded(NamedTuple):
  image: np.ndarray  # decoded uint8 HWC, same size as the input
  bits: float  # bitstream size; NaN when an external codec does not expose its bitstream


class CodecUnavailable(RuntimeError):
  """The codec cannot run here (missing binary or weights); the message says what to pass."""


@dataclasses.dataclass(frozen=True)
class CodecOptions:
  hm_encoder: str | None = None
  hm_decoder: str | None = None
  hm_config: str | None = None
  vtm_encoder: str | None = None
  vtm_decoder: str | None = None
  vtm_config: str | None = None
  weights_dir: str | None = None
  untrained: bool = False  # random compressai weights: plumbing tests only
  external: tuple[tuple[str, str], ...] = ()  # (name, command template)
  full_range: bool = True
  device: str = "cpu"  # torch device of the compressai nets (their entropy coder runs on CPU)


def check_device(device: str) -> None:
  """CodecUnavailable (one line) unless torch can use `device` ('cpu' or 'cuda')."""
  if device == "cpu":
    return
  import torch  # pylint: disable=g-import-not-at-top
  if not torch.cuda.is_available():
    why = ("a CPU-only build" if torch.version.cuda is None else
           f"built for CUDA {torch.version.cuda}, but no GPU is visible")
    raise CodecUnavailable(f"--device {device}: torch {torch.__version__} is {why}; use "
                           "--device cpu")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _check(img: np.ndarray):
  if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
    raise ValueError(f"codec input must be uint8 HxWx3, got {img.dtype} {img.shape}")


class PillowCodec:
  """JPEG (libjpeg tables, 4:2:0) or lossy WebP (method 4) through Pillow."""

  def __init__(self, fmt: str):
    self.fmt = fmt

  def describe(self) -> str:
    return f"Pillow {Image.__version__} {self.fmt}"

  def __call__(self, img, quality):
    _check(img)
    buf = io.BytesIO()
    kw = {"quality": int(quality)}
    if self.fmt == "WEBP":
      kw["method"] = 4
    Image.fromarray(img).save(buf, self.fmt, **kw)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
      out = np.asarray(im.convert("RGB"))
    return Coded(out, 8.0 * len(data))


class NoneCodec:
  """No compression: the degraded LR is the clean LR (clean bicubic SR, as PromptSR trains).

  bpp is 24, the raw 8-bit RGB size, so rate columns stay numbers.
  """

  def describe(self) -> str:
    return "none (degraded LR = clean bicubic LR)"

  def __call__(self, img, quality):
    _check(img)
    return Coded(img, 24.0 * img.shape[0] * img.shape[1])


@functools.cache
def x265_version() -> str:
  """The libx265 version inside PyAV's FFmpeg, read from the version SEI of a 64x64 encode."""
  data = _x265_encode(np.zeros((96, 64), np.uint8), 64, 64, "qp=40:info=1")
  m = re.search(rb"x265 \(build \d+\) - ([0-9][^:\s]*)", data)
  return m.group(1).decode() if m else "unknown version"


def _x265_encode(yuv420: np.ndarray, w: int, h: int, params: str) -> bytes:
  import av  # pylint: disable=g-import-not-at-top
  frame = av.VideoFrame.from_ndarray(yuv420, format="yuv420p")
  buf = io.BytesIO()
  with av.open(buf, "w", format="hevc") as out:
    s = out.add_stream("libx265", rate=1)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    s.options = {"x265-params": f"{params}:keyint=1:min-keyint=1:no-scenecut=1:"
                                "log-level=error:frame-threads=1:pools=1"}
    for p in s.encode(frame):
      out.mux(p)
    for p in s.encode():
      out.mux(p)
  return buf.getvalue()


class X265Codec:
  """HEVC all-intra at a fixed QP with libx265 in PyAV; our own BT.601 4:2:0 conversion."""

  def __init__(self, full_range: bool = True):
    self.full_range = full_range

  def describe(self) -> str:
    import av  # pylint: disable=g-import-not-at-top
    return (f"x265 {x265_version()} via PyAV {av.__version__} (FFmpeg libx265), all-intra, "
            "8-bit 4:2:0")

  def __call__(self, img, quality):
    import av  # pylint: disable=g-import-not-at-top
    _check(img)
    h, w = img.shape[:2]
    padded = yuv.pad_to_multiple(img, 2)
    ph, pw = padded.shape[:2]
    planes = yuv.rgb_to_yuv420(padded, self.full_range)
    packed = np.concatenate([planes[0].reshape(-1), planes[1].reshape(-1),
                             planes[2].reshape(-1)]).reshape(ph * 3 // 2, pw)
    rng = "full" if self.full_range else "limited"
    data = _x265_encode(packed, pw, ph, f"qp={int(quality)}:info=0:range={rng}")
    with av.open(io.BytesIO(data), "r", format="hevc") as c:
      dec = next(c.decode(video=0)).to_ndarray().reshape(-1)
    n = ph * pw
    y = dec[:n].reshape(ph, pw)
    cb = dec[n:n + n // 4].reshape(ph // 2, pw // 2)
    cr = dec[n + n // 4:n + n // 2].reshape(ph // 2, pw // 2)
    return Coded(yuv.yuv420_to_rgb(y, cb, cr, self.full_range)[:h, :w], 8.0 * len(data))


def reference_argv(encoder, decoder, config, yuv_in, bitstream, yuv_out, h, w, qp):
  """argv lists for HM (TAppEncoder/TAppDecoder) or VTM (EncoderApp/DecoderApp), all-intra."""
  enc = [str(encoder)] + (["-c", str(config)] if config else []) + [
      "-i", str(yuv_in), "-b", str(bitstream), f"--SourceWidth={w}", f"--SourceHeight={h}",
      "--InputBitDepth=8", "--OutputBitDepth=8", "--InternalBitDepth=8",
      "--InputChromaFormat=420", "--FrameRate=1", "--FramesToBeEncoded=1", f"--QP={qp}",
      "--IntraPeriod=1", "--ConformanceWindowMode=1"]
  dec = [str(decoder), "-b", str(bitstream), "-o", str(yuv_out), "-d", "8"]
  return enc, dec


def _run(argv, what):
  r = subprocess.run(argv, capture_output=True, text=True, check=False)
  if r.returncode != 0:
    tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
    raise RuntimeError(f"{what}: {argv[0]} exited with {r.returncode}: {tail[0]}")


class ReferenceCodec:
  """HM or VTM binaries on raw 8-bit 4:2:0 YUV files in a temporary folder."""

  def __init__(self, label, encoder, decoder, config=None, full_range=True):
    for p in (encoder, decoder):
      if not (Path(p).is_file() and os.access(p, os.X_OK)):
        raise CodecUnavailable(f"{label}: {p} is not an executable file")
    self.label, self.encoder, self.decoder, self.config = label, encoder, decoder, config
    self.full_range = full_range

  def describe(self) -> str:
    return f"{self.label} reference {Path(self.encoder).name}/{Path(self.decoder).name}, all-intra"

  def __call__(self, img, quality):
    _check(img)
    h, w = img.shape[:2]
    padded = yuv.pad_to_multiple(img, 2)
    ph, pw = padded.shape[:2]
    with tempfile.TemporaryDirectory(prefix="csr_ref_") as d:
      d = Path(d)
      yuv.write_yuv(d / "in.yuv", yuv.rgb_to_yuv420(padded, self.full_range))
      enc, dec = reference_argv(self.encoder, self.decoder, self.config, d / "in.yuv",
                                d / "out.bin", d / "rec.yuv", ph, pw, int(quality))
      _run(enc, f"{self.label} encode")
      _run(dec, f"{self.label} decode")
      bits = 8.0 * (d / "out.bin").stat().st_size
      planes = yuv.read_yuv(d / "rec.yuv", ph, pw)
    return Coded(yuv.yuv420_to_rgb(*planes, self.full_range)[:h, :w], bits)


class CompressAICodec:
  """compressai Cheng2020 (anchor/attn, mse/ms-ssim): real compress/decompress, ANS coder.

  `device` holds the nets (analysis/synthesis transforms, hyperprior, context model); the ANS
  coder always runs on CPU inside compressai. The CDF tables are built on CPU before the nets
  move, and cuDNN is made deterministic, since compressai's decoder must reproduce the
  encoder's entropy parameters exactly. Encode and decode run on the same device;
  `cross_device` checks that a bitstream made on `device` decodes the same on CPU.
  """

  def __init__(self, name, weights_dir=None, untrained=False, device="cpu"):
    _, arch, metric = name.split("-", 2)
    self.name, self.arch, self.metric = name, f"cheng2020-{arch}", metric
    self.weights_dir, self.untrained, self.device = weights_dir, untrained, device
    self._nets = {}

  def describe(self) -> str:
    from data_prep import torchvision_stub  # pylint: disable=g-import-not-at-top
    cai = torchvision_stub.import_compressai()
    kind = "untrained (random) weights" if self.untrained else "pretrained weights"
    where = "" if self.device == "cpu" else f", nets on {self.device}"
    return f"compressai {cai.__version__} {self.arch} {self.metric}, {kind}{where}"

  def weight_file(self, quality: int) -> Path:
    """The local weights for `quality`, or CodecUnavailable naming the file to provide."""
    from data_prep import torchvision_stub  # pylint: disable=g-import-not-at-top
    torchvision_stub.install()
    from compressai.zoo import image as zoo  # pylint: disable=g-import-not-at-top
    try:
      url = zoo.model_urls[self.arch][self.metric][int(quality)]
    except KeyError:
      raise CodecUnavailable(f"{self.name}: no zoo weights for quality {quality} (1-6)") from None
    zoo_name = url.rsplit("/", 1)[1]
    import torch  # pylint: disable=g-import-not-at-top
    dirs = ([Path(self.weights_dir)] if self.weights_dir else []) + [
        Path(torch.hub.get_dir()) / "checkpoints"]
    names = [zoo_name, f"{self.name}-{quality}.pth", f"{self.name}-{quality}.pth.tar"]
    for d in dirs:
      for n in names:
        if (d / n).is_file():
          return d / n
    where = self.weights_dir or "--weights_dir (unset)"
    raise CodecUnavailable(
        f"{self.name} q{quality}: weights not found offline; put {zoo_name} (from {url}) or "
        f"{names[1]} in {where}, or pass --untrained_learned for random weights")

  def _net(self, quality: int, device: str | None = None):
    device = device or self.device
    if (quality, device) in self._nets:
      return self._nets[quality, device]
    import torch  # pylint: disable=g-import-not-at-top
    from data_prep import torchvision_stub  # pylint: disable=g-import-not-at-top
    torchvision_stub.install()
    from compressai import zoo  # pylint: disable=g-import-not-at-top
    from compressai.zoo.pretrained import load_pretrained  # pylint: disable=g-import-not-at-top
    build = zoo.cheng2020_anchor if self.arch.endswith("anchor") else zoo.cheng2020_attn
    if self.untrained:
      torch.manual_seed(int(quality))
      net = build(quality=int(quality), metric=self.metric, pretrained=False)
    else:
      path = self.weight_file(quality)
      sd = torch.load(path, map_location="cpu", weights_only=True)
      if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
      if not isinstance(sd, dict):
        raise ValueError(f"{path}: not a state_dict")
      net = type(build(quality=int(quality), metric=self.metric)).from_state_dict(
          load_pretrained(sd))
    net.eval().update(force=True)  # CDF tables built on CPU, whatever the device
    if device != "cpu":
      torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
      net = net.to(device)
    self._nets[quality, device] = net
    return net

  def compress(self, img, quality, device: str | None = None):
    """(strings, shape, padding) of compressai's compress on the zero-padded image."""
    import torch  # pylint: disable=g-import-not-at-top
    import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
    _check(img)
    h, w = img.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0
    ph, pw = -h % 64, -w % 64
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)  # as compressai's examples: centred
    net = self._net(quality, device)
    with torch.no_grad():
      out = net.compress(F.pad(x, pad, mode="constant", value=0).to(next(net.parameters()).device))
    return out["strings"], out["shape"], pad

  def decompress(self, strings, shape, pad, size, quality, device: str | None = None):
    """The uint8 HxWx3 image (`size` = (H, W)) that compressai decodes from `strings`."""
    import torch  # pylint: disable=g-import-not-at-top
    (h, w), (l, _, t, _) = size, pad
    with torch.no_grad():
      x_hat = self._net(quality, device).decompress(strings, shape)["x_hat"]
    x_hat = x_hat[0, :, t:t + h, l:l + w].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return np.floor(x_hat.astype(np.float64) * 255 + 0.5).astype(np.uint8)

  def __call__(self, img, quality):
    strings, shape, pad = self.compress(img, quality)
    bits = 8.0 * sum(len(s) for group in strings for s in group)
    return Coded(self.decompress(strings, shape, pad, img.shape[:2], quality), bits)

  def cross_device(self, img, quality) -> dict:
    """Encodes `img` on this codec's device and on CPU, decodes each bitstream on both:
    {same_bitstream, portable (the device's bitstream decodes on CPU to the device's own
    decode), pixels_differ (of that comparison), max_abs_diff}."""
    strings, shape, pad = self.compress(img, quality)
    cpu_strings = self.compress(img, quality, "cpu")[0]
    here = self.decompress(strings, shape, pad, img.shape[:2], quality)
    on_cpu = self.decompress(strings, shape, pad, img.shape[:2], quality, "cpu")
    diff = np.abs(here.astype(int) - on_cpu)
    return {"same_bitstream": strings == cpu_strings,
            "portable": bool(np.array_equal(here, on_cpu)),
            "pixels_differ": int(diff.any(-1).sum()), "max_abs_diff": int(diff.max())}


PLACEHOLDERS = ("{input}", "{output}", "{bitstream}", "{quality}")


class ExternalCodec:
  """A command template run without a shell; placeholders are replaced inside each argument.

  `{input}` (PNG the command reads), `{output}` (PNG it must write: the decoded image),
  optional `{bitstream}` (a file it writes; its size gives the bpp, else bpp is NaN) and
  `{quality}`. HiFiC runs this way (qualities 1/2/3 = low/med/high). The template and the
  program are checked here, before any image is coded: a broken quote or an unknown
  `{placeholder}` is a ValueError, a program that is not on PATH (or not an executable file)
  CodecUnavailable.
  """

  def __init__(self, name, template):
    where = f"--external {name}: template {template!r}"
    try:
      argv = shlex.split(template)
    except ValueError as e:
      raise ValueError(f"{where}: {e}") from None
    joined = " ".join(argv)
    unknown = sorted(set(re.findall(r"\{[A-Za-z_]\w*\}", joined)) - set(PLACEHOLDERS))
    if unknown:
      raise ValueError(f"{where}: unknown placeholder {unknown[0]} (known: "
                       f"{' '.join(PLACEHOLDERS)})")
    if not argv or "{input}" not in joined or "{output}" not in joined:
      raise ValueError(f"{where}: must contain {{input}} and {{output}}")
    prog = argv[0]
    if os.sep in prog:
      if not (Path(prog).is_file() and os.access(prog, os.X_OK)):
        raise CodecUnavailable(f"external:{name}: program {prog} is not an executable file")
    elif shutil.which(prog) is None:
      raise CodecUnavailable(f"external:{name}: program {prog!r} not found on PATH")
    self.name, self.argv = name, argv

  def describe(self) -> str:
    return f"external command {Path(self.argv[0]).name}"

  def __call__(self, img, quality):
    _check(img)
    with tempfile.TemporaryDirectory(prefix="csr_ext_") as d:
      subs = {"{input}": str(Path(d) / "input.png"), "{output}": str(Path(d) / "output.png"),
              "{bitstream}": str(Path(d) / "bitstream.bin"), "{quality}": str(int(quality))}
      Image.fromarray(img).save(subs["{input}"])
      argv = []
      for a in self.argv:
        for k, v in subs.items():
          a = a.replace(k, v)
        argv.append(a)
      _run(argv, f"external:{self.name}")
      out_path, bs = Path(subs["{output}"]), Path(subs["{bitstream}"])
      if not out_path.is_file():
        raise RuntimeError(f"external:{self.name}: the command wrote no {{output}} image")
      with Image.open(out_path) as im:
        out = np.asarray(im.convert("RGB"))
      bits = 8.0 * bs.stat().st_size if bs.is_file() else float("nan")
    if out.shape != img.shape:
      raise RuntimeError(f"external:{self.name}: decoded size {out.shape} != input {img.shape}")
    return Coded(out, bits)


def make_codec(name: str, options: CodecOptions = CodecOptions()):
  """The codec object for a codec name; CodecUnavailable if it cannot run here."""
  fam = tasks.family(name)
  if fam == "none":
    return NoneCodec()
  if fam == "jpeg":
    return PillowCodec("JPEG")
  if fam == "webp":
    return PillowCodec("WEBP")
  if fam == "hevc":
    if options.hm_encoder or options.hm_decoder:
      if not (options.hm_encoder and options.hm_decoder):
        raise CodecUnavailable("hevc: give both --hm_encoder and --hm_decoder")
      return ReferenceCodec("HM", options.hm_encoder, options.hm_decoder, options.hm_config,
                            options.full_range)
    return X265Codec(options.full_range)
  if fam == "vvc":
    if not (options.vtm_encoder and options.vtm_decoder):
      raise CodecUnavailable("vvc: no VVC encoder installed (VTM EncoderApp/DecoderApp); pass "
                             "--vtm_encoder and --vtm_decoder")
    return ReferenceCodec("VTM", options.vtm_encoder, options.vtm_decoder, options.vtm_config,
                          options.full_range)
  if fam == "cheng2020":
    return CompressAICodec(name, options.weights_dir, options.untrained, options.device)
  ext = dict(options.external)
  short = name[len("external:"):]
  if short not in ext:
    raise CodecUnavailable(f"{name}: no command template; pass --external {short}='CMD {{input}} "
                           "{output} [{bitstream}] [{quality}]'")
  return ExternalCodec(short, ext[short])


def probe_image(size: int = 128) -> np.ndarray:
  """A fixed, image-like uint8 probe (smooth colour ramps plus seeded texture) for the
  start-up cross-device check, which runs before any input is read."""
  yy, xx = np.mgrid[0:size, 0:size] / size
  base = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * (xx + yy))], -1) * 200 + 20
  noise = np.random.default_rng(0).normal(0, 12, base.shape)
  return np.clip(base + noise, 0, 255).round().astype(np.uint8)


def check_available(name: str, qualities, options: CodecOptions):
  """Fails fast (CodecUnavailable) before any work: binaries, templates, learned weights, and
  for learned codecs on a GPU, that a bitstream encoded there decodes identically on CPU (the
  records would otherwise hold a decode nobody else can reproduce)."""
  codec = make_codec(name, options)
  if isinstance(codec, CompressAICodec):
    if not options.untrained:
      for q in qualities:
        codec.weight_file(q)
    if options.device != "cpu":
      for q in qualities:
        r = codec.cross_device(probe_image(), q)
        if not r["portable"]:
          raise CodecUnavailable(
              f"{name} q{q}: a bitstream encoded on {options.device} decodes differently on "
              f"CPU ({r['pixels_differ']} pixels differ, max {r['max_abs_diff']}); use "
              "--device cpu")
  return codec
