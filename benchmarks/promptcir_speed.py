"""PromptCIR speed: the official-size forward at 128x128 and the official tiled inference of a
whole 768x512 Kodak image (JPEG q10), jitted, batch 1.

  .venv/bin/python benchmarks/promptcir_speed.py [--variant official] [--repeats 2]
      [--image kodim23] [--no_tiled] [--torch]

Weights come from the PyTorch twin's init (converted without a JAX random init, which saves
minutes of per-shape compiles on a small CPU). Tiled inference follows the official test script:
flip-pad to the next multiple of 32, tiles of 384 with 96 overlap, one model, one view (the
official ensemble of 2 checkpoints x 2 transposes costs 4x that). `--torch` also times the
twin's 128x128 forward for comparison.
"""

import argparse
import io
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from csr_jax import convert  # noqa: E402
from csr_jax.models import promptcir  # noqa: E402
from csr_jax.torch_twins import promptcir as twin  # noqa: E402
from tests.conftest import kodak_path, load_rgb  # noqa: E402
# Compile times must be real: tests.conftest turns on a persistent XLA cache.
jax.config.update("jax_enable_compilation_cache", False)


def jpeg(img: np.ndarray, quality: int = 10) -> np.ndarray:
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="JPEG", quality=quality)
  buf.seek(0)
  with Image.open(buf) as im:
    return (np.asarray(im.convert("RGB"), np.float32) / 255.0)[None]


def timed(fn, x, repeats: int):
  t0 = time.perf_counter()
  jax.block_until_ready(fn(x))
  first = time.perf_counter() - t0
  runs = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(x))
    runs.append(time.perf_counter() - t0)
  return first, float(np.median(runs))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--variant", default="official")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--image", default="kodim23")
  p.add_argument("--no_tiled", action="store_true")
  p.add_argument("--torch", action="store_true")
  a = p.parse_args(argv)

  import torch
  torch.manual_seed(0)
  net = twin.create(a.variant).eval()
  model = convert.from_torch("promptcir", a.variant, net.state_dict())
  fwd = promptcir.jit_forward(model)
  img = load_rgb(kodak_path(a.image))
  lq = jpeg(img, 10)
  print(f"promptcir {a.variant}: backend {jax.default_backend()}, {os.cpu_count()} cores "
        f"(a shared machine: figures are noisy)")

  crop = jnp.asarray(lq[:, :128, :128])
  first, med = timed(fwd, crop, a.repeats)
  print(f"  forward 128x128: compile+first run {first:.1f} s; median of {a.repeats}: {med:.2f} s")
  if a.torch:
    x = torch.from_numpy(np.array(crop)).permute(0, 3, 1, 2)
    with torch.no_grad():
      net(x)
      t0 = time.perf_counter()
      net(x)
    print(f"  PyTorch twin forward 128x128 (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads): {time.perf_counter() - t0:.2f} s")

  if not a.no_tiled:
    h, w = lq.shape[1:3]
    padded = promptcir.flip_pad(jnp.asarray(lq), 32)
    n_tiles = (len(promptcir.tile_positions(padded.shape[1], 384, 96))
               * len(promptcir.tile_positions(padded.shape[2], 384, 96)))
    t0 = time.perf_counter()
    jax.block_until_ready(fwd(padded[:, :384, :384]))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = promptcir.restore(model, lq, tile=384, overlap=96, transpose=False)
    tiled_s = time.perf_counter() - t0
    print(f"  tiled {w}x{h} ({a.image}, JPEG q10): padded to {padded.shape[2]}x{padded.shape[1]}, "
          f"{n_tiles} tiles of 384; compile+first tile {compile_s:.1f} s; whole image "
          f"{tiled_s:.1f} s ({tiled_s / n_tiles:.2f} s per tile); output {out.shape[2]}x"
          f"{out.shape[1]}")


if __name__ == "__main__":
  main()
