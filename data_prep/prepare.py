"""HR folder -> TFRecord shards of (HR, clean LR, degraded LR) for every codec and quality.

  python -m data_prep.prepare --hr_dir DIR --out DIR --scale 4 --codec jpeg:10,20 \
      --codec hevc:32,37 --num_shards 4 --workers 2 [--grid ucip|promptcir|cisr|promptsr]

Images (sorted relative paths) go round robin to shards; each spawned worker writes whole
shards, so a shard is written by one process. `--runner beam` runs the same per-image and
per-shard steps as an Apache Beam pipeline (data_prep/beam_runner.py) and writes the same
bytes. A re-run after a crash keeps the shards whose
`.done` checksum verifies, redoes the rest, then writes manifest.json atomically. Bad inputs
are skipped and reported (summary and manifest); the exit status is 1 only if no image was
usable.
"""

import argparse
import dataclasses
import hashlib
import os
import sys
import time

from csr_jax.data import tasks
from data_prep import grids
from data_prep import codecs
from data_prep import images
from data_prep import jobs
from data_prep import runner
from data_prep import shards

_coders = {}


def _codec(name: str, options: codecs.CodecOptions):
  """One codec object per process (compressai nets are cached inside it)."""
  if (name, options) not in _coders:
    _coders[name, options] = codecs.make_codec(name, options)
  return _coders[name, options]


def random_quality(seed: int, codec: str, source: str, lo: int, hi: int) -> int:
  """The quality `--random_quality codec:lo-hi` gives image `source`: a function of the seed,
  the codec and the image name only, so it does not depend on shards, workers or order."""
  h = hashlib.sha256(f"{seed}\0{codec}\0{source}".encode()).digest()
  return lo + int.from_bytes(h[:8], "little") % (hi - lo + 1)


@dataclasses.dataclass(frozen=True)
class Degrade:
  """Item (path, name) -> its records: HR, MATLAB-bicubic LR, then every codec setting."""
  hr_dir: str
  scale: int
  grid: tuple  # ((codec, (quality, ...)), ...)
  random: tuple  # ((codec, low, high), ...): one quality per image
  seed: int
  encoders: tuple  # ((codec, implementation), ...)
  options: codecs.CodecOptions
  min_size: int
  crop: bool

  def hash_fields(self) -> dict:
    """What the records depend on (not where the input folder is; the device only when it is
    not the CPU, so outputs made before `--device` existed still resume)."""
    out = {k: v for k, v in dataclasses.asdict(self).items() if k != "hr_dir"}
    if out["options"]["device"] == "cpu":
      del out["options"]["device"]
    return out

  def __call__(self, item):
    from data_prep import imresize  # pylint: disable=g-import-not-at-top
    rel, name = item
    hr = images.prepare_hr(jobs.join(self.hr_dir, rel), self.scale, self.min_size, self.crop)
    lr = imresize.downscale_uint8(hr, self.scale)
    settings = [(c, q, False) for c, qs in self.grid for q in qs] + [
        (c, random_quality(self.seed, c, name, lo, hi), True) for c, lo, hi in self.random]
    encoders = dict(self.encoders)
    degraded = []
    for c, q, _ in settings:
      try:
        coded = _codec(c, self.options)(lr, q)
      except (RuntimeError, ValueError, OSError) as e:
        raise images.BadImage(f"codec failed: {c} q{q}: {(str(e).splitlines() or [''])[0]}"
                              ) from None
      degraded.append((c, q, coded.image, coded.bits, encoders[c]))
    made = shards.examples(name, self.scale, hr, lr, degraded)
    for (_, summary), (_, _, rnd) in zip(made, settings):
      if rnd:
        summary["random"] = True
    return made, []


