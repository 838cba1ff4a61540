"""PromptCIR (official size) speed against the official PyTorch code, measured in one run.

  .venv/bin/python -m benchmarks.promptcir_speed --official ~/oracle-venv/bin/python
      [--rounds 2] [--repeats 2] [--dtype bfloat16]

Times the jitted forward (1x128x128 Kodak crop, JPEG q10) and train step (batch 2, 128x128, L1
against the clean crops, grads and an Adam update), with compile times and XLA's FLOP count as
a share of jnp.dot's rate in the same run; with `--official` the unmodified official
MyModel(decoder=True) runs in between (../shared/oracle/time_official.py: same shapes, L1 +
grads, torch with 2 threads) and the table shows official / csr_jax time ratios. Re-runs
itself with hostenv.TUNABLE's malloc for both sides (CSR_JAX_HUGEPAGES=0 to compare without).
"""

import argparse
import io

import numpy as np
from flax import nnx
from PIL import Image

from benchmarks import common
from csr_jax import models


def jpeg(img: np.ndarray, quality: int = 10) -> np.ndarray:
  buf = io.BytesIO()
  Image.fromarray((img[0] * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=quality)
  with Image.open(buf) as im:
    return (np.asarray(im.convert("RGB"), np.float32) / 255.0)[None]


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--variant", default="official")
  common.add_args(ap)
  args = ap.parse_args()
  common.setup(args)
  dot = common.header(f"PromptCIR {args.variant} speed")
  model = models.create("promptcir", args.variant, rngs=nnx.Rngs(0))
  clean = np.concatenate([common.kodak_crop(128, 128, n, 200, 300)
                          for n in ("kodim23", "kodim05")])
  lq = np.concatenate([jpeg(c[None]) for c in clean])
  bench = common.JaxBench(model, lambda m, x: m(x), (lq[:1],), (lq, clean), args.dtype)
  common.compare(bench, f"PromptCIR {args.variant}", ("forward 1x128x128",
                 "train step batch 2, L1 + grads"), (2, 2), "promptcir", args, dot)
  print(f"train-step compile {bench.step_compile_s:.1f} s (goal <= 60 s)")


if __name__ == "__main__":
  main()
