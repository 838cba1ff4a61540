"""Orbax training checkpoints and params-only weight directories (DEVELOPERS.md).

A training step `workdir/checkpoints/<step>/` holds `state` (pure dict: params, opt_state, ema,
step, rng), `data` (JSON: the number of batches consumed, which is the whole iterator position
because every batch is a pure function of the seed and its index, so any worker count resumes
it) and `config` (JSON). A step counts only once Orbax has committed it; a missing or damaged
newest step falls back to the newest intact one with a one-line warning. A params-only
directory (`convert import`, `zoo import`) is an Orbax PyTree of the params plus `csr_jax.json`
naming the model (family, variant, overrides, task ids) and the source.
"""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as ocm

from csr_jax import paths
from csr_jax.tree import flatten, unflatten

ITEMS = ("state", "data", "config")
META_FILE = "csr_jax.json"


def _intact(step_dir) -> bool:
  return (step_dir / "_CHECKPOINT_METADATA").exists() and (step_dir / "state" / "_METADATA").exists()


def intact_steps(directory) -> list[int]:
  """Committed steps under a checkpoints directory, oldest first."""
  d = paths.resolve(directory)
  if not d.is_dir():
    return []
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and _intact(p))


class Checkpointer:
  """Keeps the last `keep` checkpoints plus the best one by `best_metric` (if given)."""

  def __init__(self, directory, *, keep: int = 3, best_metric: str | None = None,
               best_mode: str = "max", async_save: bool = True):
    policies = [ocm.LatestN(n=keep)]
    if best_metric:
      policies.append(ocm.BestN(get_metric_fn=lambda m: m[best_metric], n=1,
                                reverse=best_mode == "min", keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocm.AnyPreservationPolicy(policies), create=True,
        enable_async_checkpointing=async_save)
    self.directory = paths.resolve(directory)
    self.best_metric, self.best_mode = best_metric, best_mode
    self.mngr = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

  def latest_step(self) -> int | None:
    steps = intact_steps(self.directory)
    return steps[-1] if steps else None

  def best_metric_value(self) -> float | None:
    """The best `best_metric` among the kept checkpoints (keep-best holds the best so far)."""
    if not self.best_metric:
      return None
    vals = [m[self.best_metric] for step in intact_steps(self.directory)
            if isinstance(m := self.mngr.metrics(step), dict) and self.best_metric in m]
    return (max if self.best_mode == "max" else min)(vals) if vals else None

  def save(self, step: int, state: dict, data: dict, config: dict, metrics: dict | None = None):
    self.mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data),
        config=ocp.args.JsonSave(config)), metrics=metrics)

  def restore_step(self, step: int, abstract_state: dict) -> tuple[dict, dict]:
    """(state with the shardings of `abstract_state`, data position) of `step`."""
    out = self.mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return out["state"], dict(out["data"])

  def param_shapes(self, step: int) -> tuple[dict | None, dict]:
    """({'a.0.kernel': ShapeDtypeStruct} of the params stored at `step`, or None when its metadata is
    unreadable; the model meta it records)."""
    step_dir = self.directory / str(step)
    tree = _tree_metadata(step_dir / "state")
    if not isinstance(tree, dict) or not isinstance(tree.get("params"), dict):
      return None, {}
    return ({k: jax.ShapeDtypeStruct(tuple(v.shape), v.dtype)
             for k, v in flatten(tree["params"]).items()}, _step_meta(step_dir))

  def restore_latest(self, abstract_state: dict):
    """(step, state, data) of the newest intact step that restores; None when there is none.
    Damaged steps are skipped with a one-line warning each."""
    for step in reversed(intact_steps(self.directory)):
      try:
        return (step, *self.restore_step(step, abstract_state))
      except Exception as exc:  # a damaged file: fall back to the previous step
        logging.warning("%s/%d: cannot be restored (%s: %s); trying the previous step",
                        paths.display(self.directory), step, type(exc).__name__,
                        _first_line(exc))
    return None

  def wait(self):
    self.mngr.wait_until_finished()

  def close(self):
    self.mngr.wait_until_finished()
    self.mngr.close()


def _first_line(exc) -> str:
  text = str(exc).strip()
  return text.splitlines()[0][:300] if text else type(exc).__name__


def config_json(config) -> dict:
  """The config as plain JSON (ConfigDict -> dict), stored beside the state."""
  if hasattr(config, "to_json_best_effort"):
    return json.loads(config.to_json_best_effort())
  return dict(config)


# ---- reading weights ----

def _step_dirs(path) -> list:
  """Intact step directories a user path can mean, newest first: a workdir, a checkpoints
  directory, or one step directory."""
  p = paths.resolve(path)
  if p.name.isdigit() and (p / "state").is_dir():
    return [p] if _intact(p) else []
  ckdir = p / "checkpoints" if (p / "checkpoints").is_dir() else p
  return [ckdir / str(s) for s in reversed(intact_steps(ckdir))]


