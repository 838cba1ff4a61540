"""Writes tests/assets/imresize_golden.npz: MATLAB imresize bicubic references in float64.

Independent of data_prep/imresize.py: numpy only, one explicit dense weight matrix per axis
built by looping over output pixels as MATLAB's imresize.m `contributions` does (1-based
indices, taps mirrored through aux = [1:n, n:-1:1], Keys cubic a=-0.5, kernel scaled by 1/scale
when shrinking, weights normalised per row), applied as out = Wh @ X @ Ww^T, height first.
The input is a real Kodak crop stored in the file. Run from the repo root:
  .venv/bin/python tests/assets/make_imresize_golden.py
"""

import math
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
KODAK = HERE.parents[2] / "shared" / "datasets" / "kodak" / "kodim23.png"


def keys_cubic(t):
  a = abs(t)
  if a <= 1:
    return 1.5 * a ** 3 - 2.5 * a ** 2 + 1
  if a <= 2:
    return -0.5 * a ** 3 + 2.5 * a ** 2 - 4 * a + 2
  return 0.0


def weight_matrix(n_in, n_out, scale):
  shrink = scale < 1
  width = 4.0 / scale if shrink else 4.0
  taps = math.ceil(width) + 2
  aux = list(range(1, n_in + 1)) + list(range(n_in, 0, -1))
  m = np.zeros((n_out, n_in))
  for x in range(1, n_out + 1):
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = math.floor(u - width / 2)
    ws = []
    for k in range(taps):
      d = u - (left + k)
      ws.append(scale * keys_cubic(scale * d) if shrink else keys_cubic(d))
    total = sum(ws)
    for k in range(taps):
      src = aux[(left + k - 1) % (2 * n_in)]
      m[x - 1, src - 1] += ws[k] / total
  return m


def resize(img, out_hw):
  h, w = img.shape[:2]
  mh = weight_matrix(h, out_hw[0], out_hw[0] / h)
  mw = weight_matrix(w, out_hw[1], out_hw[1] / w)
  return np.einsum("oh,hwc,pw->opc", mh, img, mw)


def main():
  with Image.open(KODAK) as im:
    crop = np.asarray(im.convert("RGB"))[200:248, 300:360]  # 48x60, multiple of 2, 3 and 4
  x = crop.astype(np.float64) / 255.0
  out = {"input_u8": crop, "input": x}
  cases = {"x2": (24, 30), "x3": (16, 20), "x4": (12, 15), "size_17x23": (17, 23),
           "up_2": (96, 120)}
  for k, hw in cases.items():
    out[k] = resize(x, hw)
    out[k + "_u8"] = np.floor(np.clip(resize(crop.astype(np.float64), hw), 0, 255) + 0.5
                              ).astype(np.uint8)
  np.savez_compressed(HERE / "imresize_golden.npz", **out)
  print("wrote", HERE / "imresize_golden.npz", sorted(out))


if __name__ == "__main__":
  main()
