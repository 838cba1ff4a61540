"""Per codec and quality on Kodak: bpp and PSNR of the degraded LR vs the clean LR, images/s.

  .venv/bin/python -m benchmarks.codecs_bench [--num_images 6] [--scale 4] [--learned]

LR = MATLAB-bicubic x`scale` downscale of each HR (data_prep.imresize). Asserts that bpp and
PSNR strictly fall as quality worsens for every codec with meaningful weights (the compressai
row, with random weights offline, is timed only).
"""

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from csr_jax.data import tasks
from data_prep import codecs, images, imresize

GRID = {"jpeg": (10, 20, 30, 40), "webp": (5, 10, 20, 30, 40), "hevc": (32, 37, 42, 47)}


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--kodak_dir", type=Path, default=REPO.parent / "shared" / "datasets" / "kodak")
  p.add_argument("--num_images", type=int, default=6)
  p.add_argument("--scale", type=int, default=4)
  p.add_argument("--learned", action="store_true",
                 help="also time cheng2020-anchor-mse q1 (untrained) on one image")
  args = p.parse_args()
  files = sorted(args.kodak_dir.glob("*.png"))[:args.num_images]
  t = time.perf_counter()
  lrs = [imresize.downscale_uint8(images.prepare_hr(f, args.scale, 0), args.scale) for f in files]
  prep_s = time.perf_counter() - t
  print(f"{len(lrs)} Kodak images, LR {lrs[0].shape[1]}x{lrs[0].shape[0]} (x{args.scale}); "
        f"load+imresize {len(lrs) / prep_s:.1f} images/s")
  print(f"{'codec':<22}{'q':>4}{'bpp':>9}{'PSNR dB':>9}{'images/s':>10}")
  grid = dict(GRID)
  if args.learned:
    grid["cheng2020-anchor-mse"] = (1,)
  failures = []
  for name, qualities in grid.items():
    untrained = name.startswith("cheng2020")
    codec = codecs.make_codec(name, codecs.CodecOptions(untrained=untrained))
    print(f"{name}: {codec.describe()}")
    subset = lrs[:1] if untrained else lrs
    # Imports, model builds and first-call setup stay outside the timing.
    codec(subset[0][:64, :64] if untrained else subset[0], qualities[0])
    rows, total_s = [], 0.0
    for q in tasks.worse_order(name, qualities):
      t = time.perf_counter()
      outs = [codec(lr, q) for lr in subset]
      dt = time.perf_counter() - t
      total_s += dt
      bpp = float(np.mean([o.bits / (lr.shape[0] * lr.shape[1]) for o, lr in zip(outs, subset)]))
      psnr = float(np.mean([codecs.psnr(o.image, lr) for o, lr in zip(outs, subset)]))
      rows.append((q, bpp, psnr))
      note = "  (untrained weights: timing only)" if untrained else ""
      print(f"{name:<22}{q:>4}{bpp:>9.4f}{psnr:>9.2f}{len(subset) / dt:>10.2f}{note}")
    print(f"{name:<22}{'all':>4}{'':>18}{len(subset) * len(qualities) / total_s:>10.2f}")
    if not untrained:
      for (q0, b0, p0), (q1, b1, p1) in zip(rows, rows[1:]):
        if not (b1 < b0 and p1 < p0):
          failures.append(f"{name}: q{q0} -> q{q1} bpp {b0:.4f} -> {b1:.4f}, "
                          f"PSNR {p0:.2f} -> {p1:.2f}")
  if failures:
    raise SystemExit("not strictly monotone:\n" + "\n".join(failures))
  print("bpp and PSNR strictly decrease with quality for every codec: OK")


if __name__ == "__main__":
  main()