def resolve_grid(grid_name, codec_args) -> list[tuple[str, tuple[int, ...]]]:
  """--grid first, then each --codec adds a codec or replaces its qualities."""
  grid = dict(grids.GRIDS[grid_name]) if grid_name else {}
  for arg in codec_args or ():
    name, qs = tasks.parse_codec_arg(arg)
    grid[name] = qs
  return [(n, tuple(q)) for n, q in grid.items()]


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="python -m data_prep.prepare", description=__doc__.split(
      "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--hr_dir", required=True, type=jobs.input_path,
                 help="folder of lossless HR images (local, or gs://... for Beam workers)")
  jobs.add_output_flags(p, split="train", min_size=64)
  p.add_argument("--codec", action="append", default=[],
                 help="NAME:Q1,Q2 (jpeg, webp, hevc, vvc, cheng2020-{anchor,attn}-{mse,ms-ssim}, "
                      "external:<name>) or none; repeatable")
  p.add_argument("--random_quality", action="append", default=[], metavar="NAME:LOW-HIGH",
                 help="one quality per image drawn from LOW..HIGH (seeded by --seed, recorded "
                      "per record), e.g. jpeg:10-70; repeatable")
  p.add_argument("--seed", type=int, default=0, help="seed of --random_quality")
  p.add_argument("--grid", choices=sorted(grids.GRIDS), help="a paper's codec grid")
  p.add_argument("--skip_unavailable", action="store_true",
                 help="drop grid codecs that cannot run here instead of stopping")
  p.add_argument("--max_images", type=int, default=None, help="use the first K files only")
  p.add_argument("--hm_encoder"), p.add_argument("--hm_decoder")
  p.add_argument("--hm_config", help="HM encoder cfg, e.g. encoder_intra_main.cfg")
  p.add_argument("--vtm_encoder"), p.add_argument("--vtm_decoder")
  p.add_argument("--vtm_config", help="VTM encoder cfg, e.g. encoder_intra_vtm.cfg")
  p.add_argument("--weights_dir", help="compressai weights (zoo file names or NAME-Q.pth)")
  p.add_argument("--untrained_learned", action="store_true",
                 help="random compressai weights (plumbing tests only)")
  p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                 help="torch device of the learned codecs' nets (the entropy coder stays on "
                      "CPU); cuda is checked at start: its bitstreams must decode the same on CPU")
  p.add_argument("--external", action="append", default=[], metavar="NAME=TEMPLATE",
                 help="command for external:NAME with {input} {output} [{bitstream}] [{quality}]")
  p.add_argument("--yuv_range", choices=("full", "limited"), default="full",
                 help="BT.601 range of the YUV fed to HEVC/VVC encoders")
  p.add_argument("--sleep_per_image", type=float, default=0.0, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  runner.check_flags(args)
  if args.max_images is not None and args.max_images < 1:
    jobs.fail(f"--max_images {args.max_images}: must be >= 1 (leave it out for all files)")
  try:
    codecs.check_device(args.device)
  except codecs.CodecUnavailable as e:
    jobs.fail(str(e))
  return args


def _options(args) -> codecs.CodecOptions:
  ext = []
  for e in args.external:
    name, sep, template = e.partition("=")
    if not sep or not name:
      jobs.fail(f"--external {e!r}: expected NAME=TEMPLATE")
    ext.append((name, template))
  return codecs.CodecOptions(
      hm_encoder=args.hm_encoder, hm_decoder=args.hm_decoder, hm_config=args.hm_config,
      vtm_encoder=args.vtm_encoder, vtm_decoder=args.vtm_decoder, vtm_config=args.vtm_config,
      weights_dir=args.weights_dir, untrained=args.untrained_learned, external=tuple(ext),
      full_range=args.yuv_range == "full", device=args.device)


def _settings(args):
  """(fixed grid, random entries), each codec once, qualities range-checked."""
  try:
    grid = resolve_grid(args.grid, args.codec)
    random = [tasks.parse_random_arg(a) for a in args.random_quality]
  except ValueError as e:
    jobs.fail(str(e))
  given = {tasks.parse_codec_arg(a)[0] for a in args.codec}
  for name, _, _ in random:
    if name in given:
      jobs.fail(f"--random_quality {name}: {name} is also given with --codec; use one")
  names = [r[0] for r in random]
  if len(set(names)) != len(names):
    jobs.fail("--random_quality: a codec given twice")
  grid = [(n, qs) for n, qs in grid if n not in names]
  if not grid and not random:
    jobs.fail("give at least one --codec NAME:Q1,Q2, --random_quality or --grid")
  return grid, random


def _check_codecs(args, grid, random, options):
  """{codec: implementation} of the codecs that can run; the others stop the run or, with
  --skip_unavailable, are dropped with a note."""
  describe = {}
  wanted = grid + [(n, tuple(range(lo, hi + 1))) for n, lo, hi in random]
  for name, qs in wanted:
    try:
      describe[name] = codecs.check_available(name, qs, options).describe()
    except ValueError as e:
      jobs.fail(str(e))
    except codecs.CodecUnavailable as e:
      if not args.skip_unavailable:
        jobs.fail(f"{e} (or pass --skip_unavailable)")
      print(f"dropping {name}: {e}", file=sys.stderr)
  grid = [g for g in grid if g[0] in describe]
  random = [r for r in random if r[0] in describe]
  if not grid and not random:
    jobs.fail("no codec of the grid can run here")
  return grid, random, describe


def _warnings(args, grid, random, describe) -> list[str]:
  """The paper's HEVC is HM: say so when x265 stands in for it (--grid ucip, or UCIP's QPs)."""
  out = []
  paper = args.grid == "ucip" or ("hevc", grids.GRIDS["ucip"]["hevc"]) in grid
  uses_hevc = any(n == "hevc" for n, _ in grid) or any(r[0] == "hevc" for r in random)
  if paper and uses_hevc and describe["hevc"].startswith("x265"):
    out.append(f"hevc runs on {describe['hevc'].split(' (')[0]}; the UCIP paper used the HM "
               "reference encoder (pass --hm_encoder/--hm_decoder to match it)")
  return out


def main(argv=None) -> dict:
  args = parse_args(argv)
  options = _options(args)
  grid, random = _settings(args)
  grid, random, describe = _check_codecs(args, grid, random, options)
  warnings = _warnings(args, grid, random, describe)
  for w in warnings:
    print(f"warning: {w}", file=sys.stderr)
  items, problems = jobs.list_files(args.hr_dir)
  if args.max_images:
    items = items[:args.max_images]
  if not items and not problems:
    jobs.fail(f"--hr_dir {args.hr_dir}: no files")
  maker = Degrade(os.fspath(args.hr_dir), args.scale, tuple(grid), tuple(random), args.seed,
                  tuple(describe.items()), options, args.min_size, args.crop_to_multiple)
  todo, dones = jobs.plan(args.out, args.name, args.split, args.num_shards, items, maker,
                          maker.hash_fields(), args.sleep_per_image)
  t0 = time.time()
  dones, lost = runner.execute(todo, dones, args)
  grid_info = [{"codec": n, "qualities": list(qs), "implementation": describe[n]}
               for n, qs in grid] + [
                   {"codec": n, "random_quality": [lo, hi], "seed": args.seed,
                    "implementation": describe[n]} for n, lo, hi in random]
  manifest = jobs.build_manifest(
      name=args.name, split=args.split, scale=args.scale, num_shards=args.num_shards,
      grid=grid_info, dones=dones, problems=problems, lost=lost,
      num_sources=len(items) + len(problems),
      options={"min_size": args.min_size, "crop_to_multiple": args.crop_to_multiple,
               "yuv_range": "full" if options.full_range else "limited",
               "untrained_learned": options.untrained, "grid": args.grid,
               "device": options.device},
      warnings=warnings, tool="data_prep.prepare")
  return jobs.finish(args.out, manifest, t0)


if __name__ == "__main__":
  main()
