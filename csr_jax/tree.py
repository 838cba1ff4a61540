"""The one naming of pytree paths: 'blocks.0.3.atm.proj.kernel' (as torch state_dict keys read).

Used for strict loading, conversion tables, trainable/skip regexes and flat checkpoints alike.
"""


def path_str(path) -> str:
  """A jax/nnx key path (DictKey, SequenceKey, GetAttrKey or plain keys) -> 'a.0.b'."""
  return ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


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
