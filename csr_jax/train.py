"""The training job: `train_and_evaluate(config, workdir)`.

Data-parallel over a ('data',) mesh of every device of every process. Orbax checkpoints hold
the state and the data position, so a killed run resumes with the same params and the same
next batch, with any worker count. The model family's spec says what a batch holds, the loss,
and how validation images are padded, tiled and scored.
"""

import dataclasses
import json

import jax
import numpy as np
from absl import logging

from csr_jax import checkpoint
from csr_jax import evaluate
from csr_jax import family
from csr_jax import inference
from csr_jax import logging_utils
from csr_jax import optim
from csr_jax import paths
from csr_jax import report
from csr_jax import sharding
from csr_jax import step as step_lib
from csr_jax import weights
from csr_jax import conversion
from csr_jax.tree import flatten
from csr_jax.data import pipeline
from csr_jax.data import source
from csr_jax.family import Evaluation, Inference

EARLY_STOP_FILE = "early_stopped.json"


def protocols(config, spec) -> tuple[Inference, Evaluation]:
  """The family's inference and evaluation protocols with the config's `eval` overrides."""
  ev = config.eval
  pick = lambda key, default: default if ev.get(key) is None else ev[key]
  inf = dataclasses.replace(spec.inference, tile=pick("tile", spec.inference.tile),
                            tile_overlap=pick("tile_overlap", spec.inference.tile_overlap),
                            ensemble=pick("ensemble", spec.inference.ensemble))
  e = dataclasses.replace(spec.evaluation,
                          crop_border=pick("crop_border", spec.evaluation.crop_border),
                          best_metric=pick("best_metric", spec.evaluation.best_metric))
  return inference.check_protocol(inf), e


def _datasets(config, directory, name, split, r=None) -> dict:
  """{name: shard paths} of a prepared folder (codecs checked against the model's table when
  `r` is given), through the local cache when `config.data.cache_dir` is set."""
  found = report.find_datasets(directory, name or None, split)
  if r is not None:
    _check_codecs(r, found)
  cache = config.data.get("cache_dir")
  return {k: source.cache_shards(v, cache) for k, v in found.items()} if cache else found


def _check_codecs(r, datasets: dict) -> None:
  """Every codec the training shards hold has a prompt in the model's table: a one-line error
  naming the codec before anything is built, never a wrong prompt."""
  if r.task_ids is None:
    return
  for shards in datasets.values():
    manifest = paths.resolve(shards[0]).parent / source.MANIFEST
    for g in source.read_manifest(manifest).get("grid", ()):
      family.task_id(r.task_ids, g["codec"], where=paths.display(manifest))


def _place(tree, mesh):
  """Host arrays -> replicated global arrays on `mesh` (every process holds the same values)."""
  repl = sharding.replicated(mesh)
  return jax.tree.map(lambda a: jax.make_array_from_callback(a.shape, repl, lambda i: a[i]),
                      tree)


def _initial_state(config, r, tx, mesh):
  """A fresh state: the family's init, or `config.init_from`'s params (strict, `skip` kept)."""
  params = weights.init_params(r, config.seed)
  if config.get("init_from"):
    ema = config.get("init_from_ema") and checkpoint.has_ema(config.init_from)
    params = weights.load(config.init_from, r, params, item="ema" if ema else "params",
                          skip=config.get("init_from_skip") or None)
  params = _place(params, mesh)
  return jax.jit(lambda p: step_lib.init_state(p, tx, config.seed),
                 out_shardings=sharding.replicated(mesh))(params)


def _check_params(ckpt, step: int, abstract_params: dict, model: str) -> None:
  """A one-line error when `step` holds parameters of another shape than the configured
  model (another variant or family), naming both, before Orbax is asked; a step whose
  metadata is damaged is left to `restore_latest`, which falls back."""
  shapes, meta = ckpt.param_shapes(step)
  if shapes is None:
    return
  try:
    conversion.match_flat(flatten(abstract_params), shapes, source="")
  except conversion.ConversionError as exc:
    where = paths.display(ckpt.directory / str(step))
    raise ValueError(
        f"{where}: holds {meta.get('name')} {meta.get('variant')} parameters, not those of the "
        f"configured {model} (start another --workdir, or use --config.init_from to start from "
        f"these weights); {str(exc).split('; ', 1)[-1]}") from None


