"""PromptSR <-> PyTorch twin (csr_jax/torch_twins/promptsr.py) name table.

No official checkpoint exists, so the twin's `state_dict()` is the layout: names are identical
on both sides (JAX `kernel`/`scale` are torch `weight`), walked in torch order (a module's own
parameters first, then its children in registration order). The twin's relative position
index is a non-persistent buffer, so no buffers appear. Works on abstract models too.
"""

from flax import nnx

from csr_jax.convert import core
from csr_jax.convert.core import Entry
from csr_jax.layers.conv import Conv2d, Linear
from csr_jax.layers.norm import LayerNorm
from csr_jax.models import promptsr as m

_ORDER = {
    m.PromptSR: ((), ("conv_first", "layers", "conv_after_body", "upsample")),
    m.ResidualGroup: ((), ("blocks", "conv")),
    m.CPB: ((), ("gapl", "lpl1", "lpl2")),
    m.GAPL: ((), ("norm1", "q", "k", "v", "down", "a", "kp", "vp", "norm2", "ffn")),
    m.LPL: (("relative_position_bias_table", "logit_scale"),
            ("norm1", "qkv", "proj", "norm2", "ffn")),
    m.FFN: ((), ("fc1", "fc2")),
}


def _entries(prefix: str, mod) -> list[Entry]:
  if isinstance(mod, (Conv2d, Linear)):
    out = [Entry(prefix + "weight", prefix + "kernel",
                 "conv" if isinstance(mod, Conv2d) else "linear")]
    return out + ([Entry(prefix + "bias", prefix + "bias")] if mod.bias is not None else [])
  if isinstance(mod, LayerNorm):
    return [Entry(prefix + "weight", prefix + "scale"), Entry(prefix + "bias", prefix + "bias")]
  if isinstance(mod, (list, tuple, nnx.List)):
    return [e for i, child in enumerate(mod) for e in _entries(f"{prefix}{i}.", child)]
  if type(mod) not in _ORDER:
    raise core.ConversionError(f"promptsr table: no rule for {type(mod).__name__} at {prefix!r}")
  own, children = _ORDER[type(mod)]
  out = [Entry(prefix + name, prefix + name) for name in own]
  for name in children:
    out += _entries(f"{prefix}{name}.", getattr(mod, name))
  return out


def table(model) -> list[Entry]:
  """Entries in the twin's state_dict order."""
  return _entries("", model)
