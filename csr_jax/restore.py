"""Restore a folder of anyone's images: `python -m csr_jax.restore`.

  python -m csr_jax.restore --checkpoint RUN --input photos/ --output restored/ [--codec jpeg]
      [--config configs/ucip.py:small] [--tile 256 --tile_overlap 32] [--self_ensemble]
  python -m csr_jax.restore --preset promptcir-ntire24 --weights model_best.pth \
      --weights model_best2.pth --input lq/ --output out/

The model comes from --config, else --model/--variant, else what the checkpoint records (a
training workdir, a params directory of `convert import` or `zoo import`), else the preset's
published variant; .pth files (`--weights`) are converted on the fly, strictly and with
`weights_only`. Several --checkpoint/--weights are a checkpoint ensemble (same model, outputs
averaged). The protocol is the family's (`FamilySpec.inference`: padding, tiles), or the preset's
(`FamilySpec.presets`), with the flags on top.

--input is a file, a folder (walked recursively; files with an image extension Pillow knows,
hidden ones and --output left out) or a glob; each image is written to --output as PNG at its
relative path with the extension replaced by .png (`x.jpg.png` when two inputs would share a
name). Rules for what an image is:
  - EXIF orientation is applied first; the first frame of an animation is restored.
  - Colour: RGB as is; CMYK, YCbCr, palette and others are converted to RGB (a palette with
    transparency to RGBA). Grayscale (1-bit, 8-bit, 16-bit) goes through the model as three
    equal channels and is written back as grayscale, the BT.601 luma of the output.
  - Depth: 16-bit PNGs (grayscale through Pillow; RGB, RGBA and gray + alpha through PyAV,
    the prep extra, else at 8 bits) are fed at full precision (value / 65535) and written as
    16-bit; everything else is 8-bit.
  - Alpha (RGBA, LA, transparent palettes) is not restored: kept as is at x1, and upscaled with
    Pillow's bicubic for SR models; colours are restored as stored (straight alpha).
  - The ICC profile is carried over; other metadata (EXIF included) is not.
Tiles (--tile, overlap 32 unless given): --tile_blend mean (the default, as the official
scripts) averages overlapping tiles; stitch cuts each overlap in the middle, so a model with
receptive radius r and no image-wide statistics gives exactly its untiled output when
--tile_overlap >= 2 r. UCIP and PromptCIR normalise or pool over the whole image: any tiling
changes their output (the seam error; benchmarks/restore_memory.py measures it).
Each output is written through a temporary file and renamed, row bands as the model finishes
them (so with --tile, memory is bounded by the tile). A file that cannot be read or restored is
skipped with a one-line reason; `restore.csv` in --output lists every file (file, output, mode,
size, out_size, seconds, status). The exit status is 1 only when nothing was restored.
"""

import csv
import dataclasses
import io
import os
import struct
import sys
import time
import zlib

import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from csr_jax import cli

config_flags.DEFINE_config_file("config", None, "configs/<family>.py[:variant] (optional when "
                                "the checkpoint records its model).", lock_config=True)
flags.DEFINE_multi_string("checkpoint", [], "Training workdir, step dir or params directory "
                          "(repeat for a checkpoint ensemble).")
flags.DEFINE_multi_string("weights", [], "PyTorch .pth in the official layout (repeat for a "
                          "checkpoint ensemble).")
flags.DEFINE_string("model", None, "Model family, when neither --config nor the checkpoint "
                    "names it (e.g. promptcir).")
flags.DEFINE_string("variant", None, "Variant, with --model or a --preset.")
flags.DEFINE_string("preset", None, "A family's official test procedure, e.g. "
                    "promptcir-ntire24 (python -m csr_jax.zoo list shows them).")
flags.DEFINE_string("input", None, "Image file, folder or glob.")
flags.DEFINE_string("output", None, "Output folder.")
flags.DEFINE_string("codec", None, "Codec of the inputs (task-id families: its prompt), e.g. "
                    "jpeg; not needed by blind models.")
flags.DEFINE_integer("tile", None, "Tile size in input pixels (0: whole image); default: the "
                     "family's or preset's.")
flags.DEFINE_integer("tile_overlap", None, "Tile overlap; default: the family's, or 32 with "
                     "--tile.")
flags.DEFINE_enum("tile_blend", None, ["mean", "stitch"], "mean: average overlaps (the official "
                  "scripts); stitch: cut mid-overlap (exact for local models, overlap >= 2 x "
                  "receptive radius).")
