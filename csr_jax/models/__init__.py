"""Model factory: `create(name, variant, rngs=nnx.Rngs(seed))`.

Each family lives in its own module exposing `VARIANTS` (name -> keyword dict) and
`create(variant, *, rngs, **overrides)`. Modules are imported on first use, so importing
`csr_jax.models` stays cheap.
"""

import importlib

from flax import nnx

FAMILIES = {
    "ucip": "csr_jax.models.ucip",
    "promptcir": "csr_jax.models.promptcir",
    "promptsr": "csr_jax.models.promptsr",
    "cisr": "csr_jax.models.cisr",
}


def family(name: str):
  """The module implementing family `name`."""
  if name not in FAMILIES:
    raise KeyError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
  return importlib.import_module(FAMILIES[name])


def variants(name: str) -> list[str]:
  return sorted(family(name).VARIANTS)


def create(name: str, variant: str, *, rngs: nnx.Rngs | None = None, **overrides):
  """Builds model `name` in `variant`, e.g. create('ucip', 'middle', rngs=nnx.Rngs(0))."""
  mod = family(name)
  if variant not in mod.VARIANTS:
    raise KeyError(f"unknown variant {variant!r} of {name}; known: {sorted(mod.VARIANTS)}")
  return mod.create(variant, rngs=rngs if rngs is not None else nnx.Rngs(0), **overrides)


def abstract(name: str, variant: str, **overrides):
  """The model with ShapeDtypeStruct leaves: counts and shapes without allocating or compiling."""
  return nnx.eval_shape(lambda: create(name, variant, rngs=nnx.Rngs(0), **overrides))


def count_params(model) -> int:
  """Number of scalars in the model's nnx.Param leaves (works on abstract models)."""
  import math
  import jax
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
