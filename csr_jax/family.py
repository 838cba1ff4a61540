"""FamilySpec: one model family's protocol, defined once beside its model.

Generic modules (train, step, inference, evaluate, report, convert, restore) know a family
only through its spec: how to build it, what a batch must hold, whether it takes a task id and
which, its loss, which output is the image that gets scored, how a whole image goes through it
(padding, tiles, ensembles), how it is scored and how its weights map to PyTorch. Each family
module defines `SPEC = FamilySpec(...)`; `csr_jax.models.spec(name)` finds it, and a
'package.module:ATTR' name finds a spec defined anywhere (a new family needs no edit here).
"""

import dataclasses
import fnmatch
import inspect
from typing import Callable, Mapping


@dataclasses.dataclass(frozen=True)
class Inference:
  """How a whole image goes through the model (the family's official test protocol).

  `multiple`: pad H and W up to a multiple of it. `pad_mode`: 'reflect' (mirror without the
  edge: torch F.pad 'reflect', UCIP/HAT test code) or 'flip' (mirror with the edge:
  PromptCIR's cat([x, flip(x)])). `pad_always`: pad to (n // multiple + 1) * multiple, i.e.
  by at least one pixel, as the official UCIP and PromptCIR scripts do. `tile` (0: whole image)
  and `tile_overlap`: overlapping tiles averaged where they overlap. `ensemble`: 'none', 'x8'
  (the 8 flips/transposes) or 'transpose' (identity and H<->W transpose, PromptCIR's NTIRE
  script). `tile_blend`: 'mean' averages every tile over its whole area (the official scripts);
  'stitch' keeps from each tile only the part nearer its centre than any other tile's (cuts in
  the middle of each overlap), so a model with receptive radius r and no image-wide statistics
  gives exactly its untiled output when tile_overlap >= 2 r.
  """
  multiple: int = 1
  pad_mode: str = "reflect"
  pad_always: bool = False
  tile: int = 0
  tile_overlap: int = 0
  ensemble: str = "none"
  tile_blend: str = "mean"


@dataclasses.dataclass(frozen=True)
class Preset:
  """A published test procedure (`restore --preset NAME`): the protocol, how many checkpoints it
  averages, and the variant whose weights were published."""
  inference: Inference
  checkpoints: int = 1
  variant: str | None = None
  about: str = ""


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """How the family's paper scores an image.

  `channel`: 'y' (BT.601 luma, the SR papers) or 'rgb' (PromptCIR); the table shows that
  channel, the per-image CSV both. `crop_border`: None = the scale (0 at x1). `psnr_b`: also
  PSNR-B (restoration papers). `best_metric`: the column that picks the best checkpoint.
  """
  channel: str = "y"
  crop_border: int | None = None
  psnr_b: bool = False
  best_metric: str = "psnr_y"


def _identity(output):
  return output


@dataclasses.dataclass(frozen=True)
class FamilySpec:
  """Everything generic code needs to know about one family (see the module docstring).

  - `variants`: name -> constructor keywords of `build(**kw, rngs=...)`.
  - `torch_table(model)`: the conversion name table (`csr_jax.conversion.Entry` list) in
    the PyTorch state_dict order.
  - `task_ids`: codec name pattern (fnmatch) -> prompt id, in the paper's order; None when the
    model takes no task id. A checkpoint may carry its own table (`config.model.task_ids`).
  - `targets`: batch images besides 'lr' that the loss reads ('hr', 'lr_clean').
  - `loss(config)` -> fn(output, batch) -> scalar; None: `config.loss` on `predict(output)`
    against 'hr'.
  - `predict(output)`: the image that is scored and written; `extras(output)`: other named
    outputs worth a metric, each scored against the example image `extra_target(name)`.
  - `blind_option`: the constructor keyword that makes a task-id family ignore task ids
    (predicting them from the image); such a model needs no codec table.
  - `presets`: name -> `Preset`, the official test procedures (`restore --preset`).
  """
  name: str
  variants: Mapping[str, Mapping]
  build: Callable
  torch_table: Callable
  task_ids: Mapping[str, int] | None = None
  targets: tuple = ("hr",)
  loss: Callable | None = None
  predict: Callable = _identity
  extras: Callable | None = None
  extra_target: Callable | None = None
  inference: Inference = Inference()
  evaluation: Evaluation = Evaluation()
  blind_option: str | None = None
  presets: Mapping[str, Preset] = dataclasses.field(default_factory=dict)

  def check(self, variant: str, overrides) -> None:
    """One-line errors for an unknown variant or constructor option, before anything is built."""
    if variant not in self.variants:
      raise KeyError(f"unknown variant {variant!r} of {self.name}; known: "
                     f"{', '.join(sorted(self.variants))}")
    build = self.build.__init__ if inspect.isclass(self.build) else self.build
    params = inspect.signature(build).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
      unknown = sorted(set(overrides) - set(params))
      if unknown:
        raise TypeError(f"{self.name}: unknown option(s) {unknown} (config.model.overrides); "
                        f"known: {sorted(k for k in params if k not in ('self', 'rngs'))}")

  def create(self, variant: str, *, rngs, **overrides):
    """The `variant` model with `overrides` on its constructor keywords."""
    self.check(variant, overrides)
    return self.build(**{**self.variants[variant], **overrides}, rngs=rngs)

  def apply(self, model, lr, task_id=None):
    """The forward pass: `model(lr, task_id)` for task-id families, `model(lr)` otherwise."""
    return model(lr, task_id) if self.task_ids is not None else model(lr)


def task_id(table: Mapping[str, int], codec: str, *, where: str = "") -> int:
  """The prompt id of `codec` in `table` (exact name first, then fnmatch patterns in order)."""
  if codec in table:
    return int(table[codec])
  for pattern, tid in table.items():
    if fnmatch.fnmatchcase(codec, pattern):
      return int(tid)
  raise KeyError(f"{where + ': ' if where else ''}codec {codec!r} has no prompt in this "
                 f"model's task table {dict(table)} (extend config.model.task_ids, or use "
                 "a blind model)")
