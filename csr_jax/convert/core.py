"""Generic JAX <-> PyTorch state_dict conversion: a name table plus per-tensor transforms.

A family's table is an ordered list of `Entry(torch_key, jax_path, transform)` in the order of
the official PyTorch `state_dict()`; buffers the JAX model recomputes (relative position
indices) are entries with `jax_path=None` and a fixed `buffer` value. Loading is strict: every
problem (missing, unexpected, mis-shaped key) is collected and reported in one error.
"""

import dataclasses
import os
from typing import Callable, Mapping

import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx


class ConversionError(ValueError):
  """A state_dict does not match the model's table; the message lists every offending key."""


def _conv_to_torch(a):  # HWIO -> OIHW
  return np.transpose(a, (3, 2, 0, 1))


def _conv_from_torch(a):  # OIHW -> HWIO
  return np.transpose(a, (2, 3, 1, 0))


TRANSFORMS: dict[str, tuple[Callable, Callable]] = {
    "copy": (lambda a: a, lambda a: a),
    "conv": (_conv_to_torch, _conv_from_torch),
    "linear": (lambda a: np.transpose(a), lambda a: np.transpose(a)),
}


@dataclasses.dataclass(frozen=True)
class Entry:
  torch_key: str
  jax_path: str | None
  transform: str = "copy"
  buffer: np.ndarray | None = None


def path_str(path) -> str:
  return ".".join(str(getattr(p, "key", p)) for p in path)


def flat_params(model) -> dict[str, jax.Array]:
  """nnx.Param leaves of `model` keyed 'blocks.0.1.atm.proj.kernel' (NNX's sorted order).

  Works on abstract models too (values are then ShapeDtypeStructs)."""
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  return {path_str(p): v.get_value() if isinstance(v, nnx.Variable) else v for p, v in flat}


def auto_entry(jax_path: str, ndim: int) -> Entry:
  """The default rule: `kernel` 4-D -> conv `weight`, 2-D -> linear `weight`, `scale` ->
  `weight`, any other leaf keeps its name."""
  head, _, leaf = jax_path.rpartition(".")
  prefix = head + "." if head else ""
  if leaf == "kernel":
    return Entry(prefix + "weight", jax_path, "conv" if ndim == 4 else "linear")
  if leaf == "scale":
    return Entry(prefix + "weight", jax_path)
  return Entry(jax_path, jax_path)


def auto_table(model, overrides: Mapping[str, Entry] | None = None) -> list[Entry]:
  """One entry per parameter in module order, with per-path overrides."""
  overrides = overrides or {}
  return [overrides.get(p, None) or auto_entry(p, np.ndim(v))
          for p, v in flat_params(model).items()]


def to_torch(table: list[Entry], model) -> dict[str, np.ndarray]:
  """Ordered {torch_key: numpy array} for `torch.save` / `load_state_dict(strict=True)`."""
  params = flat_params(model)
  used = set()
  out = {}
  for e in table:
    if e.jax_path is None:
      out[e.torch_key] = np.asarray(e.buffer)
      continue
    if e.jax_path not in params:
      raise ConversionError(f"table names JAX parameter {e.jax_path!r} that the model lacks")
    used.add(e.jax_path)
    out[e.torch_key] = np.ascontiguousarray(TRANSFORMS[e.transform][0](np.asarray(params[e.jax_path])))
  left = [p for p in params if p not in used]
  if left:
    raise ConversionError(f"model parameters not in the table: {left[:20]}"
                          + (f" (+{len(left) - 20} more)" if len(left) > 20 else ""))
  return out


def _as_numpy(v):
  if hasattr(v, "detach"):  # a torch tensor; torch is imported only by whoever made it
    return v.detach().cpu().numpy()
  return np.asarray(v)


def load_torch_file(path: str | os.PathLike, container_key: str | None = None) -> dict:
  """Reads a .pth state_dict safely (weights_only=True, never unpickles code).

  `container_key` picks a nested dict (e.g. 'params' or 'params_ema' in BasicSR files).
  """
  import torch  # Deferred: conversion to JAX needs torch only to read .pth files.
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such state_dict file")
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as exc:  # corrupt, truncated or pickled code
    raise ConversionError(f"{path}: not a loadable weights-only state_dict "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
  if container_key is not None:
    if not isinstance(obj, dict) or container_key not in obj:
      raise ConversionError(f"{path}: has no key {container_key!r} "
                            f"(top-level keys: {list(obj)[:10] if isinstance(obj, dict) else type(obj)})")
    obj = obj[container_key]
  if not isinstance(obj, dict):
    raise ConversionError(f"{path}: expected a state_dict (dict of tensors), got {type(obj).__name__}")
  return obj


def from_torch(table: list[Entry], model, state_dict: Mapping, source: str = "state_dict"):
  """Loads `state_dict` into `model` in place, strictly; returns the model."""
  params = flat_params(model)
  sd = {k: v for k, v in state_dict.items()}
  missing, shape_bad, values = [], [], {}
  for e in table:
    if e.torch_key not in sd:
      missing.append(e.torch_key)
      continue
    arr = _as_numpy(sd.pop(e.torch_key))
    if e.jax_path is None:
      want = np.asarray(e.buffer)
      if arr.shape != want.shape or not np.array_equal(arr, want):
        shape_bad.append(f"{e.torch_key}: buffer differs from the one this layout implies "
                         f"({arr.shape} vs {want.shape})")
      continue
    new = TRANSFORMS[e.transform][1](arr)
    ref = params[e.jax_path]
    if tuple(new.shape) != tuple(ref.shape):
      torch_shape = TRANSFORMS[e.transform][0](np.zeros(ref.shape, np.int8)).shape
      shape_bad.append(f"{e.torch_key}: got {tuple(arr.shape)}, expected {tuple(torch_shape)}")
      continue
    values[e.jax_path] = new
  problems = []
  if missing:
    problems.append(f"missing keys ({len(missing)}): {missing[:20]}")
  if sd:
    problems.append(f"unexpected keys ({len(sd)}): {list(sd)[:20]}")
  if shape_bad:
    problems.append(f"mis-shaped keys ({len(shape_bad)}): {shape_bad[:20]}")
  if problems:
    raise ConversionError(f"{source}: does not match the model layout; " + "; ".join(problems))
  state = nnx.state(model, nnx.Param)
  flat = nnx.to_flat_state(state)
  for p, var in flat:
    var.set_value(jnp.asarray(values[path_str(p)], dtype=var.get_value().dtype))
  nnx.update(model, nnx.from_flat_state(flat))
  return model
