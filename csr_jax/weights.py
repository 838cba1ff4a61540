"""The one builder of "this model with these weights", and the one strict loader.

Train, benchmark, convert, restore and the zoo all get their models here. The structure always
comes from `nnx.eval_shape` (tracing only: no random init, nothing compiled); the weights come
from a fresh init (`init_params`, host-side draws), a training checkpoint or params-only
directory (`csr_jax.checkpoint`), or a PyTorch .pth file converted through the family's name
table. Whatever the source, loading is strict: every missing, unexpected or mis-shaped key is
listed in one error (the first 20, and a count).
"""

import dataclasses
from typing import Mapping

import jax
import numpy as np
from flax import nnx

from csr_jax import checkpoint
from csr_jax import models
from csr_jax import paths
from csr_jax import conversion
from csr_jax.family import FamilySpec
from csr_jax.tree import flatten


@dataclasses.dataclass(frozen=True)
class ModelRef:
  """Which model: a family (registry name or 'package.module:SPEC'), a variant, constructor
  overrides and the task-id table the weights go with (None for families without task ids)."""
  name: str
  variant: str
  overrides: Mapping = dataclasses.field(default_factory=dict)
  task_ids: Mapping[str, int] | None = None

  @property
  def spec(self) -> FamilySpec:
    return models.spec(self.name)

  def make(self, seed: int = 0):
    return self.spec.create(self.variant, rngs=nnx.Rngs(seed), **dict(self.overrides))

  def meta(self, **extra) -> dict:
    """What a params-only directory records about the model (JSON)."""
    return {"name": self.name, "variant": self.variant, "overrides": dict(self.overrides),
            "task_ids": None if self.task_ids is None else dict(self.task_ids), **extra}


def ref(name: str, variant: str, overrides: Mapping | None = None, task_ids=None) -> ModelRef:
  """A ModelRef; `task_ids` defaults to the family's table. Unknown names and variants are
  one-line errors."""
  spec = models.spec(name)
  overrides = dict(overrides or {})
  spec.check(variant, overrides)
  blind = spec.blind_option is not None and overrides.get(spec.blind_option)
  table = None if spec.task_ids is None or blind else dict(task_ids or spec.task_ids)
  return ModelRef(name, variant, overrides, table)


def ref_from_config(config) -> ModelRef:
  m = config.model
  return ref(m.name, m.variant, dict(m.get("overrides", None) or {}), m.get("task_ids", None))


def ref_from_meta(meta: Mapping, where: str = "") -> ModelRef:
  if not meta.get("name") or not meta.get("variant"):
    raise KeyError(f"{where}: does not record which model it holds (no family/variant); pass "
                   "--config (or --model and --variant)")
  return ref(meta["name"], meta["variant"], meta.get("overrides"), meta.get("task_ids"))


def abstract(r: ModelRef):
  """(graphdef, non-param state, params as a pure dict of ShapeDtypeStructs)."""
  graphdef, params, rest = nnx.split(nnx.eval_shape(lambda: r.make()), nnx.Param, ...)
  return graphdef, rest, nnx.to_pure_dict(params)


def init_params(r: ModelRef, seed: int) -> dict:
  """Fresh params as a pure dict of host numpy arrays (the initialisers draw on the host, so
  nothing compiles; the same seed gives the same values as a jitted init)."""
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(r.make(seed), nnx.Param)))


def merge(graphdef, rest, params):
  """The model holding `params` (pure dict)."""
  return nnx.merge(graphdef, nnx.State(params), rest)


def _shapes(target) -> dict:
  return {k: tuple(v.shape) for k, v in flatten(target).items()}


def load(source, r: ModelRef, target: dict, *, item: str = "params",
         skip: str | None = None) -> dict:
  """Params for `target` (pure dict of arrays or ShapeDtypeStructs) from `source`: a workdir,
  checkpoints or step directory, a params-only directory, or a .pth file (converted with the
  family's table). Host numpy, in the target's dtypes; params whose path matches the regex
  `skip` keep the target's value (which must then be an array)."""
  where = paths.resolve(source)
  if where.is_file():
    graphdef, rest, _ = abstract(r)
    flat = conversion.flat_from_torch(r.spec.torch_table(merge(graphdef, rest, target)),
                                _shapes(target), conversion.load_torch_file(where),
                                source=paths.display(where))
  else:
    flat, _ = checkpoint.read_params(where, item)
  return conversion.load_flat_params(target, flat, source=f"{paths.display(where)} ({item})",
                               skip=skip)


def model_from(source, r: ModelRef | None = None, *, item: str = "params"):
  """(ModelRef, model) holding the weights at `source`; the model comes from `r`, else from
  what the checkpoint or params directory records."""
  if r is None:
    where = paths.resolve(source)
    if where.is_file():
      raise KeyError(f"{paths.display(where)}: a .pth file does not say which model it holds; "
                     "pass --config (or --model and --variant)")
    r = ref_from_meta(checkpoint.locate(where)[0][2], paths.display(where))
  graphdef, rest, target = abstract(r)
  params = jax.tree.map(jax.numpy.asarray, load(source, r, target, item=item))
  return r, merge(graphdef, rest, params)


def load_module(make, state_dict, table_fn, source: str = "state_dict"):
  """`make()`'s module (a model or any block) holding a torch `state_dict`, strictly, built
  without a random init (block-level parity tests use it)."""
  graphdef, params, rest = nnx.split(nnx.eval_shape(make), nnx.Param, ...)
  target = nnx.to_pure_dict(params)
  flat = conversion.flat_from_torch(table_fn(merge(graphdef, rest, target)), _shapes(target),
                              state_dict, source)
  return merge(graphdef, rest, jax.tree.map(jax.numpy.asarray,
                                            conversion.load_flat_params(target, flat, source)))
