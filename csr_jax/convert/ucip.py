"""UCIP <-> official PyTorch `UCIP_MLP` name table.

Names are identical on both sides (JAX `kernel`/`scale` are torch `weight`); the table walks
the model in torch's `state_dict()` order: a module's own parameters first (`ATMOp.weight`,
`Dyanmic_Prompt_Basis.prompt`), then its children in registration order. So
`prompts.i.prompt` precedes `prompts.i.basis_mlp.*`, although NNX sorts it after. The 1x1
`ATMOp` kernel is HWIO (1, 1, C, C) -> OIHW like any conv; the prompt bank has the official
shape (num_task, num_basis, 1, 1, p) and is copied. Works on abstract models too.
"""

from flax import nnx

from csr_jax.convert.core import Entry
from csr_jax.layers.conv import Conv2d, Linear
from csr_jax.layers.norm import LayerNorm
from csr_jax.models import ucip as m

# Per module type: own parameters (torch order), then children (registration order).
_ORDER = {
    m.UCIP: ((), ("patch_embed", "blocks", "prompts", "pos_blocks", "norm", "conv_after_body",
                  "conv_before_up", "conv_up1", "conv_up2", "conv_hr", "conv_last")),
    m.OverlapPatchEmbed: ((), ("proj",)),
    m.DynamicActiveBlock: ((), ("norm1", "atm", "norm2", "mlp", "offset_layer", "spade")),
    m.ATMLayer: ((), ("atm_h", "atm_w", "atm_local", "fusion", "proj")),
    m.ATMOp: ((("weight", "kernel", "conv"), ("bias", "bias", "copy")), ()),
    m.Mlp: ((), ("fc1", "fc2")),
    m.SPADE: ((), ("mlp_shared", "mlp_gamma", "mlp_beta")),
    m.DynamicPromptBasis: ((("prompt", "prompt", "copy"),), ("basis_mlp", "task_head")),
    m.PEG: ((), ("proj",)),
}


def _entries(prefix: str, mod) -> list[Entry]:
  if mod is None:  # activation slots of a torch Sequential, absent optional modules
    return []
  if isinstance(mod, nnx.List):
    return [e for i, child in enumerate(mod) for e in _entries(f"{prefix}{i}.", child)]
  if isinstance(mod, (Conv2d, Linear)):
    out = [Entry(prefix + "weight", prefix + "kernel",
                 "conv" if isinstance(mod, Conv2d) else "linear")]
    return out + ([Entry(prefix + "bias", prefix + "bias")] if mod.bias is not None else [])
  if isinstance(mod, LayerNorm):
    out = [Entry(prefix + "weight", prefix + "scale")]
    return out + ([Entry(prefix + "bias", prefix + "bias")] if mod.bias is not None else [])
  if type(mod) not in _ORDER:
    raise TypeError(f"convert.ucip: no torch order known for {type(mod).__name__} at "
                    f"{prefix.rstrip('.') or '<root>'}")
  own, children = _ORDER[type(mod)]
  out = [Entry(prefix + t, prefix + j, tf) for t, j, tf in own]
  for name in children:
    out += _entries(f"{prefix}{name}.", getattr(mod, name))
  return out


def table(model: m.UCIP) -> list[Entry]:
  """Entries in the official state_dict order (1066 for `middle`)."""
  return _entries("", model)
