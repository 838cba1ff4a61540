"""The training job: `train_and_evaluate(config, workdir)`.

Data-parallel over a ('data',) mesh of every device of every process; Orbax checkpoints hold
state and the Grain iterator, so a killed run resumes with the same params and the same next
batch. Model families plug in through `FAMILIES` (batch fields, forward, loss, pad multiple).
"""

import dataclasses
import functools
import json
import os
from typing import Callable

import jax
import numpy as np
from absl import logging
from flax import nnx

from csr_jax import checkpoint
from csr_jax import evaluate
from csr_jax import logging_utils
from csr_jax import losses
from csr_jax import models
from csr_jax import optim
from csr_jax import sharding
from csr_jax import step as step_lib
from csr_jax.data import pipeline
from csr_jax.data import source


@dataclasses.dataclass(frozen=True)
class Family:
  """How a model family trains: batch fields, whether it takes task ids, its loss, its multiple."""
  keys: tuple = ("hr", "lr", "task_id")
  task_id: bool = True
  multiple: int = 8  # eval pads the LR to this multiple (official test scripts)
  loss: str = "pixel"  # 'pixel' or 'unfolded' (CISR: {'y': [...], 'x': [...]})


FAMILIES = {
    "ucip": Family(multiple=8),
    "promptcir": Family(task_id=False, multiple=32),
    "promptsr": Family(keys=("hr", "lr"), task_id=False, multiple=16),
    "cisr": Family(keys=("hr", "lr", "lr_clean"), task_id=False, multiple=1, loss="unfolded"),
}


def family(config) -> Family:
  name = config.model.name
  if name not in FAMILIES:
    raise KeyError(f"config.model.name {name!r} has no training hooks; known: {sorted(FAMILIES)}")
  fam = FAMILIES[name]
  use_tid = config.model.get("use_task_id", fam.task_id)
  keys = tuple(k for k in fam.keys if k != "task_id") + (("task_id",) if use_tid else ())
  return dataclasses.replace(fam, keys=keys, task_id=use_tid)


def make_forward(fam: Family) -> Callable:
  if fam.task_id:
    return lambda model, batch: model(batch["lr"], batch["task_id"])
  return lambda model, batch: model(batch["lr"])


def make_loss(config, fam: Family) -> Callable:
  pixel = losses.pixel_loss(config.loss)
  if fam.loss == "unfolded":
    rhos, gamma = tuple(config.loss_weights.rhos), config.loss_weights.gamma
    return lambda out, batch: losses.unfolded_loss(out, batch, pixel, rhos, gamma)
  return lambda out, batch: pixel(out, batch["hr"])


