"""UCIP: universal compressed-image SR with dynamic prompts (ECCV 2024), x4, MLP-like.

Mirrors the official `UCIP_MLP` (`model_ucip.py` in lixinustc/UCIP_MLP_source_code, variant
`UCIP_Middle`): attribute names, nesting, parameter shapes and init equal the PyTorch ones,
so parameter paths read like its state_dict keys (`blocks.0.3.atm.atm_h.kernel`,
`prompts.2.basis_mlp.fc1.kernel`, `conv_before_up.0.kernel`). NHWC; input in [0, 1].

Where the official code is more specific than the paper / DESIGN.md:
- The input is not mean-normalised; the x4 tail uses nearest x2 twice (no pixel shuffle).
- `basis_mlp` is the `Mlp` class (`fc1`, GELU, `fc2`), not a Sequential: paths are
  `basis_mlp.fc1` / `basis_mlp.fc2`.
- The group residual adds the group input; SPADE follows every block (after the MLP).
- The prompt bank is initialised U[0, 1) (`torch.rand`), Linear/ATM weights
  trunc_normal(0.02) with zero bias, convs N(0, sqrt(2 / fan_out)) with zero bias.
- Only blocks j with `j % intv == 0 and j != depth - 1` own an `offset_layer` and run the
  group's `pos_blocks` PEG first; the other blocks reuse the latest offsets.

Blind mode (`blind=True`, not in the official code) adds `prompts.i.task_head`
(Linear C -> num_task) that predicts task weights from the spatially pooled group input;
their softmax mixes the prompt bank, PromptCIR-style, and task_id is not used.

`residual='bicubic'` (not in the official code, no parameters) adds the bicubically upscaled
input to the output and zero-initialises `conv_last`, so training starts exactly at the bicubic
baseline; the CPU demo uses it (a few hundred steps do not teach the official tail to
reproduce colours).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from csr_jax.conversion import Entry, ordered_table
from csr_jax.family import Evaluation, FamilySpec, Inference
from csr_jax.layers import init
from csr_jax.layers.act import leaky_relu, relu
from csr_jax.layers.axial import axial_sample
from csr_jax.layers.blocks import Mlp, OverlapPatchEmbed
from csr_jax.layers.conv import Conv2d, Linear
from csr_jax.layers.norm import LayerNorm, instance_norm
from csr_jax.layers.precision import softmax
from csr_jax.layers.remat import sequenced_checkpoint
from csr_jax.layers.resize import resize_bicubic, upsample_nearest

VARIANTS = {
    # Official UCIP_Middle: 11,424,291 parameters.
    "middle": dict(embed_dim=128, p_dim=64, depths=(6, 6, 6, 6, 6, 6), mlp_ratio=4.0,
                   share_dim=2, intv=2, num_task=6, num_basis=8, num_feat=64),
    # Same layout, CPU-sized: tests and laptop demos.
    "small": dict(embed_dim=32, p_dim=16, depths=(2, 2), mlp_ratio=4.0, share_dim=2, intv=2,
                  num_task=6, num_basis=8, num_feat=32),
    "tiny": dict(embed_dim=16, p_dim=8, depths=(2,), mlp_ratio=2.0, share_dim=2, intv=2,
                 num_task=6, num_basis=4, num_feat=16),
}


_TN = functools.partial(init.trunc_normal, std=0.02)


def _linear(d_in, d_out, keys):
  """nn.Linear with UCIP's _init_weights: trunc_normal(std .02), zero bias."""
  return Linear(d_in, d_out, rngs=keys, kernel_init=_TN, bias_init=init.zeros)


def _mlp(d_in, d_hidden, d_out, keys):
  return Mlp(d_in, d_hidden, d_out, rngs=keys, kernel_init=_TN, bias_init=init.zeros)


