"""PromptCIR <-> official PyTorch `MyModel(decoder=True)` name table.

Names are identical on both sides (JAX `kernel`/`scale` are torch `weight`), so the table is the
model walked in torch's `state_dict()` order: a module's own parameters and buffers first, then
its children in registration order. The two int64 relative position index buffers lead the
official state_dict and are emitted from the model's window sizes. Works on abstract models
(`csr_jax.models.abstract`) too: only the structure is read.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from csr_jax import models
from csr_jax.convert import core
from csr_jax.convert.core import Entry
from csr_jax.layers.ocab import relative_position_index_oca
from csr_jax.layers.restormer import GDFN, MDTA
from csr_jax.layers.window import WindowAttention, relative_position_index
from csr_jax.models import promptcir as m

# Per module type: own parameters (in torch order), then children (in registration order).
_ORDER = {
    m.PromptCIR: ((), ("patch_embed_input", "prompt1", "prompt2", "prompt3", "encoder_level1",
                       "down1_2", "encoder_level2", "down2_3", "encoder_level3", "down3_4",
                       "latent", "up4_3", "reduce_chan_level3", "noise_level3",
                       "reduce_noise_level3", "decoder_level3", "up3_2", "reduce_chan_level2",
                       "noise_level2", "reduce_noise_level2", "decoder_level2", "up2_1",
                       "noise_level1", "reduce_noise_level1", "decoder_level1", "refinement",
                       "output")),
    m.PromptBasis: (("prompt",), ("basis_mlp", "task_mlp", "conv3x3")),
    m.Mlp: ((), ("fc1", "fc2")),
    m.RHAG: ((), ("residual_group", "conv")),
    m.AttenBlocks: ((), ("blocks", "overlap_attn")),
    m.HAB: ((), ("norm1", "attn", "conv_block", "norm2", "ffn")),
    m.CAB: ((), ("cab",)),
    m.ChannelAttention: ((), ("attention",)),
    m.OCAB: (("relative_position_bias_table",), ("norm1", "qkv", "proj", "norm2", "ffn")),
    m.TransformerBlock: ((), ("norm1", "attn", "norm2", "ffn")),
    m.RestormerNorm: ((), ("body",)),
    m.Resample: ((), ("body",)),
    m.OverlapPatchEmbed: ((), ("proj",)),
    WindowAttention: (("relative_position_bias_table",), ("qkv", "proj")),
    MDTA: (("temperature",), ("qkv", "qkv_dwconv", "project_out")),
    GDFN: ((), ("project_in", "dwconv", "project_out")),
}


def module_table(mod, prefix: str = "") -> list[Entry]:
  """Entries of any PromptCIR (sub)module in torch order; block-level tests load twins with it."""
  return core.ordered_table(mod, _ORDER, prefix, family="promptcir")


def table(model: m.PromptCIR) -> list[Entry]:
  """Entries in the official state_dict order: 2 buffers, then the parameters."""
  ws, ows = model.window_size, model.overlap_win_size
  buffers = [Entry("relative_position_index_SA", None, buffer=relative_position_index(ws)),
             Entry("relative_position_index_OCA", None,
                   buffer=relative_position_index_oca(ws, ows))]
  return buffers + module_table(model)


def to_torch(model) -> dict:
  """{torch key: numpy array} ready for `MyModel(decoder=True).load_state_dict(strict=True)`
  (wrap the arrays with torch.from_numpy)."""
  return core.to_torch(table(model), model)


def from_torch(model, state_dict, source: str = "state_dict"):
  """Loads an official/twin state_dict (tensors or arrays) into `model` strictly, in place."""
  return core.from_torch(table(model), model, state_dict, source)


def load_module(make, state_dict, source: str = "state_dict", table_fn=module_table):
  """`make()`'s module (the model or any block) holding `state_dict`'s weights, built without a
  random init: the structure comes from `nnx.eval_shape` (tracing only), so no per-shape init
  kernels are compiled, which takes minutes for the official model on a small CPU."""
  graphdef, state = nnx.split(nnx.eval_shape(make))
  module = nnx.merge(graphdef, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), state))
  core.from_torch(table_fn(module), module, state_dict, source)
  graphdef, state = nnx.split(module)
  return nnx.merge(graphdef, jax.tree.map(jnp.asarray, state))


def load(variant: str, state_dict, source: str = "state_dict", **overrides) -> m.PromptCIR:
  """`create(variant)` holding an official/twin `state_dict` (buffers checked), no random init."""
  return load_module(lambda: models.create("promptcir", variant, **overrides), state_dict,
                     source, table_fn=table)
