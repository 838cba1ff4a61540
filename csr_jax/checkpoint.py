"""Orbax checkpoints: `workdir/checkpoints/<step>/{state, data_iter, config}` (DEVELOPERS.md).

Saves are async and atomic (Orbax writes a temporary directory and renames it); `close()` waits
for the last one. Restores go into abstract targets that carry shardings, so a checkpoint
written on N devices restores on M.
"""

import json
import os

import grain
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

ITEMS = ("state", "data_iter", "config")


class Checkpointer:
  """Keeps the last `keep` checkpoints plus the best one by `best_metric` (if given)."""

  def __init__(self, directory: str, *, keep: int = 3, best_metric: str | None = None,
               best_mode: str = "max", async_save: bool = True):
    policies = [ocm.LatestN(n=keep)]
    if best_metric:
      policies.append(ocm.BestN(get_metric_fn=lambda m: m[best_metric], n=1,
                                reverse=best_mode == "min", keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocm.AnyPreservationPolicy(policies), create=True,
        enable_async_checkpointing=async_save)
    self.directory = os.path.abspath(directory)
    self.best_metric, self.best_mode = best_metric, best_mode
    self.mngr = ocp.CheckpointManager(
        self.directory, options=options, item_names=ITEMS,
        item_handlers={"data_iter": grain.checkpoint.CheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.mngr.latest_step()

  def best_metric_value(self) -> float | None:
    """The best `best_metric` among the kept checkpoints (keep-best holds the best so far)."""
    if not self.best_metric:
      return None
    vals = [m[self.best_metric] for step in self.mngr.all_steps()
            if isinstance(m := self.mngr.metrics(step), dict) and self.best_metric in m]
    return (max if self.best_mode == "max" else min)(vals) if vals else None

  def save(self, step: int, state: dict, data_iter, config: dict, metrics: dict | None = None):
    self.mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data_iter=grain.checkpoint.CheckpointSave(data_iter),
        config=ocp.args.JsonSave(config)), metrics=metrics)

  def restore(self, step: int, abstract_state: dict, data_iter=None) -> dict:
    """The state at `step` (shardings from `abstract_state`); `data_iter` is restored in place."""
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      args["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    return self.mngr.restore(step, args=ocp.args.Composite(**args))["state"]

  def wait(self):
    self.mngr.wait_until_finished()

  def close(self):
    self.mngr.wait_until_finished()
    self.mngr.close()


def resolve(path: str) -> tuple[str, int]:
  """A checkpoints directory (-> its latest step) or one step directory -> (manager dir, step)."""
  path = os.path.abspath(path)
  base = os.path.basename(path)
  if base.isdigit() and os.path.isdir(os.path.join(path, "state")):
    return os.path.dirname(path), int(base)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    path = os.path.join(path, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []
  if not steps:
    raise FileNotFoundError(f"{path}: no finalized checkpoint step directories")
  return path, steps[-1]


def load_params(path: str, target, key: str = "params", skip: str | None = None):
  """Params (or 'ema') for `config.init_from`: from a training checkpoint (workdir, checkpoints
  dir or step dir) or a params-only directory (as `convert import` writes).

  `target` is the pure params dict (arrays or ShapeDtypeStructs carrying shardings); the result
  has its dtypes and shardings. Strict (`csr_jax.convert.load_flat_params`), except that params
  whose path matches the regex `skip` keep the target's (fresh) value.
  """
  import jax
  from csr_jax.convert import core, orbax_io
  if orbax_io.state_dir(path).name != "state":
    key = "params"  # a params-only directory has no EMA copy: its params are the weights
  flat = orbax_io.read_params(path, key)
  host = core.load_flat_params(target, flat, source=f"{path} ({key})", skip=skip)

  def place(new, ref):
    if new is ref:
      return ref
    if getattr(ref, "sharding", None) is None:
      return jax.numpy.asarray(new)
    return jax.make_array_from_callback(new.shape, ref.sharding, lambda idx: new[idx])

  return jax.tree.map(place, host, target)


def config_json(config) -> dict:
  """The config as plain JSON (ConfigDict -> dict), stored beside the state."""
  return json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else dict(config)
