"""Existing HR/LR folder pairs -> the same TFRecord shards and manifest as `prepare`.

  python -m data_prep.ingest --hr_dir HR --lr LR_q10=jpeg:10 --lr LR_q20=jpeg:20 \
      --scale 1 --out data/live1 --name live1 --split test
  python -m data_prep.ingest --hr_dir HR --lr_dir LR --codec jpeg --quality 20 --scale 4 ...
  python -m data_prep.ingest --hr_dir HR --lr LR \
      --lr_pattern '(?P<name>.+)_(?P<codec>jpeg)_q(?P<quality>\\d+)' ...
  python -m data_prep.ingest --hr_dir HR --lr LR=jpeg:auto --scale 1 ...   # blind JPEG sets

For datasets whose degraded images already exist (UCSR, LIVE1/BSDS500/ICB JPEG sets, the NTIRE
2024 blind validation set). An LR file pairs with the HR file of the same relative path
without extension; `--lr_pattern` (a Python regex, full match on the LR path relative to its
folder without the extension) picks the HR name from group `name` and may carry the codec and
quality in groups `codec` and `quality`, which override the folder's. The HR goes through the
prep step's rules (`images.prepare_hr`: modes, EXIF, top-left crop to a multiple of the scale);
the LR must then be exactly HR / scale in size. `lr_clean` is the prep step's MATLAB-bicubic
downscale of the HR (the HR itself at scale 1). bpp: the LR file's size when it is the
bitstream itself (JPEG, WebP), NaN for lossless containers (PNG etc.), where the bitstream is
unknown. `jpeg:auto` (or `--quality auto`) reads each JPEG file's quality from its quantization
tables (libjpeg's standard tables scaled for one quality 1-100, as Pillow, OpenCV and MATLAB
write them), for blind sets whose qualities are not published. Bad pairs are skipped and
reported like bad images in `prepare`.
"""

import argparse
import dataclasses
import functools
import io
import os
import re
import time
from pathlib import Path

from PIL import Image

from csr_jax.data import tasks
from data_prep import images
from data_prep import jobs
from data_prep import runner
from data_prep import shards


def bitstream_format(head: bytes) -> str | None:
  """'JPEG'/'WEBP' when the file is itself a lossy bitstream, else None (bpp unknown)."""
  if head[:3] == b"\xff\xd8\xff":
    return "JPEG"
  if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
    return "WEBP"
  return None


AUTO = "auto"


@functools.cache
def _ijg_tables() -> dict:
  """{quality: quantization tables} of libjpeg's standard tables at qualities 1-100, read back
  from files Pillow writes (the tables differ at every quality)."""
  out = {}
  for q in range(1, 101):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG", quality=q)
    with Image.open(buf) as im:
      out[q] = [list(t) for _, t in sorted(im.quantization.items())]
  return out


def jpeg_quality(path) -> int:
  """The libjpeg quality a JPEG file was written with, from its quantization tables; BadImage
  when no single quality gives them (another encoder's tables, or a non-JPEG file)."""
  try:
    with Image.open(path) as im:
      tables = [list(t) for _, t in sorted(getattr(im, "quantization", {}).items())]
  except OSError as e:
    raise images.BadImage(f"unreadable ({e})") from None
  hits = [q for q, ref in _ijg_tables().items() if tables and ref[:len(tables)] == tables]
  if len(hits) != 1:
    raise images.BadImage("quality auto: quantization tables are not libjpeg's at one quality "
                          f"({'not a JPEG' if not tables else f'{len(hits)} matches'}); "
                          "give the quality")
  return hits[0]


