"""UCIP <-> official PyTorch `UCIP_MLP` name table.

Names are identical on both sides (JAX `kernel`/`scale` are torch `weight`); the table walks
the model in torch's `state_dict()` order: a module's own parameters first (`ATMOp.weight`,
`Dyanmic_Prompt_Basis.prompt`), then its children in registration order. So
`prompts.i.prompt` precedes `prompts.i.basis_mlp.*`, although NNX sorts it after. The 1x1
`ATMOp` kernel is HWIO (1, 1, C, C) -> OIHW like any conv; the prompt bank has the official
shape (num_task, num_basis, 1, 1, p) and is copied. Works on abstract models too.
"""

from csr_jax.convert.core import Entry, ordered_table
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


def table(model: m.UCIP) -> list[Entry]:
  """Entries in the official state_dict order (1066 for `middle`)."""
  return ordered_table(model, _ORDER, family="ucip")
