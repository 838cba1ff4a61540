"""Model registry: family name -> `FamilySpec` (`csr_jax.family`), and builders over it.

Each family module (`csr_jax/models/<name>.py`) defines `SPEC`; a name of the form
'package.module:ATTR' names a spec defined anywhere else (a new family needs no edit under
csr_jax/). Modules are imported on first use, so importing `csr_jax.models` stays cheap.
"""

import importlib
import math

from flax import nnx

from csr_jax.family import FamilySpec

FAMILIES = {
    "ucip": "csr_jax.models.ucip",
    "promptcir": "csr_jax.models.promptcir",
    "promptsr": "csr_jax.models.promptsr",
    "cisr": "csr_jax.models.cisr",
}


def spec(name: str) -> FamilySpec:
  """The FamilySpec of a registered family, or of 'package.module:ATTR'."""
  if ":" in name:
    module, _, attr = name.partition(":")
    try:
      found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
      raise KeyError(f"model family {name!r}: cannot import it ({exc})") from None
  elif name in FAMILIES:
    found = importlib.import_module(FAMILIES[name]).SPEC
  else:
    raise KeyError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))} "
                   "or 'package.module:SPEC'")
  if not isinstance(found, FamilySpec):
    raise KeyError(f"model family {name!r} is a {type(found).__name__}, not a FamilySpec")
  return found


def variants(name: str) -> list[str]:
  return sorted(spec(name).variants)


def create(name: str, variant: str, *, rngs: nnx.Rngs | None = None, **overrides):
  """Builds model `name` in `variant`, e.g. create('ucip', 'middle', rngs=nnx.Rngs(0))."""
  return spec(name).create(variant, rngs=rngs if rngs is not None else nnx.Rngs(0),
                           **overrides)


def abstract(name: str, variant: str, **overrides):
  """The model with ShapeDtypeStruct leaves: counts and shapes without allocating or compiling."""
  return nnx.eval_shape(lambda: create(name, variant, rngs=nnx.Rngs(0), **overrides))


def count_params(model) -> int:
  """Number of scalars in the model's nnx.Param leaves (works on abstract models)."""
  import jax
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
