"""Prep throughput at DF2K's size and a projection for DF2K x the UCIP grid.

  .venv/bin/python -m benchmarks.prep_bench [--num_images 4] [--workers 2] [--learned]

HR images: Kodak photos resized (Pillow bicubic) to 2040x1360, DF2K's typical HR size, so the
x4 LR is 510x340 (DF2K's LR is about 510x350). Prints:
1. per-image work every record set pays once (HR load, MATLAB-bicubic LR, HR and LR PNG) and,
   per codec and quality, the record's own work (encode + decode + degraded-LR PNG +
   serialisation), as images/s on one core, from CPU time (process time: every step is single
   threaded, and CPU time does not grow when other jobs share the cores, as on the 2-core
   development machine);
2. the same `python -m data_prep.prepare` command on the local process pool and on the Beam
   DirectRunner with the same worker count (wall time, startup included);
3. DF2K (3,450 images) x the 23 UCIP settings: one core's time and the wall time on N workers.
VVC (VTM) and HiFiC cannot run here; their per-image seconds can be given with --assume, else
the projection names them as missing. Cheng2020 runs with untrained weights only
(`--untrained_learned`): the network work and the autoregressive coding loop are the same as
with trained weights, the bitstream lengths (and so the entropy coder's share) are not.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]

from csr_jax.data import records
from data_prep import grids
from data_prep import codecs
from data_prep import images
from data_prep import imresize
from data_prep import shards

HR_SIZE = (2040, 1360)
DF2K = 3450
MEASURED = {"jpeg": (10, 20, 30, 40), "webp": (5, 10, 20, 30, 40), "hevc": (32, 37, 42, 47),
            "none": (0,)}
LEARNED = ("cheng2020-anchor-mse", (1, 4))  # q1-3 share one width, q4 the larger one


def make_hr(kodak: Path, n: int, folder: Path) -> list[Path]:
  out = []
  for f in sorted(kodak.glob("*.png"))[:n]:
    with Image.open(f) as im:
      im = im.convert("RGB")
      if im.height > im.width:
        im = im.transpose(Image.Transpose.ROTATE_90)
      p = folder / f.name
      im.resize(HR_SIZE, Image.Resampling.BICUBIC).save(p)
      out.append(p)
  return out


def per_image(paths_, scale):
  """(seconds per image of the shared work, [(hr, clean LR)])."""
  t, pairs = time.process_time(), []
  for p in paths_:
    hr = images.prepare_hr(p, scale, 0)
    lr = imresize.downscale_uint8(hr, scale)
    shards.png_bytes(hr), shards.png_bytes(lr)
    pairs.append((hr, lr))
  return (time.process_time() - t) / len(paths_), pairs


def per_record(codec, pairs, q):
  """Seconds per image of one setting: what `shards.examples` adds per record."""
  hr_png = shards.png_bytes(pairs[0][0])
  t = time.process_time()
  for hr, lr in pairs:
    out = codec(lr, q)
    lr_png = shards.png_bytes(out.image)
    records.encode_example({"hr_png": hr_png, "lr_clean_png": lr_png, "lr_png": lr_png,
                            "codec": "x", "quality": q, "bpp": 1.0})
  return (time.process_time() - t) / len(pairs)


def run_prepare(hr_dir, out, workers, runner, grid):
  cmd = [sys.executable, "-m", "data_prep.prepare", "--hr_dir", str(hr_dir), "--out", str(out),
         "--scale", "4", "--num_shards", str(max(workers, 1) * 2), "--workers", str(workers),
         "--min_size", "0", "--name", "bench"] + [a for c in grid for a in ("--codec", c)]
  if runner == "beam":
    cmd += ["--runner", "beam", "--beam_pipeline_options=--runner=DirectRunner "
            f"--direct_num_workers={workers} --direct_running_mode=multi_processing"]
  t = time.perf_counter()
  subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
  return time.perf_counter() - t


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--kodak_dir", type=Path, default=REPO.parent / "shared" / "datasets" / "kodak")
  p.add_argument("--num_images", type=int, default=4)
  p.add_argument("--workers", type=int, default=2)
  p.add_argument("--learned", action="store_true",
                 help="also time Cheng2020 q1 and q4 (untrained) on one 510x340 LR each")
  p.add_argument("--assume", action="append", default=[], metavar="CODEC=SECONDS",
                 help="seconds per image and setting for a codec that cannot run here "
                      "(vvc, external:hific), used in the projection")
  p.add_argument("--nodes", default="1,2,16,64,256", help="worker counts of the projection")
  args = p.parse_args()
  tmp = Path(tempfile.mkdtemp(prefix="prep_bench_"))
  try:
    (tmp / "hr").mkdir()
    hrs = make_hr(args.kodak_dir, args.num_images, tmp / "hr")
    shared_s, pairs = per_image(hrs, 4)
    lh, lw = pairs[0][1].shape[:2]
    print(f"{len(hrs)} Kodak images resized to {HR_SIZE[0]}x{HR_SIZE[1]} HR, LR {lw}x{lh} (x4); "
          f"one core, torch threads 1; CPU seconds (process time)")
    print(f"per image, once: load + MATLAB bicubic + HR/LR PNG  {shared_s:7.2f} s "
          f"({1 / shared_s:.2f} images/s)")
    print(f"{'codec':<24}{'q':>4}{'s/image':>10}{'images/s':>10}  note")
    cost = {}
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(1)
    for name, qs in MEASURED.items():
      codec = codecs.make_codec(name)
      codec(pairs[0][1][:64, :64], qs[0])
      for q in qs:
        cost[name, q] = per_record(codec, pairs, q)
        print(f"{name:<24}{q:>4}{cost[name, q]:>10.3f}{1 / cost[name, q]:>10.2f}  "
              f"{codec.describe().split(' (')[0]}")
    if args.learned:
      name, qs = LEARNED
      codec = codecs.make_codec(name, codecs.CodecOptions(untrained=True))
      for q in qs:
        codec(pairs[0][1][:64, :64], q)  # builds the net outside the timing
        cost[name, q] = per_record(codec, pairs[:1], q)
        print(f"{name:<24}{q:>4}{cost[name, q]:>10.1f}{1 / cost[name, q]:>10.4f}  "
              "untrained weights, one image")

    grid = ["jpeg:10,20,30,40", "hevc:32,37,42,47"]
    n_rec = 8
    print(f"\nend to end: {len(hrs)} images x {n_rec} settings ({' '.join(grid)}), "
          f"{args.workers} workers, {args.workers * 2} shards, process start included")
    walls = {}
    for runner in ("local", "beam"):
      walls[runner] = run_prepare(tmp / "hr", tmp / f"out_{runner}", args.workers, runner, grid)
      print(f"  {runner:<6} {walls[runner]:7.1f} s  {len(hrs) / walls[runner]:6.3f} images/s  "
            f"{len(hrs) * n_rec / walls[runner]:6.2f} records/s")
    same = all((tmp / "out_local" / f.name).read_bytes() == f.read_bytes()
               for f in (tmp / "out_beam").iterdir() if f.is_file())
    print(f"  beam output == local output byte for byte: {same}")
    m = json.loads((tmp / "out_local" / "manifest.json").read_text())
    record_bytes = sum(x["bytes"] for x in m["shards"]) / m["counts"]["records"]

    print(f"\nprojection: DF2K ({DF2K} images) x UCIP's 23 settings at x4 (LR {lw}x{lh})")
    assumed = dict(a.split("=", 1) for a in args.assume)
    per_setting, missing = [], []
    for codec, qs in grids.GRIDS["ucip"].items():
      for q in qs:
        if (codec, q) in cost:
          per_setting.append((codec, q, cost[codec, q],
                              "timed untrained" if codec in LEARNED else "timed"))
        elif codec.startswith("cheng2020") and (LEARNED[0], 1 if q < 4 else 4) in cost:
          # q1-3 share one network width, q4-6 the larger one; mse and ms-ssim share the
          # architecture, so their run time is the same.
          per_setting.append((codec, q, cost[LEARNED[0], 1 if q < 4 else 4],
                              f"as {LEARNED[0]} q{1 if q < 4 else 4}"))
        elif codec in assumed:
          per_setting.append((codec, q, float(assumed[codec]), "assumed (--assume)"))
        else:
          missing.append(f"{codec} q{q}")
    total = shared_s + sum(c for _, _, c, _ in per_setting)
    for codec in dict.fromkeys(c for c, _, _, _ in per_setting):
      rows = [r for r in per_setting if r[0] == codec]
      by_note = {}
      for _, q, _, note in rows:
        by_note.setdefault(note, []).append(f"q{q}")
      notes = "; ".join(f"{','.join(qs)} {note}" for note, qs in by_note.items())
      print(f"  {codec:<26}{len(rows):>3} settings {sum(r[2] for r in rows):9.2f} s/image  "
            f"({notes})")
    print(f"  {'per image, once':<26}{'':>12}{shared_s:9.2f} s/image")
    print(f"  one core: {total:.1f} s/image, {DF2K * total / 3600:.1f} core-hours for DF2K; "
          f"output about {DF2K * 23 * record_bytes / 1e9:.0f} GB ({record_bytes / 1e6:.1f} MB per "
          "record, each with its HR PNG)")
    eff = (len(hrs) * (shared_s + sum(cost[c, q] for c in ("jpeg", "hevc") for q in
                                      MEASURED[c]))) / (walls["local"] * args.workers)
    print(f"  parallel efficiency measured end to end here (local pool, {args.workers} workers, "
          f"startup included): {eff:.2f}; the projection assumes 1.0 per worker")
    for n in (int(x) for x in args.nodes.split(",")):
      h = DF2K * total / n / 3600
      print(f"  {n:>5} workers: {h:10.1f} h wall ({h / 24:.1f} days)")
    if missing:
      print(f"  not included (cannot run here; give --assume CODEC=SECONDS): {', '.join(missing)}")
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  os.environ.setdefault("OMP_NUM_THREADS", "1")
  main()