@dataclasses.dataclass(frozen=True)
class Pairs:
  """Item (HR path, name, ((LR folder index, LR path, LR name, codec, quality), ...)) ->
  records, one per LR that fits its HR; the others are reported."""
  hr_dir: str
  lr_dirs: tuple
  scale: int
  min_size: int
  crop: bool

  def hash_fields(self) -> dict:
    return {"scale": self.scale, "min_size": self.min_size, "crop": self.crop}

  def __call__(self, item):
    from data_prep import imresize  # pylint: disable=g-import-not-at-top
    rel, name, lrs = item
    hr = images.prepare_hr(Path(self.hr_dir) / rel, self.scale, self.min_size, self.crop)
    clean = imresize.downscale_uint8(hr, self.scale)
    degraded, skipped, seen = [], [], {}
    for folder, lr_rel, lr_name, codec, q in lrs:
      path = Path(self.lr_dirs[folder]) / lr_rel
      try:
        lr = images.load_rgb(path)
        with open(path, "rb") as f:
          head = f.read(12)
        q = jpeg_quality(path) if q == AUTO else q
      except images.BadImage as e:
        skipped.append({"source": lr_name, "reason": str(e)})
        continue
      if (codec, q) in seen:
        skipped.append({"source": lr_name, "reason": f"second {codec} q{q} LR of {name} "
                                                     f"(first: {seen[codec, q]})"})
        continue
      seen[codec, q] = lr_name
      if lr.shape != clean.shape:
        (lh, lw), (hh, hw) = lr.shape[:2], hr.shape[:2]
        skipped.append({"source": lr_name, "reason": (
            f"size mismatch: LR {lw}x{lh} x{self.scale} != HR {name} {hw}x{hh} (after the "
            f"top-left crop to a multiple of {self.scale})")})
        continue
      fmt = bitstream_format(head)
      bits = 8.0 * os.path.getsize(path) if fmt else float("nan")
      degraded.append((codec, q, lr, bits, f"ingested {fmt or 'lossless'} file"))
    return shards.examples(name, self.scale, hr, clean, degraded), skipped


def parse_quality(codec: str | None, quality: str | None, what: str):
  """An int in the codec's range, 'auto' (JPEG only) or None; one-line error otherwise."""
  try:
    if codec is not None:
      tasks.family(codec)
    if quality is None or (quality == AUTO and codec == "jpeg"):
      return quality
    if codec is None:
      raise ValueError("a quality needs its codec")
    if not re.fullmatch(r"-?\d+", quality):
      raise ValueError(f"quality {quality!r} is not an integer (or auto, for jpeg)")
    rng = tasks.quality_range(codec)
    if rng and not rng[0] <= int(quality) <= rng[1]:
      raise ValueError(f"quality out of range (accepted: {rng[0]}-{rng[1]})")
  except ValueError as e:
    jobs.fail(f"{what} {codec}:{quality}: {e}")
  return int(quality)


def parse_lr(arg: str, codec: str | None, quality) -> tuple[str, str | None, int | str | None]:
  """'DIR=CODEC:Q' ('jpeg:auto' too) or 'DIR' (codec and quality from --codec/--quality or
  file names)."""
  folder, sep, spec = arg.rpartition("=")
  if sep and folder:
    c, colon, q = spec.rpartition(":")
    if not colon or "," in q:
      jobs.fail(f"--lr {arg!r}: expected DIR=CODEC:Q with one quality (e.g. LR=jpeg:20)")
    return str(jobs.user_path(folder)), c, parse_quality(c, q, "--lr")
  return str(jobs.user_path(arg)), codec, quality


