"""JAX <-> PyTorch checkpoint conversion, generic over model families.

Each family's spec (`csr_jax.models.<name>.SPEC.torch_table(model) -> list[conversion.Entry]`) gives the
official `state_dict()` order; these functions dispatch on the family name:

  sd = to_torch("ucip", model)                      # {torch_key: np.ndarray}, official order
  model = from_torch("ucip", "middle", "model.pth")  # strict, weights_only=True

Loading is strict in both directions: missing, unexpected and mis-shaped keys are all listed
in one `ConversionError`.
"""

import os
from typing import Mapping

import numpy as np

from csr_jax.conversion import (ConversionError, Entry, flat_params, load_flat_params,
                                  load_torch_file, path_str)
from csr_jax import conversion

__all__ = ["ConversionError", "Entry", "table", "to_torch", "from_torch", "load_torch_file",
           "save_torch_file", "load_flat_params", "flat_params"]


def table(name: str, model) -> list[Entry]:
  """The family's conversion table for this model instance (its depths, options)."""
  from csr_jax import models
  return models.spec(name).torch_table(model)


def to_torch(name: str, model) -> dict[str, np.ndarray]:
  """Ordered {torch_key: array} equal in names, order and shapes to the official state_dict."""
  return conversion.to_torch(table(name, model), model)


def strip_module_prefix(sd: Mapping) -> dict:
  """DistributedDataParallel saves 'module.'-prefixed keys; accept them when all keys have it."""
  keys = list(sd)
  if keys and all(k.startswith("module.") for k in keys):
    return {k[len("module."):]: v for k, v in sd.items()}
  return dict(sd)


def from_torch(name: str, variant: str, state_dict_or_path, *, container_key: str | None = None,
               rngs=None, **overrides):
  """A `name`/`variant` JAX model holding the weights of a torch state_dict or .pth file
  (strict; built without a random init)."""
  from flax import nnx
  from csr_jax import models, paths, weights

  source = "state_dict"
  sd = state_dict_or_path
  if isinstance(sd, (str, os.PathLike)):
    source = paths.display(paths.resolve(sd))
    sd = load_torch_file(sd, container_key)
  make = lambda: models.create(name, variant, rngs=rngs if rngs is not None else nnx.Rngs(0),
                               **overrides)
  return weights.load_module(make, strip_module_prefix(sd), lambda m: table(name, m), source)


def save_torch_file(state_dict: Mapping[str, np.ndarray], path) -> None:
  """torch.save of an ordered {key: array} as CPU tensors, written whole (temp + rename)."""
  import io
  import torch  # Deferred: only writing .pth files needs torch.
  from csr_jax import paths

  buf = io.BytesIO()
  torch.save({k: torch.from_numpy(np.array(v, copy=True)) for k, v in state_dict.items()}, buf)
  path = paths.resolve(path)
  tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
  tmp.write_bytes(buf.getvalue())
  tmp.replace(path)
