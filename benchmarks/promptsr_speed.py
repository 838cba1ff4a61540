"""PromptSR x4 on a 320x180 Kodak crop (-> 1280x720): multiply-adds and forward time.

  .venv/bin/python -m benchmarks.promptsr_speed [--variant x4] [--anchor_region 64|none]
      [--repeats 3]

Multiply-adds are XLA's cost analysis of the compiled forward (flops / 2: every dot, conv,
softmax and elementwise op; convs, linears and the FFNs run on the 320x180 tokens, the window
and anchor attention on their flip-padded 320x192 grids). `--anchor_region none` makes the
anchors global (the paper's text) instead of 64x64 regions (the default, which the paper's
multiply-adds fit). The script fails unless the default x4 is within 10 % of the paper's
53.5 G. For comparison it also prints the weight-only part (conv + linear MACs from the
parameter shapes), which is what module-hook counters report. Times on a shared CPU are noisy;
they are the median of repeats.
"""

import argparse
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from csr_jax import models  # pylint: disable=wrong-import-position
from csr_jax.conversion import flat_params  # pylint: disable=wrong-import-position
from benchmarks.common import kodak_crop
# Compile times must be real: tests.conftest turns on a persistent XLA cache.
jax.config.update("jax_enable_compilation_cache", False)


PAPER_MACS = 53.5e9


def weight_macs(model, h: int, w: int) -> float:
  """Conv/linear MACs: kernel size x output positions (anchor-side layers run on 1/d^2).

  The GAPL's q/k/v are applied to the anchors (folded), the strided down conv once per anchor;
  anchor counts use the region-padded grid. The position-bias MLP runs once on its
  (2 ws - 1)^2 offsets.
  """
  total = 0
  d, m = model.anchor_down, model.anchor_region or model.anchor_down
  n = h * w
  n_anchor = (-(-h // m) * m) * (-(-w // m) * m) // (d * d)
  for path, k in flat_params(model).items():
    if not path.endswith("kernel"):
      continue
    anchor_side = any(f".gapl.{name}." in path for name in ("down", "a", "q", "k", "v", "kp", "vp"))
    rows = (2 * model.window_size - 1) ** 2 if ".pos_mlp." in path else None
    total += math.prod(k.shape) * (rows or (n_anchor if anchor_side else n))
  return total


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--variant", default="x4")
  ap.add_argument("--anchor_region", default="64", help="region side, or 'none' (global)")
  ap.add_argument("--repeats", type=int, default=3)
  args = ap.parse_args()
  region = None if args.anchor_region.lower() == "none" else int(args.anchor_region)
  model = models.create("promptsr", args.variant, rngs=nnx.Rngs(0), anchor_region=region)
  graphdef, state = nnx.split(model)
  fwd = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  x = jnp.asarray(kodak_crop(180, 320, name="kodim23", top=100, left=200))
  t0 = time.perf_counter()
  compiled = fwd.lower(state, x).compile()
  t_compile = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  y = compiled(state, x).block_until_ready()
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    compiled(state, x).block_until_ready()
    times.append(time.perf_counter() - t0)
  macs = cost["flops"] / 2
  print(f"promptsr {args.variant} (anchor_region={region}): params "
        f"{models.count_params(model):,}; input 1x180x320x3 "
        f"-> output {tuple(y.shape)}")
  print(f"  multiply-adds (XLA cost analysis, flops/2): {macs / 1e9:.2f} G "
        f"(paper: 53.5 G, {100 * (macs / PAPER_MACS - 1):+.1f} %); "
        f"transcendentals {cost.get('transcendentals', 0) / 1e9:.2f} G")
  print(f"  weight-only (conv + linear) MACs: {weight_macs(model, 180, 320) / 1e9:.2f} G")
  print(f"  forward: median {np.median(times):.2f} s over {args.repeats} runs "
        f"(compile {t_compile:.1f} s) on {jax.devices()[0].device_kind}, "
        f"{os.cpu_count()} CPU(s); shared machine, noisy")
  if args.variant == "x4" and region == 64 and abs(macs / PAPER_MACS - 1) > 0.1:
    raise SystemExit(f"promptsr x4: {macs / 1e9:.2f} G multiply-adds is not within 10 % of 53.5 G")


if __name__ == "__main__":
  main()