def locate(path) -> list[tuple]:
  """Candidate (Orbax PyTree dir, kind, meta) for a user path, best first. `kind` is 'train'
  (a step's `state` item; meta = its model config) or 'params' (a params-only directory)."""
  p = paths.resolve(path)
  if not p.exists():
    raise FileNotFoundError(f"{paths.display(p)}: no such checkpoint directory or file")
  if (p / "_METADATA").exists() and p.name != "state":
    return [(p, "params", read_meta(p))]
  if p.name == "state" and (p / "_METADATA").exists():
    p = p.parent
  steps = _step_dirs(p)
  if not steps:
    hint = (" (step directories exist but none is committed: an interrupted save?)"
            if p.is_dir() and any(c.name.isdigit() for c in _children(p)) else "")
    raise FileNotFoundError(f"{paths.display(p)}: neither a params directory nor a training "
                            f"workdir with a committed checkpoints/<step>{hint}")
  return [(s / "state", "train", _step_meta(s)) for s in steps]


def _children(p):
  ck = p / "checkpoints"
  return list((ck if ck.is_dir() else p).iterdir())


def _step_meta(step_dir) -> dict:
  try:
    cfg = json.loads((step_dir / "config" / "metadata").read_text())
  except (OSError, ValueError):
    return {}
  return model_meta(cfg)


def model_meta(config: dict) -> dict:
  """{name, variant, overrides, task_ids, dtype} of a config dict (what builds the model)."""
  m = dict(config.get("model") or {})
  return {"name": m.get("name", ""), "variant": m.get("variant", ""),
          "overrides": dict(m.get("overrides") or {}), "task_ids": m.get("task_ids"),
          "scale": (config.get("data") or {}).get("scale")}


def read_meta(params_dir) -> dict:
  f = paths.resolve(params_dir) / META_FILE
  return json.loads(f.read_text()) if f.exists() else {}


def has_ema(path) -> bool:
  """Whether `path` is a training checkpoint (params-only directories and .pth files hold just
  the weights)."""
  p = paths.resolve(path)
  return not p.is_file() and locate(p)[0][1] == "train"


def read_params(path, item: str = "params") -> tuple[dict[str, np.ndarray], dict]:
  """(flat numpy params {'blocks.0.kernel': array}, model meta) stored under `item` ('params'
  or 'ema') of the checkpoint at `path` (the newest intact step of a workdir, or a params-only
  directory, which has only 'params'). Only that subtree is read; a step that cannot be read
  falls back to the previous one with a warning."""
  errors = []
  for where, kind, meta in locate(path):
    if kind == "params" and item != "params":
      raise KeyError(f"{paths.display(where)}: a params-only directory has no {item!r} "
                     "parameter tree (its params are the weights)")
    try:
      return _read_tree(where, item, kind), meta
    except KeyError:
      raise
    except Exception as exc:
      if kind != "train":
        raise ValueError(f"{paths.display(where)}: unreadable params directory "
                         f"({type(exc).__name__}: {_first_line(exc)})") from None
      logging.warning("%s: cannot be read (%s); trying the previous step",
                      paths.display(where.parent), _first_line(exc))
      errors.append(where)
  raise ValueError(f"{paths.display(path)}: no readable checkpoint step "
                   f"({len(errors)} damaged)")


def _tree_metadata(where) -> dict:
  meta = ocp.PyTreeCheckpointer().metadata(where)
  tree = getattr(meta, "item_metadata", meta)
  return getattr(tree, "tree", tree)


def _read_tree(where, item: str, kind: str) -> dict:
  ckptr = ocp.PyTreeCheckpointer()
  tree = _tree_metadata(where)
  if not isinstance(tree, dict):
    raise ValueError(f"{paths.display(where)}: unreadable metadata ({type(tree).__name__})")
  if kind == "train":
    if not isinstance(tree.get(item), dict):
      raise KeyError(f"{paths.display(where)}: has no {item!r} tree (top-level keys: "
                     f"{sorted(tree)[:10]})")
    target = {item: jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), tree[item])}
  else:
    target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), tree)
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  out = ckptr.restore(where, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                                         partial_restore=True))
  return {k: np.asarray(v) for k, v in flatten(out[item] if kind == "train" else out).items()}


def write_params(path, params: dict, meta: dict) -> object:
  """Writes a params-only Orbax directory (nested or flat 'a.0.b' params) and its meta JSON."""
  p = paths.resolve(path)
  if p.exists():
    raise FileExistsError(f"{paths.display(p)}: already exists; choose a new output directory")
  if not any(isinstance(v, dict) for v in params.values()):
    params = unflatten(params)
  ckptr = ocp.StandardCheckpointer()
  try:
    ckptr.save(p, jax.tree.map(np.asarray, params))
    ckptr.wait_until_finished()
  finally:
    ckptr.close()
  paths.write_text(p / META_FILE, json.dumps(meta, indent=1, sort_keys=True))
  return p
