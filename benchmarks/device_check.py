"""The accelerator check: one script, at most ~8 minutes on one GPU, that prints what a lent
device does with each family.

  python -m benchmarks.device_check [--official PYTHON] [--smoke] [--out FILE.json]

- UCIP `middle` train step at batch 16, LR patch 64 (x4 -> 256), in float32 and bfloat16;
- PromptCIR `official` train step at batch 8, patch 128;
- PromptSR x4 forward on a 320x180 LR and CISR `tiny_x2` forward on 256x256;
- with `--official` (an interpreter where torch imports, e.g. the oracle venv), the unmodified
  official UCIP and PromptCIR train steps at the same shapes on the same device
  (`benchmarks/torch_official.py`).

Each row: images/s (median of timed steps after one warm-up), compile seconds, XLA's planned
temporaries and the device's peak bytes so far (`memory_stats`, where the backend has them).
`--smoke` runs the same code on CPU-sized variants and shapes in seconds (the test runs it).
"""

import argparse
import json
import os
import subprocess
import sys

import jax
import numpy as np
from flax import nnx

from benchmarks import common
from csr_jax import models

# (family, variant, batch, LR height, LR width, dtype, what); smoke: CPU-sized twins.
FULL = [
    ("ucip", "middle", 16, 64, 64, "float32", "train"),
    ("ucip", "middle", 16, 64, 64, "bfloat16", "train"),
    ("promptcir", "official", 8, 128, 128, "float32", "train"),
    ("promptsr", "x4", 1, 180, 320, "float32", "forward"),
    ("cisr", "tiny_x2", 1, 256, 256, "float32", "forward"),
]
SMOKE = [
    ("ucip", "small", 2, 16, 16, "float32", "train"),
    ("ucip", "small", 2, 16, 16, "bfloat16", "train"),
    ("promptcir", "small", 1, 32, 32, "float32", "train"),
    ("promptsr", "small", 1, 24, 40, "float32", "forward"),
    ("cisr", "small_x2", 1, 32, 32, "float32", "forward"),
]
OFFICIAL = {"ucip": (16, 64), "promptcir": (8, 128)}
OFFICIAL_SMOKE = {"ucip": (1, 16), "promptcir": (1, 32)}
NAMES = ["kodim01", "kodim05", "kodim13", "kodim23"]


def inputs(model, spec, b: int, h: int, w: int):
  """(lr, hr, task ids or None) from Kodak crops; the HR is the crop at the model's scale."""
  tasks = np.arange(b, dtype=np.int32) % 6 if spec.task_ids is not None else None
  probe = np.zeros((1, h, w, 3), np.float32)
  out = jax.eval_shape(lambda: spec.predict(
      spec.apply(model, probe, *(() if tasks is None else (tasks[:1],)))))
  scale = out.shape[1] // h
  hr = np.concatenate([common.kodak_crop(h * scale, w * scale, NAMES[i % 4]) for i in range(b)])
  lr = hr.reshape(b, h, scale, w, scale, 3).mean(axis=(2, 4)).astype(np.float32)
  return lr, hr, tasks


def peak_bytes() -> float | None:
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def gib(n) -> str:
  return "-" if n is None else f"{n / 2 ** 30:.2f} GiB"


def run_case(family, variant, b, h, w, dtype, what, repeats):
  spec = models.spec(family)
  model = models.create(family, variant, rngs=nnx.Rngs(0))
  lr, hr, tasks = inputs(model, spec, b, h, w)
  extra = () if tasks is None else (tasks,)
  apply = lambda m, x, *t: spec.predict(spec.apply(m, x, *t))
  if what == "train":
    bench = common.JaxBench(model, apply, (lr[:1], *(e[:1] for e in extra)), (lr, hr, *extra),
                            dtype)
    fn, compiled, compile_s = bench.train_step, bench.step, bench.step_compile_s
  else:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    fwd = lambda p, x: apply(nnx.merge(graphdef, p, rest), x)
    compiled, compile_s, _ = common.compile_timed(jax.jit(fwd), params, lr)
    fn = lambda: compiled(params, lr)
  t = common.timed(fn, repeats=repeats, warmup=1)
  mem = compiled.memory_analysis()
  temp = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
  return dict(family=family, variant=variant, batch=b, lr=f"{h}x{w}", dtype=dtype, what=what,
              images_per_s=b / t.median, step_s=t.median, compile_s=compile_s,
              xla_temp_bytes=temp, peak_bytes=peak_bytes())


def official_case(python, family, b, patch, repeats):
  """The official model's train step on this machine's first accelerator (CPU without one)."""
  here = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, PYTHONPATH=str(common.SHARED / "oracle"))
  out = subprocess.run([python, os.path.join(here, "torch_official.py"), family, "--batch",
                        str(b), "--patch", str(patch), "--repeats", str(repeats)],
                       capture_output=True, text=True, env=env, check=False)
  if out.returncode:
    tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
    return dict(family=family, variant="official PyTorch", error=tail)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--smoke", action="store_true", help="CPU-sized variants and shapes")
  ap.add_argument("--official", metavar="PYTHON",
                  help="an interpreter where torch imports (with ORACLE_MIRRORS set)")
  ap.add_argument("--repeats", type=int, default=None, help="timed steps per row")
  ap.add_argument("--out", help="also write the rows as JSON here")
  args = ap.parse_args()
  repeats = args.repeats or (2 if args.smoke else 5)
  dev = jax.devices()[0]
  print(f"device check: jax {jax.__version__}, {dev.platform} ({dev.device_kind}), "
        f"{jax.device_count()} device(s){', smoke sizes' if args.smoke else ''}", flush=True)
  rows = []
  print("| family | variant | batch | LR | dtype | what | images/s | compile | XLA temp | "
        "device peak |\n|---|---|---|---|---|---|---|---|---|---|", flush=True)
  for case in SMOKE if args.smoke else FULL:
    try:
      r = run_case(*case, repeats)
    except Exception as exc:  # a row that cannot run on this device is reported, not fatal
      r = dict(zip(("family", "variant", "batch", "lr", "dtype", "what"), case),
               error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    rows.append(r)
    if "error" in r:
      print(f"| {r['family']} | {r['variant']} | error: {r['error']} |", flush=True)
      continue
    print(f"| {r['family']} | {r['variant']} | {r['batch']} | {r['lr']} | {r['dtype']} | "
          f"{r['what']} | {r['images_per_s']:.2f} | {r['compile_s']:.1f} s | "
          f"{gib(r['xla_temp_bytes'])} | {gib(r['peak_bytes'])} |", flush=True)
  if args.official:
    for family, (b, patch) in (OFFICIAL_SMOKE if args.smoke else OFFICIAL).items():
      r = official_case(args.official, family, b, patch, repeats)
      rows.append(r)
      if "error" in r:
        print(f"| {family} | official PyTorch | error: {r['error']} |", flush=True)
      else:
        print(f"| {family} | official PyTorch ({r['device']}) | {b} | {patch}x{patch} | "
              f"float32 | train | {r['images_per_s']:.2f} | - | - | "
              f"{gib(r.get('peak_bytes'))} |", flush=True)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(rows, f, indent=1)
  sys.exit(1 if any("error" in r and r["variant"] != "official PyTorch" for r in rows) else 0)


if __name__ == "__main__":
  main()
