"""Params from and to Orbax directories, as flat {'blocks.0.1.atm.proj.kernel': array} dicts.

Reads either a training checkpoint (DEVELOPERS.md: `workdir/checkpoints/<step>/state`, a pure
dict with `params`, `ema`, ...; the latest step is taken), a single step directory, or a
params-only directory written by `write_params` (`python -m csr_jax.convert import`): an Orbax
PyTree whose root is the pure params dict, which `csr_jax.checkpoint.load_params` also reads
for `init_from`. Arrays come back as host numpy whatever the sharding they were saved with, and
only the requested subtree is read (no optimizer state).
"""

import os
from pathlib import Path

import numpy as np


def flatten(tree, prefix: str = "") -> dict:
  """Nested dict (int or str keys, as nnx.to_pure_dict / Orbax give them) -> {'a.0.b': leaf}."""
  out = {}
  for k, v in tree.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, key + "."))
    else:
      out[key] = v
  return out


def unflatten(flat: dict) -> dict:
  """Inverse of `flatten` (string keys)."""
  tree = {}
  for k, v in flat.items():
    node = tree
    *head, leaf = k.split(".")
    for part in head:
      node = node.setdefault(part, {})
    node[leaf] = v
  return tree


def state_dir(path: str | os.PathLike) -> Path:
  """The Orbax PyTree directory to read: `path` itself, its `state` item, or the latest step's."""
  p = Path(path)
  if not p.is_dir():
    raise FileNotFoundError(f"{p}: no such checkpoint directory")
  if (p / "_METADATA").is_file():
    return p
  if (p / "state" / "_METADATA").is_file():
    return p / "state"
  ckdir = p / "checkpoints" if (p / "checkpoints").is_dir() else p
  steps = sorted(int(d.name) for d in ckdir.iterdir()
                 if d.name.isdigit() and (d / "state" / "_METADATA").is_file())
  if not steps:
    raise FileNotFoundError(f"{p}: neither an Orbax params directory nor a training workdir "
                            "(no checkpoints/<step>/state inside)")
  return ckdir / str(steps[-1]) / "state"


def read_params(path: str | os.PathLike, key: str = "params") -> dict[str, np.ndarray]:
  """Flat numpy params stored under `key` ('params' or 'ema') of the checkpoint at `path`."""
  import jax  # Deferred: keeps `python -m csr_jax.convert --help` instant.
  import orbax.checkpoint as ocp

  d = state_dir(path)
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(d)
  tree = getattr(meta, "item_metadata", meta)
  tree = getattr(tree, "tree", tree)
  if not isinstance(tree, dict):
    raise KeyError(f"{d}: not a dict checkpoint ({type(tree).__name__})")
  nested = isinstance(tree.get(key), dict)
  if nested:  # a training `state` item
    target = {key: jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), tree[key])}
  elif key == "params" and "opt_state" not in tree:  # a params-only directory
    target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), tree)
  else:
    raise KeyError(f"{d}: has no {key!r} parameter tree (top-level keys: {sorted(tree)[:10]})")
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  out = ckptr.restore(d, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                                      partial_restore=True))
  return {k: np.asarray(v) for k, v in flatten(out[key] if nested else out).items()}


def write_params(path: str | os.PathLike, params: dict) -> Path:
  """Writes a params-only Orbax directory; `params` nested (nnx.to_pure_dict) or flat ('a.0.b')."""
  import jax
  import orbax.checkpoint as ocp

  p = Path(path).absolute()
  if p.exists():
    raise FileExistsError(f"{p}: already exists; choose a new output directory")
  if not any(isinstance(v, dict) for v in params.values()):
    params = unflatten(params)
  ckptr = ocp.StandardCheckpointer()
  try:
    ckptr.save(p, jax.tree.map(np.asarray, params))
    ckptr.wait_until_finished()
  finally:
    ckptr.close()
  return p