flags.DEFINE_integer("tile_batch", 1, "Tiles per forward call.")
flags.DEFINE_bool("self_ensemble", False, "Average the 8 flips/transposes (x8).")
flags.DEFINE_bool("ema", False, "Use the EMA parameters of a training checkpoint.")
flags.DEFINE_bool("skip_existing", False, "Leave outputs that already exist.")
flags.mark_flags_as_required(["input", "output"])
FLAGS = flags.FLAGS

DEFAULT_OVERLAP = 32
BIG = 2 ** 22  # input pixels past which an untiled run may not fit in memory: say --tile
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as Pillow's convert('L')


# ---- the model ----

@dataclasses.dataclass
class Restorer:
  """A model (or checkpoint ensemble) bound to its protocol and task id: image in, image out."""
  ref: object
  protocol: object
  predictors: list
  codec: str | None = None
  task_id: int | None = None
  sources: tuple = ()
  tile_batch: int = 1

  def stream(self, rgb):
    """(row0, row1, float32 [(row1 - row0) * f, W * f, 3]) bands of the restored image, for
    an [H, W, 3] float image in [0, 1], top to bottom (`inference.stream`)."""
    from csr_jax import inference
    fns = self.predictors if len(self.predictors) > 1 else self.predictors[0]
    for row0, row1, out in inference.stream(fns, np.asarray(rgb, np.float32)[None],
                                            self.protocol, tile_batch=self.tile_batch):
      yield row0, row1, out["image"][0]

  def __call__(self, rgb):
    """The whole restored image, float32 [H * f, W * f, 3] in [0, 1]."""
    bands = [out for _, _, out in self.stream(rgb)]
    return np.concatenate(bands, axis=0)


def find_preset(name: str):
  """(family name, Preset) of a preset named by any registered family."""
  from csr_jax import models
  known = {}
  for family in models.FAMILIES:
    for pname, preset in models.spec(family).presets.items():
      known[pname] = (family, preset)
  if name not in known:
    raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(known)) or 'none'}")
  return known[name]


def _ref(config, model, variant, preset, from_files: bool):
  """The model the flags name, or None to take what the checkpoint records."""
  from csr_jax import weights
  if config is not None:
    return weights.ref_from_config(config)
  if model:
    if not variant:
      raise ValueError("--model needs --variant")
    return weights.ref(model, variant)
  if preset is not None and (from_files or variant):
    return weights.ref(preset[0], variant or preset[1].variant)
  if variant:
    raise ValueError("--variant needs --model (or --preset)")
  return None


