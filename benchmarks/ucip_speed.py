"""UCIP `middle` speed against the official PyTorch code, measured in one run.

  .venv/bin/python -m benchmarks.ucip_speed --official ~/oracle-venv/bin/python [--rounds 2]
      [--repeats 3] [--dtype bfloat16]

Times the jitted forward (64x64 Kodak crop -> 256x256, batch 1) and train step (batch 2, L1,
grads and an Adam update, donated state), with their compile times and XLA's FLOP count as a
share of jnp.dot's rate measured in the same run; with `--official` the unmodified official
UCIP_Middle runs in between (../shared/oracle/time_official.py: the same shapes, L1 + grads,
torch with 2 threads) and the table shows official / csr_jax time ratios. The CPU is shared:
compare ratios from one run, not figures across runs. Re-runs itself with hostenv.TUNABLE's
malloc (huge pages, freed memory kept) for both sides; CSR_JAX_HUGEPAGES=0 to compare without.
"""

import argparse

import numpy as np
from flax import nnx

from benchmarks import common
from csr_jax import models


def batch(b):
  """b Kodak LR/HR pairs: 256x256 HR crops, 64x64 LR by 4x4 box averaging, task ids."""
  names = ["kodim01", "kodim05", "kodim13", "kodim23"]
  hr = np.concatenate([common.kodak_crop(256, 256, names[i % 4], 64, 96) for i in range(b)])
  lr = hr.reshape(b, 64, 4, 64, 4, 3).mean(axis=(2, 4))
  return lr, hr, np.arange(b, dtype=np.int32) % 6


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--variant", default="middle")
  common.add_args(ap)
  args = ap.parse_args()
  common.setup(args)
  dot = common.header(f"UCIP {args.variant} speed")
  model = models.create("ucip", args.variant, rngs=nnx.Rngs(0))
  lr1, _, t1 = batch(1)
  lr2, hr2, t2 = batch(2)
  bench = common.JaxBench(model, lambda m, x, t: m(x, t), (lr1, t1), (lr2, hr2, t2), args.dtype)
  common.compare(bench, f"UCIP {args.variant}", ("forward 1x64x64 -> 256x256",
                 "train step batch 2, L1 + grads"), (4, 4), "ucip", args, dot)
  print(f"train-step compile {bench.step_compile_s:.1f} s (goal <= 60 s)")


if __name__ == "__main__":
  main()
