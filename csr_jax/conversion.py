"""Generic JAX <-> PyTorch state_dict conversion: a name table plus per-tensor transforms.

A family's table is an ordered list of `Entry(torch_key, jax_path, transform)` in the order of
the official PyTorch `state_dict()`; buffers the JAX model recomputes (relative position
indices) are entries with `jax_path=None` and a fixed `buffer` value. Loading is strict: every
problem (missing, unexpected, mis-shaped key) is collected and reported in one error.
"""

import dataclasses
import re
from typing import Callable, Mapping

import numpy as np
import jax
from absl import logging
import jax.numpy as jnp
from flax import nnx

from csr_jax.layers.conv import Conv2d, Linear
from csr_jax.tree import path_str
from csr_jax.layers.norm import LayerNorm


class ConversionError(ValueError):
  """A state_dict does not match the model's table; the message lists every offending key.

  `missing`, `unexpected` and `misshaped` ((key, got shape, expected shape)) hold the details
  for callers that word the error their own way."""

  def __init__(self, message: str, missing=(), unexpected=(), misshaped=()):
    super().__init__(message)
    self.missing, self.unexpected, self.misshaped = list(missing), list(unexpected), list(misshaped)


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


def ordered_table(mod, order: Mapping[type, tuple], prefix: str = "",
                  family: str = "") -> list[Entry]:
  """Entries of `mod` in torch state_dict order, for modules whose torch registration order
  differs from attribute order. Conv2d / Linear / LayerNorm leaves follow the standard rule
  (`kernel` -> `weight` with the conv/linear transform, `scale` -> `weight`); any other module
  type needs `order[type] = (own, children)`: its own parameters in torch order (a name kept on
  both sides, or a (torch_name, jax_name, transform) triple), then its children's attribute
  names in registration order. None (activation slots, absent optional modules) has none."""
  if mod is None:
    return []
  if isinstance(mod, nnx.List):
    return [e for i, child in enumerate(mod)
            for e in ordered_table(child, order, f"{prefix}{i}.", family)]
  if isinstance(mod, (Conv2d, Linear)):
    out = [Entry(prefix + "weight", prefix + "kernel",
                 "conv" if isinstance(mod, Conv2d) else "linear")]
    return out + ([Entry(prefix + "bias", prefix + "bias")] if mod.bias is not None else [])
  if isinstance(mod, LayerNorm):
    out = [Entry(prefix + "weight", prefix + "scale")]
    return out + ([Entry(prefix + "bias", prefix + "bias")] if mod.bias is not None else [])
  if type(mod) not in order:
    raise TypeError(f"convert {family}: no torch order known for {type(mod).__name__} at "
                    f"{prefix.rstrip('.') or '<root>'}")
  own, children = order[type(mod)]
  out = [Entry(prefix + o, prefix + o) if isinstance(o, str)
         else Entry(prefix + o[0], prefix + o[1], o[2]) for o in own]
  for name in children:
    out += ordered_table(getattr(mod, name), order, f"{prefix}{name}.", family)
  return out


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
    v = v.detach().cpu()
    return (v.float() if str(v.dtype) == "torch.bfloat16" else v).numpy()
  return np.asarray(v)


