"""What the speed benchmarks share: one timing helper, compiles timed with XLA's FLOP count,
the jnp.dot reference rate, Kodak inputs, the official PyTorch models timed in a subprocess of
the oracle's interpreter, and the same-run comparison table.

Run benchmarks as modules from the repository root (`python -m benchmarks.ucip_speed`).
"""

import dataclasses
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from PIL import Image

from csr_jax import hostenv
from csr_jax.layers.precision import cast_floats

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CSR_SHARED", REPO.parent / "shared"))
ORACLE = SHARED / "oracle" / "time_official.py"


@dataclasses.dataclass
class Times:
  """Wall seconds of repeated runs (block_until_ready included)."""
  runs: list

  @property
  def median(self) -> float:
    return statistics.median(self.runs)

  def __str__(self):
    lo, hi = min(self.runs), max(self.runs)
    spread = f" ({lo:.2f}-{hi:.2f})" if len(self.runs) > 1 else ""
    return f"{self.median:.2f} s{spread}"


def timed(fn, *args, repeats: int = 3, warmup: int = 0) -> Times:
  """Times `fn(*args)` `repeats` times after `warmup` untimed calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  runs = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    runs.append(time.perf_counter() - t0)
  return Times(runs)


def compile_timed(jitted, *args):
  """(compiled, seconds to lower + compile, XLA's FLOP count of the program)."""
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  seconds = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return compiled, seconds, float(cost.get("flops", float("nan")))


def dot_gflops(n: int = 2048, repeats: int = 5) -> float:
  """GFLOP/s of a float32 n^3 jnp.dot here and now: the reference rate for XLA's FLOPs."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  t = timed(jax.jit(jnp.dot), a, b, repeats=repeats, warmup=1)
  return 2 * n ** 3 / min(t.runs) / 1e9


def kodak_crop(h: int, w: int, name: str = "kodim01", top: int = 0, left: int = 0):
  """[1, h, w, 3] float32 in [0, 1] from ../shared/datasets/kodak."""
  with Image.open(SHARED / "datasets" / "kodak" / f"{name}.png") as im:
    img = np.asarray(im.convert("RGB"))
  return (img[top:top + h, left:left + w].astype(np.float32) / 255.0)[None]


def official_times(python: str, model: str, threads: int = 2) -> dict:
  """The oracle's time_official.py run by `python` (the oracle venv): forward_s, train_step_s.

  The subprocess inherits this environment (ORACLE_MIRRORS, and the same GLIBC_TUNABLES)."""
  out = subprocess.run([python, str(ORACLE), model, "--threads", str(threads)], check=True,
                       capture_output=True, text=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


class JaxBench:
  """A model's jitted forward and train step (L1 loss, grads, Adam update, donated state).

  With `dtype` bfloat16, float params and inputs are cast for the forward (float32 master
  params and optimizer state) and the output is cast back to float32."""

  def __init__(self, model, apply, fwd_args, train_args, dtype: str = "float32"):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    dtype = jnp.dtype(dtype)

    def run(p, x, *extra):
      m = nnx.merge(graphdef, cast_floats(p, dtype), rest)
      return apply(m, cast_floats(x, dtype), *extra).astype(jnp.float32)

    self.fwd_args, self.train_args = fwd_args, train_args
    self.params = params
    self.fwd, self.fwd_compile_s, self.fwd_flops = compile_timed(jax.jit(run), params, *fwd_args)
    tx = optax.adam(2e-4)

    def step(p, s, x, target, *extra):
      loss_fn = lambda p: jnp.mean(jnp.abs(run(p, x, *extra) - target))
      loss, g = jax.value_and_grad(loss_fn)(p)
      upd, s = tx.update(g, s, p)
      return optax.apply_updates(p, upd), s, loss

    self.state = [jax.tree.map(jnp.copy, params), None]
    self.state[1] = tx.init(self.state[0])
    self.step, self.step_compile_s, self.step_flops = compile_timed(
        jax.jit(step, donate_argnums=(0, 1)), *self.state, *train_args)

  def forward(self):
    return self.fwd(self.params, *self.fwd_args)

  def train_step(self):
    self.state[0], self.state[1], loss = self.step(*self.state, *self.train_args)
    return loss


def header(title: str) -> float:
  """Prints the machine line and returns the jnp.dot rate (GFLOP/s) measured now."""
  dot = dot_gflops()
  print(f"{title}\njax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; GLIBC_TUNABLES="
        f"{os.environ.get('GLIBC_TUNABLES', '')!r}; jnp.dot 2048^3 float32 {dot:.1f} GFLOP/s",
        flush=True)
  return dot


def compare(bench: JaxBench, name: str, rows: tuple[str, str], goals: tuple[float, float],
            official_model: str, args, dot: float) -> None:
  """Times `bench` and, with `--official PYTHON`, the official model, alternating `--rounds`
  times in this one run; prints the comparison table (medians over rounds, ranges)."""
  ours_f, ours_t, off_f, off_t = [], [], [], []
  for r in range(args.rounds):
    if args.official:
      off = official_times(args.official, official_model, args.threads)
      off_f.append(off["forward_s"])
      off_t.append(off["train_step_s"])
      print(f"round {r + 1}: official (torch {off['torch']}, {off['threads']} threads) forward "
            f"{off['forward_s']:.2f} s, train step {off['train_step_s']:.2f} s", flush=True)
    f = timed(bench.forward, repeats=3 * args.repeats, warmup=1)
    t = timed(bench.train_step, repeats=args.repeats, warmup=1)
    ours_f += f.runs
    ours_t += t.runs
    print(f"round {r + 1}: csr_jax forward {f}, train step {t}; load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
  print(f"\n| {name} ({args.dtype}) | official PyTorch | csr_jax | ratio | goal | compile | "
        f"XLA GFLOP | share of jnp.dot |\n|---|---|---|---|---|---|---|---|")
  for row, goal, ours, off, comp, flops in (
      (rows[0], goals[0], Times(ours_f), off_f, bench.fwd_compile_s, bench.fwd_flops),
      (rows[1], goals[1], Times(ours_t), off_t, bench.step_compile_s, bench.step_flops)):
    ratio = (f"{statistics.median(off) / ours.median:.2f}x "
             f"({min(off) / max(ours.runs):.2f}-{max(off) / min(ours.runs):.2f})"
             if off else "-")
    off_s = str(Times(off)) if off else "-"
    share = flops / ours.median / 1e9 / dot
    print(f"| {row} | {off_s} | {ours} | {ratio} | >= {goal:g}x | {comp:.1f} s | "
          f"{flops / 1e9:.1f} | {share:.2f} |")


def add_args(parser) -> None:
  parser.add_argument("--official", metavar="PYTHON",
                      help="the oracle venv's interpreter: time the official model in this run "
                      "(needs ORACLE_MIRRORS, see ../shared/oracle/README.md)")
  parser.add_argument("--rounds", type=int, default=1,
                      help="alternate official and csr_jax timings this many times")
  parser.add_argument("--repeats", type=int, default=3, help="train steps per round "
                      "(forwards: 3x as many)")
  parser.add_argument("--threads", type=int, default=2, help="torch threads of the official run")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])


def setup(args) -> None:
  """Huge pages for both sides (re-exec once; CSR_JAX_HUGEPAGES=0 to compare without) and
  real compile times (no persistent cache)."""
  hostenv.reexec_with_hugepages()
  jax.config.update("jax_enable_compilation_cache", False)
