"""HR folder -> TFRecord shards of (HR, clean LR, degraded LR) for every codec and quality.

  python -m data_prep.prepare --hr_dir DIR --out DIR --scale 4 --codec jpeg:10,20 \
      --codec hevc:32,37 --num_shards 4 --workers 2 [--grid ucip|promptcir|cisr]

Images (sorted relative paths) go round robin to shards; each spawned worker writes whole
shards, so a shard is written by one process. A re-run after a crash keeps the shards whose
`.done` checksum verifies, redoes the rest, then writes manifest.json atomically.
"""

import argparse
import dataclasses
import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import queue
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from csr_jax.data import tasks
from data_prep import codecs
from data_prep import images
from data_prep import shards

FORMAT = "csr_jax-tfrecord-v1"


@dataclasses.dataclass(frozen=True)
class ShardJob:
  hr_dir: str
  out_dir: str
  shard_file: str
  sources: tuple[str, ...]
  scale: int
  grid: tuple[tuple[str, tuple[int, ...]], ...]
  options: codecs.CodecOptions
  min_size: int
  crop: bool
  config_hash: str
  sleep_per_image: float = 0.0


def png_bytes(img: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, "PNG", compress_level=6)
  return buf.getvalue()


_progress = None
_parent = None


def _init_worker(progress_queue):
  global _progress, _parent
  _progress, _parent = progress_queue, os.getppid()
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)  # workers are the parallelism


def _orphaned() -> bool:
  return _parent is not None and os.getppid() != _parent


def process_shard(job: ShardJob) -> dict:
  """Writes one shard and returns its `.done` info."""
  from data_prep import imresize  # pylint: disable=g-import-not-at-top
  out_dir = Path(job.out_dir)
  coders = {name: codecs.make_codec(name, job.options) for name, _ in job.grid}
  writer = shards.ShardWriter(out_dir, job.shard_file)
  recs, skipped = [], []
  try:
    for src in job.sources:
      if _orphaned():
        raise SystemExit("parent process died")
      try:
        hr = images.prepare_hr(Path(job.hr_dir) / src, job.scale, job.min_size, job.crop)
        lr = imresize.downscale_uint8(hr, job.scale)
        done = []
        for name, qualities in job.grid:
          for q in qualities:
            coded = coders[name](lr, q)
            done.append((name, q, coded))
      except images.BadImage as e:
        skipped.append({"source": src, "reason": str(e)})
      except (RuntimeError, ValueError, OSError) as e:
        skipped.append({"source": src, "reason": f"codec failed: {str(e).splitlines()[0]}"})
      else:
        hr_png, lr_png = png_bytes(hr), png_bytes(lr)
        (hh, hw), (lh, lw) = hr.shape[:2], lr.shape[:2]
        for name, q, coded in done:
          bpp = coded.bits / (lh * lw)
          nbytes = writer.write({
              "hr_png": hr_png, "lr_clean_png": lr_png, "lr_png": png_bytes(coded.image),
              "codec": name, "quality": int(q), "task_id": tasks.task_id(name),
              "scale": job.scale, "bpp": float(bpp), "source": src, "hr_height": hh,
              "hr_width": hw, "lr_height": lh, "lr_width": lw})
          recs.append({"source": src, "codec": name, "quality": int(q), "bpp": bpp,
                       "psnr": codecs.psnr(coded.image, lr), "bytes": nbytes})
      if job.sleep_per_image:
        time.sleep(job.sleep_per_image)
      if _progress is not None:
        _progress.put(1)
    if _orphaned():
      raise SystemExit("parent process died")
    return writer.commit({"config_hash": job.config_hash, "records": recs, "skipped": skipped,
                          "sources": list(job.sources)})
  except BaseException:
    writer.abort()
    raise


def list_sources(hr_dir: Path) -> list[str]:
  """Sorted relative paths of the regular files under hr_dir (hidden names excluded)."""
  if not hr_dir.is_dir():
    raise SystemExit(f"--hr_dir {hr_dir}: not a directory")
  out = []
  for p in hr_dir.rglob("*"):
    rel = p.relative_to(hr_dir)
    if p.is_file() and not any(part.startswith(".") for part in rel.parts):
      out.append(rel.as_posix())
  return sorted(out)


def resolve_grid(grid_name, codec_args) -> list[tuple[str, tuple[int, ...]]]:
  """--grid first, then each --codec adds a codec or replaces its qualities."""
  grid = dict(tasks.GRIDS[grid_name]) if grid_name else {}
  for arg in codec_args or ():
    name, qs = tasks.parse_codec_arg(arg)
    grid[name] = qs
  if not grid:
    raise SystemExit("give at least one --codec NAME:Q1,Q2 or a --grid")
  return [(n, tuple(q)) for n, q in grid.items()]