def load_torch_file(path, container_key: str | None = None) -> dict:
  """Reads a .pth state_dict safely: `torch.load(weights_only=True)`, so pickled code is
  refused, never run. `container_key` picks a nested dict (e.g. BasicSR's 'params')."""
  import pickle
  import torch  # Deferred: conversion to JAX needs torch only to read .pth files.
  from csr_jax import paths
  where = paths.resolve(path)
  if not where.is_file():
    raise FileNotFoundError(f"{paths.display(where)}: no such state_dict file")
  if where.stat().length == 0:
    raise ConversionError(f"{paths.display(where)}: empty file (0 bytes), not a state_dict")
  try:
    with where.open("rb") as f:
      obj = torch.load(f, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError:
    raise ConversionError(
        f"{paths.display(where)}: refused: the file holds pickled Python objects other than "
        "tensors (they were not run); only plain state_dicts of tensors are accepted") from None
  except Exception as exc:  # truncated or not a torch file at all
    raise ConversionError(f"{paths.display(where)}: not a readable state_dict, truncated or "
                          f"corrupt ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''})"
                          ) from None
  if container_key is not None:
    if not isinstance(obj, dict) or container_key not in obj:
      keys = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
      raise ConversionError(f"{paths.display(where)}: has no key {container_key!r} "
                            f"(top-level keys: {keys})")
    obj = obj[container_key]
  if not isinstance(obj, dict):
    raise ConversionError(f"{paths.display(where)}: expected a state_dict (dict of tensors), "
                          f"got {type(obj).__name__}")
  return obj


def flat_from_torch(table: list[Entry], shapes: Mapping[str, tuple], state_dict: Mapping,
                    source: str = "state_dict") -> dict[str, np.ndarray]:
  """{jax path: float32 array} from a torch state_dict, strictly: missing, unexpected and
  mis-shaped keys, buffers that differ from the layout's, integer or boolean tensors where
  weights belong, and non-finite values are all listed in one `ConversionError`. Other float
  precisions (fp16, bf16, fp64) are converted to float32 with a warning naming how many."""
  sd = dict(state_dict)
  missing, bad, values, recast = [], [], {}, []
  for e in table:
    if e.torch_key not in sd:
      missing.append(e.torch_key)
      continue
    raw = sd.pop(e.torch_key)
    arr = _as_numpy(raw)
    if e.jax_path is None:
      want = np.asarray(e.buffer)
      if arr.shape != want.shape or not np.array_equal(arr, want):
        bad.append(f"{e.torch_key}: buffer differs from the one this layout implies "
                   f"({arr.shape} vs {want.shape})")
      continue
    if not np.issubdtype(arr.dtype, np.floating):
      bad.append(f"{e.torch_key}: dtype {arr.dtype}, expected floating point weights")
      continue
    if not np.all(np.isfinite(arr)):
      bad.append(f"{e.torch_key}: {int(np.sum(~np.isfinite(arr)))} non-finite values")
      continue
    if str(getattr(raw, "dtype", arr.dtype)) not in ("float32", "torch.float32"):
      recast.append(f"{e.torch_key} ({getattr(raw, 'dtype', arr.dtype)})")
    new = TRANSFORMS[e.transform][1](arr.astype(np.float32))
    want = tuple(shapes[e.jax_path])
    if tuple(new.shape) != want:
      torch_shape = TRANSFORMS[e.transform][0](np.zeros(want, np.int8)).shape
      bad.append(f"{e.torch_key}: got {tuple(arr.shape)}, expected {tuple(torch_shape)}")
      continue
    values[e.jax_path] = np.ascontiguousarray(new)
  problems = _problems(missing, list(sd), bad, noun=" keys")
  if problems:
    raise ConversionError(f"{source}: does not match the model layout; " + "; ".join(problems),
                          missing, list(sd), bad)
  if recast:
    logging.warning("%s: %d tensors converted to float32: %s", source, len(recast),
                    ", ".join(recast[:5]) + (" ..." if len(recast) > 5 else ""))
  return values


def from_torch(table: list[Entry], model, state_dict: Mapping, source: str = "state_dict"):
  """Loads `state_dict` into `model` in place, strictly; returns the model."""
  shapes = {k: _shape(v) for k, v in flat_params(model).items()}
  return load_flat_params(model, flat_from_torch(table, shapes, state_dict, source), source)


def _problems(missing: list, unexpected: list, misshaped: list, noun: str = "") -> list[str]:
  """The parts of a strict loader's one-line error: each non-empty list, counted, first 20."""
  parts = (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
  return [f"{what}{noun} ({len(items)}): {items[:20]}" for what, items in parts if items]


def _shape(v) -> tuple:
  return tuple(v.shape) if hasattr(v, "shape") else tuple(np.shape(v))


def match_flat(want: Mapping[str, object], flat: Mapping[str, object], source: str = "params",
               skip: str | None = None) -> dict:
  """The one strict flat-params check: {key: value of `flat`} for every key of `want`.

  `want` maps 'blocks.0.kernel' to anything with a shape (array, ShapeDtypeStruct). Keys that
  match the regex `skip` (re.search) are left out on both sides (fine-tuning keeps them at their
  fresh init); every other difference (missing, unexpected, mis-shaped) is listed in one
  `ConversionError`.
  """
  skipped = re.compile(skip).search if skip else (lambda _: False)
  flat = {k: v for k, v in flat.items() if not skipped(k)}
  missing, bad, values = [], [], {}
  for key, ref in want.items():
    if skipped(key):
      continue
    if key not in flat:
      missing.append(key)
      continue
    v = flat.pop(key)
    if _shape(v) != _shape(ref):
      bad.append((key, _shape(v), _shape(ref)))
      continue
    values[key] = v
  problems = _problems(missing, sorted(flat), [f"{k}: got {g}, expected {e}" for k, g, e in bad])
  if problems:
    raise ConversionError(f"{source}: parameters do not match the model; " + "; ".join(problems),
                          missing, sorted(flat), bad)
  return values


def load_flat_params(target, flat: Mapping[str, np.ndarray], source: str = "params",
                     skip: str | None = None):
  """Strictly loads {'blocks.0.1.atm.proj.kernel': array} (e.g. from Orbax) into `target`.

  `target` is an NNX model (updated in place and returned) or a pure params dict (arrays or
  ShapeDtypeStructs; a new dict of numpy arrays in the target dtypes is returned). Params whose
  path matches `skip` keep the target's value (a pure dict target must then hold arrays).
  """
  if isinstance(target, nnx.Module):
    flat_state = nnx.to_flat_state(nnx.state(target, nnx.Param))
    values = match_flat({path_str(p): var[...] for p, var in flat_state}, flat, source, skip)
    for p, var in flat_state:
      key = path_str(p)
      if key in values:
        var[...] = jnp.asarray(values[key], dtype=var[...].dtype)
    nnx.update(target, nnx.from_flat_state(flat_state))
    return target
  want = {path_str(p): v for p, v in jax.tree_util.tree_leaves_with_path(target)}
  values = match_flat(want, flat, source, skip)

  def pick(path, ref):
    key = path_str(path)
    if key in values:
      return np.asarray(values[key], dtype=ref.dtype)
    if isinstance(ref, jax.ShapeDtypeStruct):
      raise ValueError(f"{source}: {key} matches skip={skip!r} but the target has no value for it")
    return ref

  return jax.tree_util.tree_map_with_path(pick, target)
