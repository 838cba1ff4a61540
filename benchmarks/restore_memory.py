"""Peak memory of `python -m csr_jax.restore` on a 12-megapixel photo, and the seam error tiles
leave in a model with image-wide statistics.

  .venv/bin/python -m benchmarks.restore_memory [--size 3000x4000] [--tile 256]
      [--tile_overlap 32] [--checkpoint RUN] [--no-seam]

The photo is Kodak kodim01 resized (bicubic) to --size (height x width) and saved as a JPEG,
like a phone picture. Without --checkpoint the model is UCIP `small` with fresh weights in a
params directory (memory does not depend on the values). Prints the restore CLI's peak resident
memory (the child process's ru_maxrss), its wall time, the output's size, and for comparison
the size of one float32 copy of the output, which the pre-streaming tiler held several of
(target: peak < 4 GB). Then (unless --no-seam) restores the whole kodim01 (768x512) untiled and
with --tile/--tile_overlap, and prints how far the tiled output is from the untiled one (UCIP
normalises and pools over the whole image, so any tiling changes its output).
"""

import argparse
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KODAK = Path(os.environ.get("CSR_SHARED", REPO.parent / "shared")) / "datasets" / "kodak"


def fresh_params(where: Path) -> Path:
  from csr_jax import checkpoint, weights
  r = weights.ref("ucip", "small")
  return checkpoint.write_params(where / "ucip_small", weights.init_params(r, 0),
                                 r.meta(source="fresh init (seed 0)"))


def restore(args, checkpoint, inp, out, tile):
  cmd = [sys.executable, "-m", "csr_jax.restore", "--checkpoint", str(checkpoint), "--input",
         str(inp), "--output", str(out), "--codec", "jpeg", "--tile", str(tile),
         "--tile_overlap", str(args.tile_overlap)]
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  t0 = time.perf_counter()
  res = subprocess.run(cmd, env=env, capture_output=True, text=True)
  if res.returncode:
    sys.exit(f"restore failed ({res.returncode}): {res.stderr[-2000:]}")
  return time.perf_counter() - t0


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--size", default="3000x4000", help="height x width of the photo")
  ap.add_argument("--tile", type=int, default=256)
  ap.add_argument("--tile_overlap", type=int, default=32)
  ap.add_argument("--checkpoint", default=None)
  ap.add_argument("--no-seam", dest="seam", action="store_false")
  args = ap.parse_args()
  from PIL import Image
  h, w = (int(v) for v in args.size.split("x"))
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    checkpoint = Path(args.checkpoint) if args.checkpoint else fresh_params(tmp)
    (tmp / "photo").mkdir()
    with Image.open(KODAK / "kodim01.png") as im:
      im.convert("RGB").resize((w, h), Image.Resampling.BICUBIC).save(
          tmp / "photo" / "photo.jpg", quality=90)
    seconds = restore(args, checkpoint, tmp / "photo", tmp / "out", args.tile)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    png = tmp / "out" / "photo.png"
    with open(png, "rb") as f:  # the IHDR: Pillow refuses to open more than 179 MP
      ow, oh = struct.unpack(">II", f.read(24)[16:24])
    f32 = oh * ow * 3 * 4 / 2**30
    print(f"restore {w}x{h} JPEG -> {ow}x{oh} PNG ({png.stat().st_size / 2**20:.0f} MiB), "
          f"tile {args.tile}/{args.tile_overlap}: peak RSS {peak:.2f} GiB, {seconds:.0f} s "
          f"(one float32 copy of the output: {f32:.2f} GiB)")
    print(f"target < 4 GB: {'met' if peak * 2**30 < 4e9 else 'MISSED'}")
    if args.seam:
      (tmp / "kodak").mkdir()
      (tmp / "kodak" / "kodim01.png").symlink_to(KODAK / "kodim01.png")
      restore(args, checkpoint, tmp / "kodak", tmp / "whole", 0)
      restore(args, checkpoint, tmp / "kodak", tmp / "tiled", args.tile)
      a, b = (np.asarray(Image.open(tmp / d / "kodim01.png"), np.float64)
              for d in ("whole", "tiled"))
      mse = np.mean((a - b) ** 2)
      print(f"seam error, kodim01 tile {args.tile}/{args.tile_overlap} vs untiled (uint8): max "
            f"{np.abs(a - b).max():.0f} levels, mean {np.abs(a - b).mean():.3f}, PSNR "
            f"{10 * np.log10(255 ** 2 / mse) if mse else float('inf'):.2f} dB")


if __name__ == "__main__":
  main()
