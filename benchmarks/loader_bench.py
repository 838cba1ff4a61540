"""Loader throughput vs the UCIP train step, in one run (the loader must not be the bottleneck).

  .venv/bin/python -m benchmarks.loader_bench [--data DIR] [--workers 2] [--variant middle]
      [--remat]

On a 24 GB CPU host `middle` at batch 8 needs `--remat` (configs/ucip.py `remat=1`: 4.3 GB of
XLA temporaries instead of 33 GB).

Without --data, the Kodak photos (../shared/datasets/kodak) go through the prep step (x4, JPEG
q10-40) into a temporary folder. Prints the loader's batches/s alone (Grain workers decoding,
cropping, augmenting and batching uint8), the jitted train step's batches/s on this machine's
devices at the same batch, and their ratio.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def loader_rate(paths, *, batch, patch, workers, n_batches):
  from csr_jax.data import pipeline
  ds = pipeline.train_dataset(paths, patch=patch, scale=4, batch_size=batch, seed=0)
  it = pipeline.train_iterator(ds, num_workers=workers, buffer=8)
  try:
    for _ in range(max(2, workers * 2)):  # worker start-up and first batches
      next(it)
    t0 = time.perf_counter()
    for _ in range(n_batches):
      b = next(it)
    dt = time.perf_counter() - t0
  finally:
    if hasattr(it, "close"):
      it.close()
  assert b["lr"].shape == (batch, patch, patch, 3) and b["hr"].dtype == np.uint8
  return n_batches / dt


def step_rate(paths, *, variant, batch, patch, n_steps, remat=False):
  import jax
  from configs import ucip
  from csr_jax import optim, sharding, weights
  from csr_jax import step as step_lib
  from csr_jax.data import pipeline
  c = ucip.get_config(f"{variant},remat={int(remat)}")
  c.data.batch_size, c.data.patch_size = batch, patch
  r = weights.ref_from_config(c)
  mesh = sharding.make_mesh()
  graphdef, rest, abstract = weights.abstract(r)
  tx = optim.make(c.optim, abstract, c.total_steps)
  state = jax.jit(lambda p: step_lib.init_state(p, tx, 0), out_shardings=sharding.replicated(
      mesh))(weights.init_params(r, 0))
  fn = step_lib.make_train_step(r.spec, graphdef, rest, step_lib.make_loss(r.spec, c), tx, mesh,
                                ema_decay=c.ema_decay)
  host = pipeline.train_dataset(paths, patch=patch, scale=4, batch_size=batch, seed=0,
                                task_ids=r.task_ids)
  batches = [sharding.global_batch(host[i], mesh) for i in range(n_steps + 1)]
  t = time.perf_counter()
  state, m = fn(state, batches[0])
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  t0 = time.perf_counter()
  for b in batches[1:]:
    state, m = fn(state, b)
  jax.block_until_ready((state, m))
  return n_steps / (time.perf_counter() - t0), compile_s, jax.devices()


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data", help="folder of train shards (default: prepare Kodak)")
  p.add_argument("--variant", default="middle")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--patch", type=int, default=64, help="LR patch (middle trains with 64)")
  p.add_argument("--workers", type=int, default=os.cpu_count())
  p.add_argument("--batches", type=int, default=100)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--remat", action="store_true", help="rematerialise each UCIP block")
  a = p.parse_args()
  from csr_jax import hostenv
  hostenv.reexec_with_hugepages()
  from csr_jax.data import source
  if a.data:
    paths = [p for ps in source.find_shards(a.data).values() for p in ps]
  else:
    from csr_jax import demo_data
    tmp = Path(tempfile.mkdtemp(prefix="loader_bench_"))
    kodak = demo_data.kodak_dir()
    demo_data.prepare(kodak, tmp / "shards", name="kodak", split="train", scale=4,
                      codec="jpeg:10,20,30,40", num_shards=2, workers=2)
    paths = source.find_shards(str(tmp / "shards"), "kodak")["kodak"]
  lrate = loader_rate(paths, batch=a.batch, patch=a.patch, workers=a.workers, n_batches=a.batches)
  print(f"loader: {lrate:.2f} batches/s ({a.workers} workers, batch {a.batch}, LR patch "
        f"{a.patch}, {len(source.TFRecordSource(paths))} records)", flush=True)
  srate, compile_s, devs = step_rate(paths, variant=a.variant, batch=a.batch, patch=a.patch,
                                     n_steps=a.steps, remat=a.remat)
  print(f"train step (UCIP {a.variant}): {srate:.3f} batches/s on {len(devs)} "
        f"{devs[0].platform} device(s) (compile + first step {compile_s:.1f} s)")
  print(f"ratio loader / train step: {lrate / srate:.1f}x "
        f"({'OK' if lrate >= 10 * srate else 'BELOW'} the 10x target)")


if __name__ == "__main__":
  main()