def summarize(manifest: dict) -> str:
  lines = [f"{'codec':<24}{'q':>5}{'records':>9}{'MB':>9}{'bpp':>9}{'PSNR':>8}"]
  def num(v, fmt):
    return format(v, fmt) if v is not None else "-".rjust(int(fmt.split(".")[0]))
  for s in manifest["stats"]:
    lines.append(f"{s['codec']:<24}{s['quality']:>5}{s['records']:>9}{s['bytes'] / 1e6:>9.2f}"
                 f"{num(s['mean_bpp'], '9.4f')}{num(s['mean_psnr'], '8.2f')}")
  c = manifest["counts"]
  total_mb = sum(s["bytes"] for s in manifest["shards"]) / 1e6
  lines.append(f"images {c['images']} of {c['sources']} files, records {c['records']}, "
               f"shards {len(manifest['shards'])}, {total_mb:.2f} MB")
  for s in manifest["skipped"]:
    lines.append(f"skipped {s['source']}: {s['reason']}")
  return "\n".join(lines)


def _stats(recs, grid):
  out = []
  for name, qualities in grid:
    for q in qualities:
      rs = [r for r in recs if r["codec"] == name and r["quality"] == q]
      finite = [r["psnr"] for r in rs if math.isfinite(r["psnr"])]
      out.append({"codec": name, "quality": q, "records": len(rs),
                  "bytes": sum(r["bytes"] for r in rs),
                  "mean_bpp": float(np.mean([r["bpp"] for r in rs])) if rs else float("nan"),
                  "mean_psnr": float(np.mean(finite)) if finite else float("nan")})
  return out


def _finite(x):
  """JSON has no inf/NaN: lossless PSNR and unknown bpp become null in the manifest."""
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_finite(v) for v in x]
  return x


def build_manifest(args, grid, options, sources, dones, describe) -> dict:
  recs = [dict(r, shard=i) for i, d in enumerate(dones) for r in d["records"]]
  skipped = sorted((s for d in dones for s in d["skipped"]), key=lambda s: s["source"])
  return _finite({
      "format": FORMAT, "name": args.name, "split": args.split, "scale": args.scale,
      "grid": [{"codec": n, "qualities": list(q), "task_id": tasks.task_id(n),
                "implementation": describe[n]} for n, q in grid],
      "task_ids": tasks.TASK_IDS, "features": list(shards.FEATURES),
      "num_shards": len(dones),
      "shards": [{k: d[k] for k in ("file", "index", "sha256", "num_records", "bytes")}
                 for d in dones],
      "counts": {"sources": len(sources), "images": len(sources) - len(skipped),
                 "skipped": len(skipped), "records": len(recs)},
      "stats": _stats(recs, grid),
      "skipped": skipped,
      "records": [{k: r[k] for k in ("source", "codec", "quality", "shard", "bpp", "psnr")}
                  for r in recs],
      "options": {"min_size": args.min_size, "crop_to_multiple": args.crop_to_multiple,
                  "yuv_range": "full" if options.full_range else "limited",
                  "untrained_learned": options.untrained},
  })