def _restore(config, ckpt, abstract):
  """(step, state, data position) to resume from: workdir > config.resume; None: start."""
  model = f"{config.model.name} {config.model.variant}"
  steps = checkpoint.intact_steps(ckpt.directory)
  if steps:
    _check_params(ckpt, steps[-1], abstract["params"], model)
  found = ckpt.restore_latest(abstract)
  if found is not None:
    logging.info("resuming from %s step %d", paths.display(ckpt.directory), found[0])
    return found
  if not config.get("resume"):
    return None
  where = paths.resolve(config.resume)
  step_dir = where.name.isdigit()
  other = checkpoint.Checkpointer(where.parent if step_dir else (
      where / "checkpoints" if (where / "checkpoints").is_dir() else where), async_save=False)
  try:
    steps = [int(where.name)] if step_dir else checkpoint.intact_steps(other.directory)
    if steps:
      _check_params(other, steps[-1], abstract["params"], model)
    found = (int(where.name), *other.restore_step(int(where.name), abstract)) if step_dir else (
        other.restore_latest(abstract))
  finally:
    other.close()
  if found is None:
    raise FileNotFoundError(f"config.resume={config.resume!r}: no committed checkpoint there")
  logging.info("resuming from config.resume=%s step %d", config.resume, found[0])
  return found


def evaluator(config, r, graphdef, rest, eval_sets: dict):
  """fn(params) -> (rows, means) on the whole held-out images, as the family scores them."""
  if not eval_sets:
    return None
  spec = r.spec
  protocol, ev = protocols(config, spec)
  per_step = spec.extras is not None and config.eval.get("per_step", True)
  keys = ("hr", "lr", "lr_clean") if per_step else ("hr", "lr")
  examples = [ex for paths_ in eval_sets.values() for ex in pipeline.eval_dataset(
      paths_, config.eval.get("max_images") or None, keys, r.task_ids)]
  forward = inference.make_forward(spec, graphdef, rest, dtype=config.model.get("dtype"),
                                   extras=per_step)
  dev = jax.local_devices()[0]

  def bind(params):
    return lambda x, tid: inference.Predictor(forward, jax.device_put(
        jax.device_get(params), dev), tid)(x)

  def run(params, **kw):
    rows, means, skipped = evaluate.evaluate_pairs(
        bind(params), examples, scale=config.data.scale, ev=ev, protocol=protocol,
        extra_target=spec.extra_target if per_step else None, **kw)
    for src, why in skipped:
      logging.warning("validation skipped %s: %s", src, why)
    return rows, means

  run.bind, run.protocol, run.ev, run.per_step = bind, protocol, ev, per_step
  return run


