"""How often CISR's blind blocking detector (csr_jax/layers/blocking.py) finds the right grid.

  .venv/bin/python -m benchmarks.blocking_rates [--crops 4] [--sizes 48 128]

Each Kodak image is encoded whole (Pillow JPEG / WebP at CISR's qualities) and cut into
`--crops` random crops per size, so crop origins fall anywhere on the codec grid; the
uncompressed image gives the clean crops. Prints, per codec and quality, the share of crops
whose period is right (JPEG 8, WebP 4, clean none) and whose period and phase are both right.
"""

import argparse
import io
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from csr_jax.layers.blocking import detect_grid

REPO = Path(__file__).resolve().parents[1]
CASES = ([("clean", 0, 0)] + [("JPEG", q, 8) for q in (10, 20, 30, 40, 50)]
         + [("WEBP", q, 4) for q in (5, 10, 20, 30, 40)])


def decoded(img: np.ndarray, fmt: str, quality: int) -> np.ndarray:
  if fmt == "clean":
    return img
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format=fmt, quality=quality)
  buf.seek(0)
  with Image.open(buf) as im:
    return np.asarray(im.convert("RGB"))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--kodak_dir", type=Path, default=REPO.parent / "shared" / "datasets" / "kodak")
  p.add_argument("--crops", type=int, default=4, help="random crops per image and size")
  p.add_argument("--sizes", type=int, nargs="+", default=[48, 128])
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args()
  files = sorted(a.kodak_dir.glob("kodim*.png"))
  rng = np.random.default_rng(a.seed)
  images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
  spots = {s: [(i, rng.integers(0, im.shape[0] - s + 1), rng.integers(0, im.shape[1] - s + 1))
               for i, im in enumerate(images) for _ in range(a.crops)] for s in a.sizes}
  detect = jax.jit(detect_grid)
  print(f"{len(files)} Kodak images x {a.crops} crops per size; right period / period+phase")
  print(f"{'case':<10}" + "".join(f"{f'{s}x{s}':>16}" for s in a.sizes))
  for fmt, q, period in CASES:
    dec = [decoded(im, fmt, q) for im in images]
    row = f"{fmt.lower() + (f' q{q}' if q else ''):<10}"
    for s in a.sizes:
      x = np.stack([dec[i][t:t + s, l:l + s] for i, t, l in spots[s]]).astype(np.float32) / 255
      got, pc, pr = (np.asarray(v) for v in detect(x))
      ok = got == period
      if period:
        tops, lefts = (np.array([sp[k] for sp in spots[s]]) for k in (1, 2))
        phase = ok & (pc == -lefts % period) & (pr == -tops % period)
      else:
        phase = ok
      row += f"{100 * ok.mean():>9.0f}% /{100 * phase.mean():>4.0f}%"
    print(row)


if __name__ == "__main__":
  main()