def _config_hash(job_fields: dict) -> str:
  return hashlib.sha256(json.dumps(job_fields, sort_keys=True).encode()).hexdigest()


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="python -m data_prep.prepare", description=__doc__.split(
      "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--hr_dir", required=True, type=Path, help="folder of lossless HR images")
  p.add_argument("--out", required=True, type=Path, help="output folder for shards + manifest")
  p.add_argument("--scale", type=int, default=4, help="downscale factor (1 = restoration only)")
  p.add_argument("--codec", action="append", default=[],
                 help="NAME:Q1,Q2 (jpeg, webp, hevc, vvc, cheng2020-{anchor,attn}-{mse,ms-ssim}, "
                      "external:<name>); repeatable")
  p.add_argument("--grid", choices=sorted(tasks.GRIDS), help="a paper's codec grid")
  p.add_argument("--skip_unavailable", action="store_true",
                 help="drop grid codecs that cannot run here instead of stopping")
  p.add_argument("--num_shards", type=int, default=1)
  p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                 help="worker processes (0 = run in this process)")
  p.add_argument("--name", default="csr", help="dataset name in shard file names")
  p.add_argument("--split", default="train")
  p.add_argument("--crop_to_multiple", action=argparse.BooleanOptionalAction, default=True,
                 help="crop HR top-left to a multiple of --scale (else such images are skipped)")
  p.add_argument("--min_size", type=int, default=64, help="skip HR images with a side below this")
  p.add_argument("--max_images", type=int, default=None, help="use the first K files only")
  p.add_argument("--hm_encoder"), p.add_argument("--hm_decoder")
  p.add_argument("--hm_config", help="HM encoder cfg, e.g. encoder_intra_main.cfg")
  p.add_argument("--vtm_encoder"), p.add_argument("--vtm_decoder")
  p.add_argument("--vtm_config", help="VTM encoder cfg, e.g. encoder_intra_vtm.cfg")
  p.add_argument("--weights_dir", help="compressai weights (zoo file names or NAME-Q.pth)")
  p.add_argument("--untrained_learned", action="store_true",
                 help="random compressai weights (plumbing tests only)")
  p.add_argument("--external", action="append", default=[], metavar="NAME=TEMPLATE",
                 help="command for external:NAME with {input} {output} [{bitstream}] [{quality}]")
  p.add_argument("--yuv_range", choices=("full", "limited"), default="full",
                 help="BT.601 range of the YUV fed to HEVC/VVC encoders")
  p.add_argument("--sleep_per_image", type=float, default=0.0, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.scale < 1 or args.num_shards < 1 or args.workers < 0:
    p.error("--scale and --num_shards must be >= 1, --workers >= 0")
  return args


def _options(args) -> codecs.CodecOptions:
  ext = []
  for e in args.external:
    name, sep, template = e.partition("=")
    if not sep or not name:
      raise SystemExit(f"--external {e!r}: expected NAME=TEMPLATE")
    ext.append((name, template))
  return codecs.CodecOptions(
      hm_encoder=args.hm_encoder, hm_decoder=args.hm_decoder, hm_config=args.hm_config,
      vtm_encoder=args.vtm_encoder, vtm_decoder=args.vtm_decoder, vtm_config=args.vtm_config,
      weights_dir=args.weights_dir, untrained=args.untrained_learned, external=tuple(ext),
      full_range=args.yuv_range == "full")


def _run_jobs(jobs, workers, total_images):
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  results = {}
  bar = tqdm(total=total_images, unit="img", desc="prep", file=sys.stderr)
  if workers == 0 or not jobs:
    for job in jobs:
      results[job.shard_file] = process_shard(job)
      bar.update(len(job.sources))
    bar.close()
    return results
  ctx = mp.get_context("spawn")
  q = ctx.Queue()
  with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(q,)) as pool:
    pending = {job.shard_file: pool.apply_async(process_shard, (job,)) for job in jobs}
    while pending:
      try:
        bar.update(q.get(timeout=0.2))
      except queue.Empty:
        pass
      for name in [n for n, r in pending.items() if r.ready()]:
        results[name] = pending.pop(name).get()  # re-raises a worker's error
    while True:
      try:
        bar.update(q.get_nowait())
      except queue.Empty:
        break
  bar.close()
  return results


def main(argv=None) -> dict:
  args = parse_args(argv)
  options = _options(args)
  try:
    grid = resolve_grid(args.grid, args.codec)
  except ValueError as e:
    raise SystemExit(str(e)) from None
  describe = {}
  for name, qs in list(grid):
    try:
      describe[name] = codecs.check_available(name, qs, options).describe()
    except (codecs.CodecUnavailable, ValueError) as e:
      if not args.skip_unavailable:
        raise SystemExit(f"{e} (or pass --skip_unavailable)") from None
      print(f"dropping {name}: {e}", file=sys.stderr)
      grid.remove((name, qs))
  if not grid:
    raise SystemExit("no codec of the grid can run here")
  sources = list_sources(args.hr_dir)[:args.max_images]
  if not sources:
    raise SystemExit(f"--hr_dir {args.hr_dir}: no files")
  args.out.mkdir(parents=True, exist_ok=True)
  n = args.num_shards
  common = {"format": FORMAT, "scale": args.scale, "grid": grid, "min_size": args.min_size,
            "crop": args.crop_to_multiple, "options": dataclasses.asdict(options),
            "name": args.name, "split": args.split, "describe": describe}
  jobs, dones = [], {}
  for i in range(n):
    file = shards.shard_name(args.name, args.split, i, n)
    srcs = tuple(sources[i::n])
    h = _config_hash(dict(common, shard=file, sources=srcs))
    try:
      done = shards.load_done(args.out, file, h)
    except ValueError as e:
      raise SystemExit(str(e)) from None
    if done is not None:
      dones[file] = done
    else:
      jobs.append(ShardJob(str(args.hr_dir), str(args.out), file, srcs, args.scale,
                           tuple(grid), options, args.min_size, args.crop_to_multiple, h,
                           args.sleep_per_image))
  if dones:
    print(f"resuming: {len(dones)} of {n} shards complete and verified", file=sys.stderr)
  t0 = time.time()
  dones.update(_run_jobs(jobs, args.workers, sum(len(j.sources) for j in jobs)))
  ordered = [dones[shards.shard_name(args.name, args.split, i, n)] for i in range(n)]
  manifest = build_manifest(args, grid, options, sources, ordered, describe)
  shards.write_manifest(args.out, manifest)
  print(summarize(manifest))
  print(f"done in {time.time() - t0:.1f} s -> {args.out / 'manifest.json'}")
  return manifest


if __name__ == "__main__":
  main()
