"""CISR forward time on one real LR image (a JPEG q10 Kodak crop), jitted, batch 1.

  .venv/bin/python -m benchmarks.cisr_speed [--variant tiny_x2] [--size 256] [--repeats 2]

Prints compile time, the median forward time over `--repeats` runs, and the time of one
non-local operator alone (a forward runs 2 J of them), i.e. its share of the forward.
"""

import argparse
import io
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from csr_jax import models
from csr_jax.layers.non_local import non_local_mean

KODAK = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "kodak"


def jpeg_crop(size: int) -> np.ndarray:
  with Image.open(KODAK / "kodim23.png") as im:
    x = np.asarray(im.convert("RGB"))[:size, :size]
  buf = io.BytesIO()
  Image.fromarray(x).save(buf, format="JPEG", quality=10)
  buf.seek(0)
  with Image.open(buf) as im:
    return (np.asarray(im.convert("RGB"), np.float32) / 255.0)[None]


def timed(fn, *args, repeats: int):
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t0
  runs = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    runs.append(time.perf_counter() - t0)
  return first, float(np.median(runs))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--variant", default="tiny_x2")
  p.add_argument("--size", type=int, default=256, help="LR side")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--chunk", type=int, default=0, help="non-local query chunk (0: variant's)")
  a = p.parse_args(argv)
  over = {"chunk": a.chunk} if a.chunk else {}
  model = models.create("cisr", a.variant, rngs=nnx.Rngs(0), **over)
  graphdef, state = nnx.split(model)
  fwd = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)["x"][-1])
  z = jnp.asarray(jpeg_crop(a.size))
  first, med = timed(fwd, state, z, repeats=a.repeats)
  nl = jax.jit(lambda z, h, k: non_local_mean(z, z, h, k, model.arm.non_local.chunk,
                                              model.arm.non_local.patch))
  h = jnp.full(z.shape[:3], 0.05)
  keep = model.keep_mask(z)
  _, nl_med = timed(nl, z, h, keep, repeats=a.repeats)
  n_nl = 2 * model.steps
  print(f"cisr {a.variant} forward, LR {a.size}x{a.size} -> HR "
        f"{a.size * model.scale}x{a.size * model.scale}, J={model.steps}, "
        f"{models.count_params(model):,} params, backend {jax.default_backend()} "
        f"({os.cpu_count()} cores; shared machine, figures are noisy)")
  print(f"  compile+first run {first:.1f} s; forward median of {a.repeats}: {med:.2f} s")
  print(f"  one non-local op (chunk {model.arm.non_local.chunk}): {nl_med:.2f} s x {n_nl} per "
        f"forward = {nl_med * n_nl:.2f} s ({100 * nl_med * n_nl / med:.0f}% of the forward)")


if __name__ == "__main__":
  main()