def build_model(config, mesh):
  """(graphdef, non-param state, pure params dict replicated on `mesh`), born on the devices.

  The init runs as one jitted program (cached per model and mesh), so every process of a
  multi-host run computes the same params and no host copy is made.
  """
  name, variant = config.model.name, config.model.variant
  overrides = tuple(sorted((k, _hashable(v)) for k, v in config.model.get("overrides", {}).items()))
  make = lambda: models.create(name, variant, rngs=nnx.Rngs(config.seed), **dict(overrides))
  graphdef, _, rest = nnx.split(nnx.eval_shape(make), nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise NotImplementedError(f"{name}: non-parameter state {list(rest.flat_state())[:3]} is "
                              "not handled by the training step yet")
  params = _jitted_init(name, variant, config.seed, overrides, mesh)()
  return graphdef, rest, params


def _hashable(v):
  return tuple(v) if isinstance(v, list) else v


@functools.lru_cache(maxsize=8)
def _jitted_init(name, variant, seed, overrides, mesh):
  def init():
    model = models.create(name, variant, rngs=nnx.Rngs(seed), **dict(overrides))
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return jax.jit(init, out_shardings=sharding.replicated(mesh))


def _data_paths(config):
  d = config.data
  if not d.train_dir:
    raise ValueError("config.data.train_dir is empty: point it at prepared shards "
                     "(python -m data_prep.prepare ...) or use the demo config")
  train = source.find_shards(d.train_dir, d.get("train_name") or None, "train")
  evals = (source.find_shards(d.eval_dir, d.get("eval_name") or None, d.get("eval_split", "test"))
           if d.get("eval_dir") else [])
  return train, evals


def _restore(config, ckpt, abstract, data_iter):
  """Resume precedence: workdir > config.resume > config.init_from > scratch."""
  latest = ckpt.latest_step()
  if latest is not None:
    logging.info("resuming from %s step %d", ckpt.directory, latest)
    return ckpt.restore(latest, abstract, data_iter)
  if config.get("resume"):
    directory, step = checkpoint.resolve(config.resume)
    logging.info("resuming from config.resume=%s step %d", directory, step)
    other = checkpoint.Checkpointer(directory, async_save=False)
    try:
      return other.restore(step, abstract, data_iter)
    finally:
      other.close()
  return None


def _per_step(config, fam: Family) -> bool:
  """Unfolded models (CISR) report PSNR of every step's x_j and y_j unless eval.per_step=False."""
  return fam.loss == "unfolded" and config.eval.get("per_step", True)


def evaluator(config, fam: Family, graphdef, rest, eval_paths):
  """fn(params) -> (rows, means) on the whole held-out images (EMA or raw params)."""
  if not eval_paths:
    return None
  per_step = _per_step(config, fam)
  keys = ("hr", "lr", "lr_clean") if per_step else ("hr", "lr")
  examples = list(pipeline.eval_dataset(eval_paths, config.eval.get("max_images") or None, keys))
  scale = config.data.scale
  apply = step_lib.make_apply(graphdef, rest, make_forward(fam),
                              per_step_scale=scale if per_step else 0)
  extra = evaluate.unfolded_step_metrics(scale) if per_step else None
  dev = jax.local_devices()[0]

  def bind(params):
    local = jax.device_put(jax.device_get(params), dev)
    return lambda x, t: np.asarray(apply(local, x, t))

  def run(params, **kw):
    return evaluate.evaluate_pairs(
        bind(params), examples, scale=config.data.scale,
        crop_border=config.eval.get("crop_border", None), multiple=fam.multiple,
        tile=config.eval.get("tile") or None, tile_overlap=config.eval.get("tile_overlap", 0),
        self_ensemble=config.eval.get("self_ensemble", False), extra_metrics=extra, **kw)

  run.bind = bind
  return run


def _apply_fn(run_eval, state, config):
  return run_eval.bind(state["ema"] if config.eval.get("use_ema", True) else state["params"])


def train_and_evaluate(config, workdir: str, hooks=None) -> dict:
  """Trains `config.total_steps` steps in `workdir`; returns (final state, last eval means).

  `hooks` (optional) may define `after_batch(step, host_batch)` and `after_checkpoint(step)`
  (called once the save is final), e.g. for notebooks and the resume tests.
  """
  os.makedirs(workdir, exist_ok=True)
  fam = family(config)
  if config.data.get("demo") and not config.data.train_dir:
    from csr_jax import demo_data
    demo_data.setup(config, os.path.join(workdir, "data"))
  train_paths, eval_paths = _data_paths(config)

  mesh = sharding.make_mesh()
  primary = jax.process_index() == 0
  local_bs = sharding.local_batch_size(config.data.batch_size, mesh)
  logging.info("%d process(es), %d device(s) (%s); global batch %d, %d per process",
               jax.process_count(), mesh.devices.size, jax.default_backend(),
               config.data.batch_size, local_bs)

  graphdef, rest, params = build_model(config, mesh)
  total = config.total_steps
  tx = optim.make(config.optim, params, total)
  repl = sharding.replicated(mesh)
  state = jax.jit(lambda p: step_lib.init_state(p, tx, config.seed), out_shardings=repl)(params)
  if config.get("init_from"):
    loaded = checkpoint.load_params(config.init_from, params,
                                    key="ema" if config.get("init_from_ema") else "params",
                                    skip=config.get("init_from_skip") or None)
    state = jax.jit(lambda p: step_lib.init_state(p, tx, config.seed), out_shardings=repl)(loaded)
  del params

  ds = pipeline.train_dataset(
      train_paths, patch=config.data.patch_size, scale=config.data.scale, batch_size=local_bs,
      seed=config.seed, augment=config.data.get("augment", True),
      jpeg_qualities=tuple(config.data.online_jpeg) if config.data.get("online_jpeg") else None,
      keys=fam.keys,
      shard=pipeline.shard_options() if jax.process_count() > 1 else None)
  data_iter = pipeline.train_iterator(ds, config.data.get("num_workers", 0))

  best = config.eval.get("best_metric", "psnr_y") if eval_paths else None
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 keep=config.get("keep_checkpoints", 3), best_metric=best)
  logger = logging_utils.MetricLogger(workdir, total, enabled=primary)
  run_eval = evaluator(config, fam, graphdef, rest, eval_paths)
  train_step = step_lib.make_train_step(graphdef, rest, make_forward(fam), make_loss(config, fam),
                                        tx, mesh, ema_decay=config.ema_decay)
  sched = optim.schedule(config.optim, total)
  cfg_json = checkpoint.config_json(config)
  last_eval, finite = {}, []
  stopper = EarlyStop(config.eval.get("patience", 1)) if (
      run_eval is not None and config.eval.get("stop_when_worse", False)) else None
  try:
    restored = _restore(config, ckpt, sharding.abstract_like(state, repl), data_iter)
    if restored is not None:
      state = restored
    start = int(jax.device_get(state["step"]))
    if stopper is not None and start:
      stopper.best = ckpt.best_metric_value()
    if stopper is not None and _agree(primary and _early_stopped(workdir)):
      logging.info("%s: this run stopped early; not training further (delete the file to "
                   "continue)", os.path.join(workdir, EARLY_STOP_FILE))
      start = total
    if start == 0 and run_eval is not None and config.eval.get("at_start", False):
      last_eval = _evaluate(run_eval, state, config, logger, 0, primary)
    for step in range(start + 1, total + 1):
      host_batch = next(data_iter)
      if hooks is not None and hasattr(hooks, "after_batch"):
        hooks.after_batch(step, host_batch)
      state, metrics = train_step(state, sharding.global_batch(host_batch, mesh))
      finite.append(metrics["finite"])  # checked without a per-step host sync
      if step == start + 1:
        logger.start(step)
      is_last = step == total
      save = is_last or step % config.checkpoint_every == 0
      do_eval = run_eval is not None and (is_last or step % config.eval_every == 0)
      if save or do_eval or step % config.log_every == 0 or step == start + 1:
        m = jax.device_get(metrics)
        m.pop("finite")
        if not all(jax.device_get(finite)):
          raise FloatingPointError(
              f"non-finite loss or gradient between steps {step - len(finite) + 1} and {step} "
              f"(last: loss {m['loss']}, gradient norm {m['grad_norm']}); "
              f"the state was not updated and the last checkpoint ({ckpt.latest_step()}) is kept")
        finite = []
        m["lr"] = float(sched(step - 1))
        logger.write(step, m)
        logger.console(step, m)
      eval_metrics, stop = None, False
      if do_eval:
        last_eval = eval_metrics = _evaluate(run_eval, state, config, logger, step, primary)
        if stopper is not None:
          stop = _agree(stopper.update(eval_metrics[best]) if primary else False)
          if stop:
            logging.info("step %d: validation %s below its best %.4f for %d evaluation(s) in "
                         "a row; saving and stopping (the best checkpoint is kept)",
                         step, best, stopper.best, stopper.bad)
      if save or stop:
        ckpt.save(step, state, data_iter, cfg_json, metrics=eval_metrics or None)
        if hooks is not None and hasattr(hooks, "after_checkpoint"):
          ckpt.wait()
          hooks.after_checkpoint(step)
      if stop:
        if primary:
          _write_early_stop(workdir, step, best, eval_metrics[best], stopper)
        break
  finally:
    ckpt.close()
    if hasattr(data_iter, "close"):
      data_iter.close()
    logger.close()
  if primary and os.path.exists(logger.csv_path):
    logging_utils.plot_curves(workdir)
  if primary and config.get("report") and run_eval is not None:
    write_report(config, workdir, _apply_fn(run_eval, state, config), fam)
  return state, last_eval