def build(*, checkpoints=(), weights_files=(), config=None, model=None, variant=None,
          preset=None, codec=None, tile=None, tile_overlap=None, tile_blend=None,
          self_ensemble=False, ema=False, tile_batch=1) -> Restorer:
  """The Restorer the CLI flags describe (see the module docstring)."""
  from flax import nnx
  from csr_jax import checkpoint, family, inference, paths, train, weights
  found = find_preset(preset) if preset else None
  r = _ref(config, model, variant, found, bool(weights_files))
  sources = [*checkpoints, *weights_files]
  if not sources:
    raise ValueError("no weights: give --checkpoint RUN (a workdir or params directory) or "
                     "--weights FILE.pth")
  for f in weights_files:
    if not paths.resolve(f).is_file():
      raise FileNotFoundError(f"--weights {f}: no such file (a directory goes to --checkpoint)")
  loaded = []
  for src in sources:
    item = "params"
    if ema:
      if paths.resolve(src).is_file() or not checkpoint.has_ema(src):
        raise ValueError(f"--ema: {src} holds no EMA parameters (not a training checkpoint)")
      item = "ema"
    use = r
    if use is None and loaded and paths.resolve(src).is_file():
      use = loaded[0][0]  # a .pth beside a checkpoint that names the model
    got, m = weights.model_from(src, use, item=item)
    if loaded and (got.name, got.variant, dict(got.overrides)) != (
        loaded[0][0].name, loaded[0][0].variant, dict(loaded[0][0].overrides)):
      raise ValueError(f"{src}: holds {got.name}/{got.variant}, but {sources[0]} holds "
                       f"{loaded[0][0].name}/{loaded[0][0].variant}: an ensemble needs one model")
    if loaded and got.task_ids != loaded[0][0].task_ids:
      raise ValueError(f"{src}: its task table {got.task_ids} differs from {sources[0]}'s "
                       f"{loaded[0][0].task_ids}")
    loaded.append((got, m))
  r = loaded[0][0]
  spec = r.spec
  if found is not None:
    if spec.name != found[0]:
      raise ValueError(f"preset {preset} is for {found[0]}, but {sources[0]} holds {r.name}")
    if len(sources) != found[1].checkpoints:
      raise ValueError(f"preset {preset} averages {found[1].checkpoints} checkpoints "
                       f"({found[1].about}); got {len(sources)}")
    protocol = found[1].inference
  elif config is not None:
    protocol = train.protocols(config, spec)[0]
  else:
    protocol = spec.inference
  changes = {}
  if tile is not None:
    changes["tile"] = tile
    if tile_overlap is None and tile and tile != protocol.tile:
      changes["tile_overlap"] = min(DEFAULT_OVERLAP, tile // 2)
  if tile_overlap is not None:
    changes["tile_overlap"] = tile_overlap
  if tile_blend is not None:
    changes["tile_blend"] = tile_blend
  if self_ensemble:
    changes["ensemble"] = "x8"
  protocol = inference.check_protocol(dataclasses.replace(protocol, **changes))
  tid = None
  if r.task_ids is not None:
    table = dict(r.task_ids)
    if not codec:
      raise ValueError(f"--codec is needed: {r.name} {r.variant} takes a prompt per codec "
                       f"(its task table: {', '.join(table)})")
    try:
      tid = family.task_id(table, codec)
    except KeyError:
      raise KeyError(f"--codec {codec!r}: not in the task table of {sources[0]} (known: "
                     f"{', '.join(table)})") from None
  elif codec:
    print(f"note: --codec {codec} ignored: {r.name} {r.variant} is blind (no task ids)",
          file=sys.stderr)
  graphdef, _, rest = nnx.split(loaded[0][1], nnx.Param, ...)
  forward = inference.make_forward(spec, graphdef, rest,
                                   dtype=config.model.get("dtype") if config else None)
  predictors = [inference.Predictor(forward, nnx.to_pure_dict(nnx.state(m, nnx.Param)),
                                    tid or 0) for _, m in loaded]
  return Restorer(r, protocol, predictors, codec if tid is not None else None, tid,
                  tuple(paths.display(paths.resolve(s)) for s in sources), tile_batch)


# ---- reading images ----

@dataclasses.dataclass
class Picture:
  """A decoded, upright image: `pixels` [H, W, C] uint8 or uint16 (C: 1 gray, 2 gray + alpha,
  3 RGB, 4 RGBA), the input's mode as Pillow names it, and its ICC profile."""
  pixels: np.ndarray
  mode: str
  icc: bytes | None = None

  @property
  def gray(self) -> bool:
    return self.pixels.shape[2] in (1, 2)

  @property
  def alpha(self):
    return self.pixels[..., -1] if self.pixels.shape[2] in (2, 4) else None

  @property
  def maxval(self) -> int:
    return 65535 if self.pixels.dtype == np.uint16 else 255

  def rgb(self) -> np.ndarray:
    """The colour channels as float32 [H, W, 3] in [0, 1] (gray repeated)."""
    c = self.pixels[..., :1] if self.gray else self.pixels[..., :3]
    out = c.astype(np.float32) / np.float32(self.maxval)
    return np.repeat(out, 3, axis=2) if self.gray else out


# EXIF orientation -> (transpose first, flip rows, flip columns) of the stored pixels.
_ORIENT = {1: (False, False, False), 2: (False, False, True), 3: (False, True, True),
           4: (False, True, False), 5: (True, False, False), 6: (True, False, True),
           7: (True, True, True), 8: (True, True, False)}


def orient(a: np.ndarray, orientation: int) -> np.ndarray:
  """Stored [H, W, C] pixels turned upright for an EXIF orientation (as ImageOps.exif_transpose)."""
  transpose, flip_rows, flip_cols = _ORIENT.get(orientation, _ORIENT[1])
  if transpose:
    a = np.swapaxes(a, 0, 1)
  if flip_rows:
    a = a[::-1]
  if flip_cols:
    a = a[:, ::-1]
  return np.ascontiguousarray(a)


def _png_depth(head: bytes) -> tuple[int, int] | None:
  """(bit depth, colour type) from a PNG header, else None."""
  if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
    return head[24], head[25]
  return None


# 16-bit PNG colour types Pillow reads at 8 bits: type -> (mode, PyAV format, channels kept).
_PNG16 = {2: ("RGB;16", "rgb48le", [0, 1, 2]), 6: ("RGBA;16", "rgba64le", [0, 1, 2, 3]),
          4: ("LA;16", "rgba64le", [0, 3])}


def _decode_av(data: bytes, color_type: int) -> np.ndarray:
  """A 16-bit colour or gray + alpha PNG through PyAV (ffmpeg), at full depth."""
  import av
  _, fmt, keep = _PNG16[color_type]
  with av.open(io.BytesIO(data)) as container:
    frame = next(container.decode(video=0))
    return np.ascontiguousarray(frame.to_ndarray(format=fmt)[..., keep])


def read(path) -> Picture:
  """The image at `path` under the module docstring's rules; ValueError with the reason."""
  from PIL import Image, UnidentifiedImageError
  from csr_jax import paths
  where = paths.resolve(path)
  data = where.read_bytes()
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.load()
      mode, icc = im.mode, im.info.get("icc_profile")
      orientation = im.getexif().get(0x0112, 1)
      png = _png_depth(data[:32])
      if png and png[0] == 16 and png[1] in _PNG16:
        try:
          pixels, mode = _decode_av(data, png[1]), _PNG16[png[1]][0]
        except ImportError:  # no PyAV: Pillow's 8 bits
          pixels = np.asarray(im.convert({2: "RGB", 4: "LA", 6: "RGBA"}[png[1]]))
      elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im)
        if a.dtype != np.uint16 and (a.min() < 0 or a.max() > 65535):
          raise ValueError(f"{mode} values outside 0..65535")
        pixels = a.astype(np.uint16)[..., None]
      elif mode == "F":
        raise ValueError("floating-point images are not supported")
      elif mode in ("1", "L"):
        pixels = np.asarray(im.convert("L"))[..., None]
      elif mode in ("LA", "La"):
        pixels = np.asarray(im.convert("LA"))
      elif mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info):
        pixels = np.asarray(im.convert("RGBA"))
      else:
        pixels = np.asarray(im.convert("RGB"))
  except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
    raise ValueError(f"cannot read the image ({cli.one_line(exc)})") from None
  if min(pixels.shape[:2]) < 1:
    raise ValueError("empty image")
  return Picture(orient(pixels, orientation), mode, icc)