def train_and_evaluate(config, workdir, hooks=None) -> tuple[dict, dict]:
  """Trains `config.total_steps` steps in `workdir`; returns (final state, last eval means).

  `hooks` (optional) may define `after_batch(step, host_batch)` and `after_checkpoint(step)`
  (called once the save is final), e.g. for notebooks and the resume tests.
  """
  workdir = paths.resolve(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  r = weights.ref_from_config(config)
  spec = r.spec
  if config.data.get("demo") and not config.data.train_dir:
    from csr_jax import demo_data
    demo_data.setup(config, workdir / "data")
  train_sets = _datasets(config, config.data.train_dir, config.data.get("train_name"), "train",
                         r)
  eval_sets = (_datasets(config, config.data.eval_dir, config.data.get("eval_name"),
                         config.data.get("eval_split", "test"))
               if config.data.get("eval_dir") else {})

  mesh = sharding.make_mesh()
  primary = jax.process_index() == 0
  local_bs = sharding.local_batch_size(config.data.batch_size, mesh)
  logging.info("%d process(es), %d device(s) (%s); global batch %d, %d per process",
               jax.process_count(), mesh.devices.size, jax.default_backend(),
               config.data.batch_size, local_bs)

  graphdef, rest, abstract_params = weights.abstract(r)
  if jax.tree.leaves(rest):
    raise NotImplementedError(f"{spec.name}: non-parameter state is not handled by the "
                              "training step")
  total = config.total_steps
  tx = optim.make(config.optim, abstract_params, total)
  repl = sharding.replicated(mesh)
  abstract_state = sharding.abstract_like(
      jax.eval_shape(lambda p: step_lib.init_state(p, tx, config.seed), abstract_params), repl)

  run_eval = evaluator(config, r, graphdef, rest, eval_sets)
  best = run_eval.ev.best_metric if run_eval else None
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints", keep=config.get("keep_checkpoints", 3),
                                 best_metric=best)
  logger = logging_utils.MetricLogger(workdir, total, enabled=primary)
  train_step = step_lib.make_train_step(
      spec, graphdef, rest, step_lib.make_loss(spec, config), tx, mesh,
      ema_decay=config.ema_decay, dtype=config.model.get("dtype", "float32"))
  sched = optim.schedule(config.optim, total)
  cfg_json = checkpoint.config_json(config)
  cfg_json["model"]["task_ids"] = None if r.task_ids is None else dict(r.task_ids)
  last_eval, finite, losses, data_iter = {}, [], [], None
  stopper = EarlyStop(config.eval.get("patience", 1)) if (
      run_eval is not None and config.eval.get("stop_when_worse", False)) else None
  try:
    restored = _restore(config, ckpt, abstract_state)
    if restored is not None:
      _, state, position = restored
    else:
      state, position = _initial_state(config, r, tx, mesh), {"batches": 0}
    start = int(jax.device_get(state["step"]))
    consumed = int(position.get("batches", start))
    ds = pipeline.train_dataset(
        [p for ps in train_sets.values() for p in ps], patch=config.data.patch_size,
        scale=config.data.scale, batch_size=local_bs, seed=config.seed,
        augment=config.data.get("augment", True),
        jpeg_qualities=tuple(config.data.online_jpeg) if config.data.get("online_jpeg") else None,
        keys=("lr",) + tuple(spec.targets) + (("task_id",) if r.task_ids is not None else ()),
        task_ids=r.task_ids,
        shard=pipeline.shard_options() if jax.process_count() > 1 else None)
    data_iter = pipeline.train_iterator(ds, config.data.get("num_workers", 0), start=consumed)
    if stopper is not None and start:
      stopper.best = ckpt.best_metric_value()
    if stopper is not None and _agree(primary and (workdir / EARLY_STOP_FILE).exists()):
      logging.info("%s: this run stopped early; not training further (delete the file to "
                   "continue)", paths.display(workdir / EARLY_STOP_FILE))
      start = total
    if start == 0 and run_eval is not None and config.eval.get("at_start", False):
      last_eval = _evaluate(run_eval, state, config, logger, 0, primary)
    for step in range(start + 1, total + 1):
      host_batch = next(data_iter)
      consumed += 1
      if hooks is not None and hasattr(hooks, "after_batch"):
        hooks.after_batch(step, host_batch)
      state, metrics = train_step(state, sharding.global_batch(host_batch, mesh))
      finite.append(metrics["finite"])  # checked without a per-step host sync
      losses.append(metrics["loss"])
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
        m["loss_mean"] = float(np.mean(jax.device_get(losses)))  # since the last log: the curve
        finite, losses = [], []
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
        ckpt.save(step, state, {"batches": consumed}, cfg_json, metrics=eval_metrics or None)
        logger.flush()
        if hooks is not None and hasattr(hooks, "after_checkpoint"):
          ckpt.wait()
          hooks.after_checkpoint(step)
      if stop:
        if primary:
          paths.write_text(workdir / EARLY_STOP_FILE, json.dumps(
              {"step": step, "metric": best, "value": float(eval_metrics[best]),
               "best": float(stopper.best), "patience": stopper.patience}))
        break
  finally:
    ckpt.close()
    if data_iter is not None and hasattr(data_iter, "close"):
      data_iter.close()
    logger.close()
  if primary and (workdir / "metrics.csv").exists():
    logging_utils.plot_curves(workdir, val_key=f"val/{best}" if best else "val/psnr_y")
  if primary and config.get("report") and run_eval is not None:
    write_report(config, workdir, r, run_eval, state, eval_sets)
  return state, last_eval


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


def _params(state, config):
  return state["ema"] if config.eval.get("use_ema", True) else state["params"]


def _evaluate(run_eval, state, config, logger, step, primary) -> dict:
  if not primary:
    return {}
  _, means = run_eval(_params(state, config), baseline=step == 0 or step == config.total_steps)
  if not means:
    logging.warning("eval step %d: no validation image could be evaluated", step)
    return {}
  logger.write(step, means["model"], prefix="val")
  if "bicubic" in means:
    logger.write(step, means["bicubic"], prefix="val_bicubic")
  logging.info("eval step %d: %s", step, " ".join(f"{k}={v:.4f}" for k, v in means["model"].items()))
  return means["model"]


def write_report(config, workdir, r, run_eval, state, eval_sets) -> object:
  """report.md: the held-out table (model vs bicubic), the curves and comparison grids."""
  d = config.data
  predict = run_eval.bind(_params(state, config))
  res = report.run_benchmark(
      predict, eval_sets, workdir / "eval", scale=d.scale, ev=run_eval.ev,
      protocol=run_eval.protocol, limit=config.eval.get("max_images") or None,
      title=f"{config.model.name} {config.model.variant}", task_ids=r.task_ids,
      extra_target=r.spec.extra_target if run_eval.per_step else None)
  curves = workdir / "curves.png"
  extra = (f"Trained {config.total_steps} steps, global batch {d.batch_size}, LR patch "
           f"{d.patch_size}, on {jax.device_count()} {jax.default_backend()} device(s); "
           f"evaluated with the {'EMA' if config.eval.get('use_ema', True) else 'raw'} params"
           + (f" and the {run_eval.protocol.ensemble} ensemble (outputs of flipped / transposed "
              "inputs averaged)." if run_eval.protocol.ensemble != "none" else "."))
  return report.write_report(
      workdir, table_md=res["table_md"], title=f"csr_jax: {config.model.name} {config.model.variant}",
      curves_png=curves if curves.exists() else None, grid_pngs=res["files"]["grids"], skipped=res["skipped"],
      extra_md=extra)