def _fan_out_normal(k, c_out, groups=1):
  """UCIP's conv init N(0, sqrt(2 / fan_out)), fan_out = k * k * c_out / groups."""
  return functools.partial(init.normal, std=math.sqrt(2.0 / (k * k * c_out // groups)))


def _conv(c_in, c_out, k, keys, groups=1, kernel_init=None):
  """nn.Conv2d (stride 1, 'same' padding) with UCIP's _init_weights (zero bias)."""
  return Conv2d(c_in, c_out, k, 1, k // 2, groups=groups, rngs=keys, bias_init=init.zeros,
                kernel_init=kernel_init or _fan_out_normal(k, c_out, groups))


class SPADE(nnx.Module):
  """Instance norm (no affine, eps 1e-5) modulated by gamma/beta convs of the prompt."""

  def __init__(self, p_dim, norm_nc, label_nc, *, keys):
    hidden = p_dim // 2
    self.mlp_shared = nnx.List([_conv(label_nc, hidden, 3, keys), None])  # [1] is ReLU
    self.mlp_gamma = _conv(hidden, norm_nc, 3, keys)
    self.mlp_beta = _conv(hidden, norm_nc, 3, keys)

  def __call__(self, x, prompt):
    actv = relu(self.mlp_shared[0](prompt))
    return instance_norm(x) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class ATMOp(nnx.Module):
  """torchvision deform_conv2d with a 1x1 kernel and a 1-D offset: axial sampling + 1x1 conv.

  `kernel` is HWIO (1, 1, C_in, C_out) like every conv here (torch `weight` (C_out, C_in, 1, 1)).
  axis 2 = W (`atm_w`, offset in torch's dx slots), axis 1 = H (`atm_h`, dy slots).
  """

  def __init__(self, c_in, c_out, axis: int, *, keys):
    self.axis = axis
    self.kernel = nnx.Param(_TN(keys.params(), (1, 1, c_in, c_out)))
    self.bias = nnx.Param(init.zeros(None, (c_out,)))

  def __call__(self, x, offset):
    return axial_sample(x, offset, self.axis) @ self.kernel[0, 0] + self.bias[...]


class ATMLayer(nnx.Module):
  """Active token mixer: W shift, H shift and a depthwise 5x5 branch, mixed per channel."""

  def __init__(self, dim, *, keys):
    self.dim = dim
    self.atm_h = ATMOp(dim, dim, 1, keys=keys)
    self.atm_w = ATMOp(dim, dim, 2, keys=keys)
    self.atm_local = _conv(dim, dim, 5, keys, groups=dim)
    self.fusion = _mlp(dim, dim // 4, dim * 3, keys)
    self.proj = _linear(dim, dim, keys)

  def __call__(self, x, offset):
    c = self.dim
    w = self.atm_w(x, offset[..., :c])
    h = self.atm_h(x, offset[..., c:])
    local = self.atm_local(x)
    a = self.fusion(jnp.mean(w + h + local, axis=(1, 2)))  # [B, 3C], torch order (C, 3)
    a = softmax(a.reshape(a.shape[0], c, 3), axis=-1)[:, None, None]
    return self.proj(w * a[..., 0] + h * a[..., 1] + local * a[..., 2])


class DynamicActiveBlock(nnx.Module):
  """x += ATM(LN(x), offsets); x += MLP(LN(x)); x = SPADE(x, prompt)."""

  def __init__(self, dim, p_dim, mlp_ratio, share_dim, new_offset: bool, *, keys):
    self.share_dim = share_dim
    self.norm1 = LayerNorm(dim)
    self.atm = ATMLayer(dim, keys=keys)
    self.norm2 = LayerNorm(dim)
    self.mlp = _mlp(dim, int(dim * mlp_ratio), dim, keys)
    self.offset_layer = (nnx.List([LayerNorm(dim + p_dim),
                                   _linear(dim + p_dim, dim * 2 // share_dim, keys)])
                         if new_offset else None)
    self.spade = SPADE(p_dim, dim, p_dim, keys=keys)

  def __call__(self, x, prompt, offset=None):
    """Returns (x, offset); offset [B, H, W, 2C] is computed here when this block owns
    an offset_layer, else the caller's is used."""
    if self.offset_layer is not None:
      # torch repeat_interleave of the Linear's output, applied to its columns instead: the
      # same values, and XLA:CPU runs the wider matmul ~3x faster than the narrow one fused
      # with the interleave.
      norm, lin = self.offset_layer
      kernel = jnp.repeat(lin.kernel[...], self.share_dim, axis=1)
      bias = jnp.repeat(lin.bias[...], self.share_dim)
      offset = norm(jnp.concatenate([x, prompt], -1)) @ kernel + bias
    x = x + self.atm(self.norm1(x), offset)
    x = x + self.mlp(self.norm2(x))
    return self.spade(x, prompt), offset


class DynamicPromptBasis(nnx.Module):
  """Per-pixel softmax over `num_basis` bases times the task's learned bank (official class
  `Dyanmic_Prompt_Basis`)."""

  def __init__(self, dim, num_task, num_basis, p_dim, blind: bool, *, keys):
    self.basis_mlp = _mlp(dim, num_basis, num_basis, keys)
    self.prompt = nnx.Param(init.uniform(keys.params(), (num_task, num_basis, 1, 1, p_dim)))
    self.task_head = _linear(dim, num_task, keys) if blind else None

  def __call__(self, x, task_id):
    basis = softmax(self.basis_mlp(x), axis=-1)  # [B, H, W, nb]
    bank = self.prompt[:, :, 0, 0, :]  # [T, nb, p]
    if self.task_head is not None:
      t = softmax(self.task_head(jnp.mean(x, axis=(1, 2))), axis=-1)  # [B, T]
      sel = jnp.einsum("bt,tnp->bnp", t, bank)
    else:
      sel = bank[task_id]
    return jnp.einsum("bhwn,bnp->bhwp", basis, sel)


class PEG(nnx.Module):
  """Depthwise 3x3 conv + identity (positional encoding generator)."""

  def __init__(self, dim, *, keys):
    self.proj = _conv(dim, dim, 3, keys, groups=dim)

  def __call__(self, x):
    return self.proj(x) + x


class UCIP(nnx.Module):
  """`model(lr, task_id)`: lr [B, H, W, 3] in [0, 1], task_id int [B] -> [B, 4H, 4W, 3]."""

  def __init__(self, embed_dim=128, p_dim=64, depths=(6,) * 6, mlp_ratio=4.0, share_dim=2,
               intv=2, num_task=6, num_basis=8, num_feat=64, blind=False, residual=None,
               remat=False, *, rngs: nnx.Rngs):
    if any(d < 2 for d in depths):
      raise ValueError(f"UCIP: every group needs >= 2 blocks (block 0 makes the offsets), "
                       f"got depths={depths}")
    if (2 * embed_dim) % share_dim:
      raise ValueError(f"UCIP: share_dim={share_dim} must divide 2*embed_dim={2 * embed_dim}")
    self.depths, self.intv, self.num_task, self.blind = tuple(depths), intv, num_task, blind
    if residual not in (None, "bicubic"):
      raise ValueError(f"UCIP: residual must be None or 'bicubic', got {residual!r}")
    self.residual = residual
    self.remat = remat  # recompute each block in the backward: activation memory O(1 block)
    keys = init.KeyStream(rngs)
    self.patch_embed = OverlapPatchEmbed(3, embed_dim, 5, rngs=keys, bias_init=init.zeros,
                                         kernel_init=_fan_out_normal(5, embed_dim))
    self.blocks = nnx.List([
        nnx.List([DynamicActiveBlock(embed_dim, p_dim, mlp_ratio, share_dim,
                                     self._new_offset(j, depth), keys=keys)
                  for j in range(depth)])
        for depth in depths])
    self.prompts = nnx.List([DynamicPromptBasis(embed_dim, num_task, num_basis, p_dim, blind,
                                                keys=keys) for _ in depths])
    self.pos_blocks = nnx.List([PEG(embed_dim, keys=keys) for _ in depths])
    self.norm = LayerNorm(embed_dim)
    self.conv_after_body = _conv(embed_dim, embed_dim, 3, keys)
    self.conv_before_up = nnx.List([_conv(embed_dim, num_feat, 3, keys), None])  # LeakyReLU
    self.conv_up1 = _conv(num_feat, num_feat, 3, keys)
    self.conv_up2 = _conv(num_feat, num_feat, 3, keys)
    self.conv_hr = _conv(num_feat, num_feat, 3, keys)
    # With the bicubic residual, start exactly at the bicubic baseline; the branch then learns.
    self.conv_last = _conv(num_feat, 3, 3, keys,
                           kernel_init=init.zeros if residual == "bicubic" else None)

  def _new_offset(self, j, depth):
    return j % self.intv == 0 and j != depth - 1

  def _task_ids(self, task_id, batch):
    if self.blind:
      return None
    if task_id is None:
      raise ValueError("UCIP: task_id is required (int [B], 0..num_task-1) unless the model "
                       "is built with blind=True")
    task_id = jnp.asarray(task_id, jnp.int32)
    if task_id.ndim == 0:
      task_id = jnp.broadcast_to(task_id, (batch,))
    if task_id.shape != (batch,):
      raise ValueError(f"UCIP: task_id shape {task_id.shape} != ({batch},)")
    if not isinstance(task_id, jax.core.Tracer):  # concrete (possibly closed over in a jit)
      ids = np.asarray(task_id)
      if np.any((ids < 0) | (ids >= self.num_task)):
        raise ValueError(f"UCIP: task_id {ids.tolist()} outside 0..{self.num_task - 1}")
    return task_id

  def forward_blocks(self, x, task_id):
    for i, group in enumerate(self.blocks):
      res = x
      prompt = self.prompts[i](x, task_id)
      offset = None
      for j, blk in enumerate(group):
        if self._new_offset(j, len(group)):
          x = self.pos_blocks[i](x)
        x, offset = (_remat_block if self.remat else _call_block)(blk, x, prompt, offset)
      x = x + res
    return x

  def __call__(self, lr, task_id=None):
    if lr.ndim != 4 or lr.shape[-1] != 3:
      raise ValueError(f"UCIP expects lr [B, H, W, 3] (NHWC), got shape {lr.shape}")
    task_id = self._task_ids(task_id, lr.shape[0])
    x = self.patch_embed(lr)
    res = x
    x = self.norm(self.forward_blocks(x, task_id))
    x = self.conv_after_body(x) + res
    x = leaky_relu(self.conv_before_up[0](x), 0.01)
    x = leaky_relu(self.conv_up1(upsample_nearest(x, 2)), 0.2)
    x = leaky_relu(self.conv_up2(upsample_nearest(x, 2)), 0.2)
    out = self.conv_last(leaky_relu(self.conv_hr(x), 0.2))
    if self.residual == "bicubic":
      out = out + resize_bicubic(lr, out.shape[1:3])
    return out


def _call_block(blk, x, prompt, offset):
  return blk(x, prompt, offset)


def _remat_block(blk, x, prompt, offset):
  """blk(x, prompt, offset) keeping only its inputs for the backward (layers.remat)."""
  graphdef, state = nnx.split(blk)
  call = lambda s, *a: nnx.merge(graphdef, s)(*a)
  return sequenced_checkpoint(call)(state, x, prompt, offset)


# ---- Family protocol ----

# Torch state_dict order per module type: own parameters, then children (registration order).
# `prompts.i.prompt` precedes `prompts.i.basis_mlp.*` there, although NNX sorts it after.
_TORCH_ORDER = {
    UCIP: ((), ("patch_embed", "blocks", "prompts", "pos_blocks", "norm", "conv_after_body",
                "conv_before_up", "conv_up1", "conv_up2", "conv_hr", "conv_last")),
    OverlapPatchEmbed: ((), ("proj",)),
    DynamicActiveBlock: ((), ("norm1", "atm", "norm2", "mlp", "offset_layer", "spade")),
    ATMLayer: ((), ("atm_h", "atm_w", "atm_local", "fusion", "proj")),
    ATMOp: ((("weight", "kernel", "conv"), ("bias", "bias", "copy")), ()),
    Mlp: ((), ("fc1", "fc2")),
    SPADE: ((), ("mlp_shared", "mlp_gamma", "mlp_beta")),
    DynamicPromptBasis: ((("prompt", "prompt", "copy"),), ("basis_mlp", "task_head")),
    PEG: ((), ("proj",)),
}


def torch_table(model: UCIP) -> list[Entry]:
  """The official `UCIP_MLP` state_dict order (1066 entries for `middle`). Names are equal on
  both sides; the 1x1 `ATMOp` kernel is HWIO -> OIHW like any conv; the prompt bank has the
  official shape (num_task, num_basis, 1, 1, p) and is copied. Works on abstract models."""
  return ordered_table(model, _TORCH_ORDER, family="ucip")


# The paper's six codecs, one prompt each, in its order of listing (section 4.1: "JPEG, HM,
# VTM, C_PSNR, C_SSIM, HIFIC"); the official srdata.py that fixes the order is not released.
TASK_IDS = {"jpeg": 0, "hevc": 1, "vvc": 2, "cheng2020-*-mse": 3, "cheng2020-*-ms-ssim": 4,
            "external:hific": 5}

SPEC = FamilySpec(
    name="ucip", variants=VARIANTS, build=UCIP, torch_table=torch_table, task_ids=TASK_IDS,
    blind_option="blind",
    # Official test: reflect-pad to (h // 8 + 1) * 8; scored on Y with a 4-pixel border.
    inference=Inference(multiple=8, pad_mode="reflect", pad_always=True),
    evaluation=Evaluation(channel="y", best_metric="psnr_y"))
create = SPEC.create