# ---- writing PNGs in bands ----

def _chunk(kind: bytes, data: bytes) -> bytes:
  return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


class PngWriter:
  """A PNG written a band of rows at a time (8/16-bit gray, gray + alpha, RGB, RGBA), each row
  with the adaptive filter libpng's heuristic picks (least sum of absolute filtered bytes)."""

  COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}

  def __init__(self, f, width: int, height: int, channels: int, bits: int, icc=None):
    self.f, self.width, self.height, self.rows = f, width, height, 0
    self.bpp = channels * bits // 8
    self.prev = np.zeros(width * self.bpp, np.uint8)
    self.z = zlib.compressobj(6)
    f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(
        ">IIBBBBB", width, height, bits, self.COLOR_TYPE[channels], 0, 0, 0)))
    if icc:
      f.write(_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))

  def _filter(self, rows: np.ndarray) -> bytes:
    cur = rows.astype(np.int16)
    up = np.concatenate([self.prev[None].astype(np.int16), cur[:-1]], axis=0)
    left = np.zeros_like(cur)
    left[:, self.bpp:] = cur[:, :-self.bpp]
    upleft = np.zeros_like(cur)
    upleft[:, self.bpp:] = up[:, :-self.bpp]
    p = left + up - upleft
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    cands = np.stack([cur, cur - left, cur - up, cur - (left + up) // 2, cur - paeth]) & 0xFF
    cost = np.minimum(cands, 256 - cands).sum(axis=2)
    best = np.argmin(cost, axis=0)
    chosen = cands[best, np.arange(len(rows))].astype(np.uint8)
    return np.concatenate([best.astype(np.uint8)[:, None], chosen], axis=1).tobytes()

  def write(self, band: np.ndarray):
    """Appends rows: [n, width, channels] uint8, or uint16 for a 16-bit file."""
    rows = band.astype(">u2").view(np.uint8) if band.dtype == np.uint16 else band
    rows = rows.reshape(len(band), -1)
    for k in range(0, len(rows), 64):
      part = rows[k:k + 64]
      data = self.z.compress(self._filter(part))
      self.prev = part[-1]
      if data:
        self.f.write(_chunk(b"IDAT", data))
    self.rows += len(rows)

  def close(self):
    if self.rows != self.height:
      raise ValueError(f"PNG: wrote {self.rows} of {self.height} rows")
    self.f.write(_chunk(b"IDAT", self.z.flush()) + _chunk(b"IEND", b""))


# ---- one image ----

def _quantise(v: np.ndarray, maxval: int) -> np.ndarray:
  """[0, 1] float -> uint8/uint16, rounded and clipped (the official test scripts' order)."""
  q = np.clip(np.round(np.asarray(v, np.float64) * maxval), 0, maxval)
  return q.astype(np.uint16 if maxval > 255 else np.uint8)


def _upscaled_alpha(alpha: np.ndarray, f: int) -> np.ndarray:
  from PIL import Image
  if f == 1:
    return alpha
  h, w = alpha.shape
  return np.asarray(Image.fromarray(alpha).resize((w * f, h * f), Image.Resampling.BICUBIC))


def restore_image(restorer: Restorer, pic: Picture, target) -> tuple[int, int]:
  """Restores `pic` into the PNG `target` (written through a temporary file, then renamed);
  returns the output (width, height)."""
  h, w = pic.pixels.shape[:2]
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
  alpha = pic.alpha
  writer = up_alpha = None
  try:
    with tmp.open("wb") as fh:
      for row0, row1, out in restorer.stream(pic.rgb()):
        f = out.shape[1] // w
        if writer is None:
          channels = (1 if pic.gray else 3) + (alpha is not None)
          writer = PngWriter(fh, w * f, h * f, channels, 16 if pic.maxval > 255 else 8, pic.icc)
          up_alpha = _upscaled_alpha(alpha, f) if alpha is not None else None
        for k in range(0, len(out), 64):  # small pieces: float64 copies of a band are large
          piece = out[k:k + 64]
          if pic.gray:
            piece = (piece.astype(np.float64) @ np.asarray(LUMA))[..., None]
          piece = _quantise(piece, pic.maxval)
          if up_alpha is not None:
            r = row0 * f + k
            piece = np.concatenate([piece, up_alpha[r:r + len(piece), :, None]], axis=2)
          writer.write(piece)
      writer.close()
    tmp.replace(target)
  finally:
    if tmp.exists():
      tmp.unlink()
  return writer.width, writer.height


# ---- a batch ----

def _is_glob(text: str) -> bool:
  return any(c in text for c in "*?[")


def _walk(folder, skip: str | None):
  """Files under `folder` (recursive iterdir: epath has no local `**`), without hidden files
  and folders or anything under `skip`."""
  for child in folder.iterdir():
    if child.name.startswith(".") or (skip and (os.fspath(child) + os.sep).startswith(skip)):
      continue
    if child.is_dir():
      yield from _walk(child, skip)
    elif child.is_file():
      yield child


def collect(spec: str, output=None) -> tuple[object, list]:
  """(base folder, sorted input files) of a file, folder or glob; a folder keeps the files
  whose extension Pillow knows, skipping hidden ones and anything under `output`."""
  from PIL import Image
  from csr_jax import paths
  where = paths.resolve(spec)
  if where.is_file():
    return where.parent, [where]
  if where.is_dir():
    known = {e.lower() for e in Image.registered_extensions()}
    out = os.fspath(paths.resolve(output)) + os.sep if output else None
    return where, sorted(f for f in _walk(where, out) if f.suffix.lower() in known)
  if _is_glob(spec):
    parts = os.fspath(where).split(os.sep)
    k = next(i for i, part in enumerate(parts) if _is_glob(part))
    return paths.resolve(os.sep.join(parts[:k]) or os.sep), paths.glob_files(where)
  raise FileNotFoundError(f"--input {spec}: no such file, folder or pattern")


def output_names(base, files) -> list[str]:
  """Each input's output path relative to --output: its own with '.png' for its extension, or
  with '.png' appended when two inputs would share a name."""
  from csr_jax import paths
  rels = [paths.relpath(f, base) for f in files]
  stems = [paths.with_suffix(r, ".png") for r in rels]
  return [s if stems.count(s) == 1 else r + ".png" for r, s in zip(rels, stems)]


CSV_FIELDS = ("file", "output", "mode", "size", "out_size", "seconds", "status")


def restore_files(restorer: Restorer, base, files, output, *, skip_existing: bool = False,
                  progress: bool = True) -> list[dict]:
  """Restores every file into `output` (see the module docstring); returns the CSV rows, also
  appended to `output/restore.csv` one image at a time."""
  from tqdm import tqdm
  from csr_jax import paths
  out = paths.resolve(output)
  out.mkdir(parents=True, exist_ok=True)
  rows, warned = [], False
  start, done = time.perf_counter(), 0
  with (out / "restore.csv").open("w") as fh, tqdm(
      total=len(files), unit="img", file=sys.stderr, disable=not progress,
      dynamic_ncols=True) as bar:
    writer = csv.DictWriter(fh, CSV_FIELDS)
    writer.writeheader()
    fh.flush()
    for src, name in zip(files, output_names(base, files)):
      rel, target, t0 = paths.relpath(src, base), out / name, time.perf_counter()
      row = {"file": rel, "output": name, "mode": "", "size": "", "out_size": "",
             "seconds": "", "status": "ok"}
      if skip_existing and target.exists():
        row["status"] = "exists"
      else:
        try:
          pic = read(src)
          row["mode"] = pic.mode
          row["size"] = f"{pic.pixels.shape[1]}x{pic.pixels.shape[0]}"
          if not restorer.protocol.tile and pic.pixels[..., 0].size > BIG and not warned:
            bar.write(f"note: {rel} is {row['size']}, restored untiled; if memory runs out, "
                      "pass --tile 256", file=sys.stderr)
            warned = True
          ow, oh = restore_image(restorer, pic, target)
          row["out_size"] = f"{ow}x{oh}"
          done += 1
        except (ValueError, OSError, MemoryError, RuntimeError) as exc:
          row["status"] = f"skipped: {cli.one_line(exc)}"
          bar.write(f"skipped {rel}: {cli.one_line(exc)}", file=sys.stderr)
      row["seconds"] = f"{time.perf_counter() - t0:.3f}"
      writer.writerow(row)
      fh.flush()
      rows.append(row)
      rate = done / max(time.perf_counter() - start, 1e-9)
      bar.set_postfix_str(f"{rate:.2f} restored/s", refresh=False)
      bar.update(1)
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from csr_jax import logging_utils, paths
  logging_utils.quiet_libraries()
  base, files = collect(FLAGS.input, FLAGS.output)
  if not files:
    raise FileNotFoundError(f"--input {FLAGS.input}: no images found")
  restorer = build(checkpoints=FLAGS.checkpoint, weights_files=FLAGS.weights,
                   config=FLAGS.config, model=FLAGS.model, variant=FLAGS.variant,
                   preset=FLAGS.preset, codec=FLAGS.codec, tile=FLAGS.tile,
                   tile_overlap=FLAGS.tile_overlap, tile_blend=FLAGS.tile_blend,
                   self_ensemble=FLAGS.self_ensemble, ema=FLAGS.ema,
                   tile_batch=FLAGS.tile_batch)
  p, r = restorer.protocol, restorer.ref
  print(f"{r.name} {r.variant} from {', '.join(restorer.sources)}"
        f"{f', codec {restorer.codec} (prompt {restorer.task_id})' if restorer.codec else ''}; "
        f"tile {p.tile or 'off'}{f'/{p.tile_overlap} {p.tile_blend}' if p.tile else ''}, "
        f"ensemble {p.ensemble}; {len(files)} image(s)", file=sys.stderr)
  t0 = time.perf_counter()
  rows = restore_files(restorer, base, files, FLAGS.output, skip_existing=FLAGS.skip_existing)
  ok = sum(r["status"] == "ok" for r in rows)
  there = sum(r["status"] == "exists" for r in rows)
  seconds = time.perf_counter() - t0
  print(f"restored {ok} of {len(rows)} image(s) in {seconds:.1f} s "
        f"({ok / max(seconds, 1e-9):.2f} images/s) to {paths.display(paths.resolve(FLAGS.output))}"
        f"; {len(rows) - ok - there} skipped{f', {there} already there' if there else ''}; "
        "restore.csv", file=sys.stderr)
  return 0 if ok or there else 1


if __name__ == "__main__":
  app.run(cli.run(main))