EARLY_STOP_FILE = "early_stopped.json"


def _write_early_stop(workdir, step, metric, value, stopper):
  """Marks the workdir so that relaunching the same command does not train on past the stop."""
  path = os.path.join(workdir, EARLY_STOP_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump({"step": step, "metric": metric, "value": float(value),
               "best": float(stopper.best), "patience": stopper.patience}, f)
  os.replace(path + ".tmp", path)


def _early_stopped(workdir) -> bool:
  return os.path.exists(os.path.join(workdir, EARLY_STOP_FILE))


class EarlyStop:
  """Counts evaluations in a row whose metric is below the best so far (higher is better)."""

  def __init__(self, patience: int = 1):
    if patience < 1:
      raise ValueError(f"config.eval.patience must be >= 1, got {patience}")
    self.patience, self.best, self.bad = patience, None, 0

  def update(self, value: float) -> bool:
    """Records one evaluation; True once `patience` evaluations in a row fell below the best."""
    if self.best is None or value >= self.best:
      self.best, self.bad = value, 0
    else:
      self.bad += 1
    return self.bad >= self.patience


def _agree(flag: bool) -> bool:
  """Process 0's decision, on every process (only process 0 evaluates)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def _evaluate(run_eval, state, config, logger, step, primary) -> dict:
  if not primary:
    return {}
  params = state["ema"] if config.eval.get("use_ema", True) else state["params"]
  _, means = run_eval(params, baseline=step == 0 or step == config.total_steps)
  logger.write(step, means["model"], prefix="val")
  if "bicubic" in means:
    logger.write(step, means["bicubic"], prefix="val_bicubic")
  logging.info("eval step %d: %s", step, " ".join(f"{k}={v:.4f}" for k, v in means["model"].items()))
  return means["model"]


def write_report(config, workdir: str, apply_fn, fam: Family) -> str:
  """report.md: the held-out table (model vs bicubic), the curves and comparison grids."""
  from csr_jax import benchmark
  d = config.data
  res = benchmark.run_benchmark(
      apply_fn, d.eval_dir, os.path.join(workdir, "eval"), scale=d.scale, split=d.eval_split,
      limit=config.eval.get("max_images") or None, title=f"{config.model.name} {config.model.variant}",
      multiple=fam.multiple,
      extra_metrics=evaluate.unfolded_step_metrics(d.scale) if _per_step(config, fam) else None)
  curves = os.path.join(workdir, "curves.png")
  extra = (f"Trained {config.total_steps} steps, global batch {d.batch_size}, LR patch "
           f"{d.patch_size}, on {jax.device_count()} {jax.default_backend()} device(s); "
           f"evaluated with the {'EMA' if config.eval.get('use_ema', True) else 'raw'} params.")
  return benchmark.write_report(
      workdir, table_md=res["table_md"], title=f"csr_jax: {config.model.name} {config.model.variant}",
      curves_png=curves if os.path.exists(curves) else None, grid_pngs=res["files"]["grids"],
      extra_md=extra)