def pair_up(hr_items, lr_specs, pattern) -> tuple[list, list[dict]]:
  """(items for `Pairs`, problems): LR files matched to HR names, each reason one line."""
  problems = []
  by_stem = {}
  for rel, name in hr_items:
    stem = os.path.splitext(rel)[0]
    if stem in by_stem:
      problems.append({"source": name, "reason": f"same name as {by_stem[stem][1]} without "
                                                 "the extension; LR files cannot tell them apart"})
      continue
    by_stem[stem] = (rel, name)
  pairs = {stem: {} for stem in by_stem}
  for i, (folder, codec, quality) in enumerate(lr_specs):
    lr_items, lr_problems = jobs.list_files(Path(folder))
    label = Path(folder).name or str(folder)
    problems += [dict(p, source=f"{label}/{p['source']}") for p in lr_problems]
    for lr_rel, lr_name in lr_items:
      shown = f"{label}/{lr_name}"
      m = pattern.fullmatch(os.path.splitext(lr_rel)[0])
      if not m:
        problems.append({"source": shown, "reason": f"does not match --lr_pattern "
                                                    f"{pattern.pattern!r}"})
        continue
      g = m.groupdict()
      stem = g.get("name") or m.group(0)
      c = (g.get("codec") or codec or "").lower()
      q = int(g["quality"]) if g.get("quality") else quality
      if not c or q is None:
        problems.append({"source": shown, "reason": "no codec or quality (give DIR=CODEC:Q, "
                                                    "--codec/--quality or pattern groups)"})
        continue
      try:
        tasks.family(c)
        if q != AUTO:
          tasks.check_qualities(c, (q,), "LR")
      except ValueError as e:
        problems.append({"source": shown, "reason": str(e)})
        continue
      if stem not in pairs:
        problems.append({"source": shown, "reason": f"no HR image named {stem}.*"})
        continue
      pairs[stem][shown] = (i, lr_rel, shown, c, q)
  items = []
  for stem, (rel, name) in sorted(by_stem.items(), key=lambda kv: kv[1][0]):
    if not pairs[stem]:
      problems.append({"source": name, "reason": "no LR file for it in any --lr folder"})
      continue
    items.append((rel, name, tuple(pairs[stem].values())))
  return items, problems


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="python -m data_prep.ingest", description=__doc__.split(
      "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--hr_dir", required=True, type=jobs.user_path,
                 help="folder of HR (ground truth) images")
  p.add_argument("--lr", action="append", default=[], metavar="DIR[=CODEC:Q]",
                 help="folder of degraded LR images, with its codec and quality; repeatable")
  p.add_argument("--lr_dir", help="one LR folder (same as --lr DIR)")
  p.add_argument("--codec", help="codec of --lr folders given without =CODEC:Q")
  p.add_argument("--quality", help="quality of --lr folders given without =CODEC:Q (an integer, "
                                   "or auto: JPEG quality from the quantization tables)")
  p.add_argument("--lr_pattern", default=r"(?P<name>.+)",
                 help="regex on each LR path (relative, no extension): group `name` = the HR "
                      "name, optional groups `codec`, `quality`")
  jobs.add_output_flags(p, split="test", min_size=0)
  args = p.parse_args(argv)
  runner.check_flags(args)
  if args.lr_dir:
    args.lr.append(args.lr_dir)
  if not args.lr:
    jobs.fail("give at least one --lr DIR[=CODEC:Q] (or --lr_dir)")
  if args.codec is not None or args.quality is not None:
    args.quality = parse_quality(args.codec, args.quality, "--codec/--quality")
  try:
    args.lr_pattern = re.compile(args.lr_pattern)
  except re.error as e:
    jobs.fail(f"--lr_pattern {args.lr_pattern!r}: {e}")
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  specs = [parse_lr(a, args.codec, args.quality) for a in args.lr]
  for folder, _, _ in specs:
    if not Path(folder).is_dir():
      jobs.fail(f"--lr {folder}: not a directory")
  hr_items, problems = jobs.list_files(args.hr_dir)
  num_sources = len(hr_items) + len(problems)
  items, pair_problems = pair_up(hr_items, specs, args.lr_pattern)
  problems = problems + pair_problems
  if not items and not problems:
    jobs.fail(f"--hr_dir {args.hr_dir}: no files")
  maker = Pairs(str(args.hr_dir), tuple(str(f) for f, _, _ in specs), args.scale, args.min_size,
                args.crop_to_multiple)
  todo, dones = jobs.plan(args.out, args.name, args.split, args.num_shards, items, maker,
                          maker.hash_fields())
  t0 = time.time()
  dones, lost = runner.execute(todo, dones, args)
  grid = {}
  for d in dones.values():
    for r in d["records"]:
      grid.setdefault(r["codec"], set()).add(r["quality"])
  grid_info = [{"codec": c, "qualities": sorted(qs), "implementation": "ingested LR files"}
               for c, qs in sorted(grid.items())]
  manifest = jobs.build_manifest(
      name=args.name, split=args.split, scale=args.scale, num_shards=args.num_shards,
      grid=grid_info, dones=dones, problems=problems, lost=lost, num_sources=num_sources,
      options={"min_size": args.min_size, "crop_to_multiple": args.crop_to_multiple,
               "lr": [{"dir": f, "codec": c, "quality": q} for f, c, q in specs],
               "lr_pattern": args.lr_pattern.pattern},
      warnings=[], tool="data_prep.ingest")
  return jobs.finish(args.out, manifest, t0)


if __name__ == "__main__":
  main()
