"""PromptCIR (NTIRE 2024 blind JPEG restoration): a Restormer U-net whose two outer levels are
HAT residual hybrid attention groups, with three dynamic prompt modules on the decoder side.

Layout and numerics follow the official `MyModel(decoder=True)` of lbc12345/PromptCIR-NTIRE24
(`model.py`); attribute names are the torch module names, so `torch_table` maps parameters one to one. The model is blind: `task_id` is accepted for the common interface and
ignored (task weights are predicted per pixel from the features).

Inputs are [B, H, W, 3] in [0, 1] with H, W multiples of 2 * window_size (32 for the official
model); `restore` pads and tiles arbitrary images as the official test script does.
"""

import functools

import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx

from csr_jax.conversion import Entry, ordered_table
from csr_jax.family import Evaluation, FamilySpec, Inference, Preset
from csr_jax.layers import init
from csr_jax.layers.act import gelu
from csr_jax.layers.blocks import ChannelAttention, Mlp, OverlapPatchEmbed
from csr_jax.layers.conv import Conv2d, Linear
from csr_jax.layers.norm import LayerNorm
from csr_jax.layers.precision import softmax
from csr_jax.layers.ocab import (overlap_cross_attention, overlap_window_size,
                                 overlapping_windows, relative_position_index_oca)
from csr_jax.layers.resize import pixel_shuffle, pixel_unshuffle
from csr_jax.layers.restormer import GDFN, MDTA
from csr_jax.layers.window import (WindowAttention, relative_position_index,
                                   shift_attention_mask, split_linear, window_partition,
                                   window_reverse)

VARIANTS = {
    # MyModel(decoder=True): 34,754,927 parameters.
    "official": dict(dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4,
                     heads=(1, 2, 4, 8), window_size=16, num_basis=(64, 32, 16),
                     prompt_dims=(64, 128, 320)),
    # Same structure (shifted and unshifted HABs, OCAB, MDTA, prompts) for CPU tests and demos.
    "small": dict(dim=16, num_blocks=(2, 2, 1, 1), num_refinement_blocks=1,
                  heads=(1, 2, 4, 8), window_size=8, num_basis=(8, 8, 8),
                  prompt_dims=(16, 32, 64)),
}

# MyModel._init_weights: every nn.Linear gets trunc_normal(std=.02) weights and zero bias.
_LINEAR_INIT = dict(kernel_init=functools.partial(init.trunc_normal, std=0.02),
                    bias_init=init.zeros)

DEFAULTS = dict(ffn_expansion_factor=2.66, bias=False, compress_ratio=3, squeeze_factor=16,
                conv_scale=0.01, overlap_ratio=0.5, num_task=7)


class CAB(nnx.Module):
  """Channel-attention conv branch of a HAB: conv3x3, GELU, conv3x3, channel attention."""

  def __init__(self, num_feat: int, compress_ratio: int, squeeze_factor: int, *,
               rngs: nnx.Rngs):
    mid = num_feat // compress_ratio
    self.cab = nnx.List([Conv2d(num_feat, mid, 3, 1, 1, rngs=rngs), None,
                         Conv2d(mid, num_feat, 3, 1, 1, rngs=rngs),
                         ChannelAttention(num_feat, squeeze_factor, rngs=rngs)])

  def __call__(self, x):
    return self.cab[3](self.cab[2](gelu(self.cab[0](x))))


class HAB(nnx.Module):
  """Hybrid attention block: (shifted) window attention + 0.01 * CAB, then a GDFN (with bias)."""

  def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int,
               compress_ratio: int, squeeze_factor: int, conv_scale: float,
               ffn_expansion_factor: float, *, rngs: nnx.Rngs):
    self.window_size, self.shift_size, self.conv_scale = window_size, shift_size, conv_scale
    self.norm1 = LayerNorm(dim)
    self.attn = WindowAttention(dim, window_size, num_heads, rngs=rngs, **_LINEAR_INIT)
    self.conv_block = CAB(dim, compress_ratio, squeeze_factor, rngs=rngs)
    self.norm2 = LayerNorm(dim)
    self.ffn = GDFN(dim, ffn_expansion_factor, bias=True, rngs=rngs)

  def __call__(self, x, rpi, attn_mask):
    b, h, w, c = x.shape
    ws, s = self.window_size, self.shift_size
    y = self.norm1(x)
    conv_x = self.conv_block(y)
    if s:
      y = jnp.roll(y, (-s, -s), axis=(1, 2))
    win = window_partition(y, ws).reshape(-1, ws * ws, c)
    win = self.attn(win, rpi, attn_mask if s else None)
    y = window_reverse(win.reshape(-1, ws, ws, c), ws, h, w)
    if s:
      y = jnp.roll(y, (s, s), axis=(1, 2))
    x = x + y + conv_x * self.conv_scale
    return x + self.ffn(self.norm2(x))


class OCAB(nnx.Module):
  """Overlapping cross-attention block (HAT), with PromptCIR's GDFN instead of an MLP."""

  def __init__(self, dim: int, window_size: int, overlap_ratio: float, num_heads: int,
               ffn_expansion_factor: float, *, rngs: nnx.Rngs):
    self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
    self.scale = (dim // num_heads) ** -0.5
    self.overlap_win_size = overlap_window_size(window_size, overlap_ratio)
    self.norm1 = LayerNorm(dim)
    self.qkv = Linear(dim, dim * 3, rngs=rngs, **_LINEAR_INIT)
    n = window_size + self.overlap_win_size - 1
    self.relative_position_bias_table = nnx.Param(
        init.trunc_normal(rngs.params(), (n * n, num_heads)))
    self.proj = Linear(dim, dim, rngs=rngs, **_LINEAR_INIT)
    self.norm2 = LayerNorm(dim)
    self.ffn = GDFN(dim, ffn_expansion_factor, bias=True, rngs=rngs)

  def __call__(self, x, rpi_oca):
    b, h, w, c = x.shape
    ws = self.window_size
    q, k, v = split_linear(self.qkv, self.norm1(x), 3)
    q = window_partition(q, ws).reshape(-1, ws * ws, c)
    k, v = (overlapping_windows(t, ws, self.overlap_win_size) for t in (k, v))
    out = overlap_cross_attention(q, k, v, self.relative_position_bias_table[...], rpi_oca,
                                  self.num_heads, self.scale)
    x = self.proj(window_reverse(out.reshape(-1, ws, ws, c), ws, h, w)) + x
    return x + self.ffn(self.norm2(x))


class AttenBlocks(nnx.Module):
  """HABs with shifts 0, ws/2, 0, ... followed by one OCAB."""

  def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, cfg: dict, *,
               rngs: nnx.Rngs):
    self.blocks = nnx.List([
        HAB(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
            cfg["compress_ratio"], cfg["squeeze_factor"], cfg["conv_scale"],
            cfg["ffn_expansion_factor"], rngs=rngs) for i in range(depth)])
    self.overlap_attn = OCAB(dim, window_size, cfg["overlap_ratio"], num_heads,
                             cfg["ffn_expansion_factor"], rngs=rngs)

  def __call__(self, x, rpi_sa, rpi_oca):
    ws = self.blocks[0].window_size
    mask = shift_attention_mask(x.shape[1], x.shape[2], ws, ws // 2)
    for blk in self.blocks:
      x = blk(x, rpi_sa, mask)
    return self.overlap_attn(x, rpi_oca)


class RHAG(nnx.Module):
  """Residual hybrid attention group: blocks, a 3x3 conv, and the group residual."""

  def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, cfg: dict, *,
               rngs: nnx.Rngs):
    self.residual_group = AttenBlocks(dim, depth, num_heads, window_size, cfg, rngs=rngs)
    self.conv = Conv2d(dim, dim, 3, 1, 1, rngs=rngs)

  def __call__(self, x, rpi_sa, rpi_oca):
    return self.conv(self.residual_group(x, rpi_sa, rpi_oca)) + x


class RestormerNorm(nnx.Module):
  """Restormer's `LayerNorm` wrapper (WithBias): the affine params live under `body`."""

  def __init__(self, dim: int):
    self.body = LayerNorm(dim)

  def __call__(self, x):
    return self.body(x)


class TransformerBlock(nnx.Module):
  """Restormer block: x + MDTA(LN(x)), then x + GDFN(LN(x))."""

  def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, *,
               rngs: nnx.Rngs):
    self.norm1 = RestormerNorm(dim)
    self.attn = MDTA(dim, num_heads, bias, rngs=rngs)
    self.norm2 = RestormerNorm(dim)
    self.ffn = GDFN(dim, ffn_expansion_factor, bias, rngs=rngs)

  def __call__(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.ffn(self.norm2(x))


class Resample(nnx.Module):
  """`Downsample` (conv to n/2, pixel unshuffle 2) or `Upsample` (conv to 2n, pixel shuffle 2)."""

  def __init__(self, n_feat: int, down: bool, *, rngs: nnx.Rngs):
    self.down = down
    out = n_feat // 2 if down else n_feat * 2
    self.body = nnx.List([Conv2d(n_feat, out, 3, 1, 1, bias=False, rngs=rngs), None])

  def __call__(self, x):
    x = self.body[0](x)
    return pixel_unshuffle(x, 2) if self.down else pixel_shuffle(x, 2)


class PromptBasis(nnx.Module):
  """torch `ActiveBlock_Prompt_Basis`: per pixel, softmax weights over `num_basis` bases and over
  `num_task` tasks mix a learned bank `prompt` [1, T, nb, E, 1, 1]; then a 3x3 conv."""

  def __init__(self, dim: int, num_task: int, num_basis: int, embed_dim: int, *,
               rngs: nnx.Rngs):
    self.basis_mlp = Mlp(dim, num_basis, num_basis, rngs=rngs, **_LINEAR_INIT)
    self.task_mlp = Mlp(dim, num_task, num_task, rngs=rngs, **_LINEAR_INIT)
    self.prompt = nnx.Param(init.uniform(rngs.params(), (1, num_task, num_basis, embed_dim, 1, 1)))
    self.conv3x3 = Conv2d(embed_dim, embed_dim, 3, 1, 1, bias=False, rngs=rngs)

  def __call__(self, x):
    _, t, nb, e = self.prompt.shape[:4]
    basis = softmax(self.basis_mlp(x), axis=-1)
    task = softmax(self.task_mlp(x), axis=-1)
    # sum_t task_t sum_n basis_n P[t, n] as one matmul over the (t, n) outer product.
    weights = (task[..., :, None] * basis[..., None, :]).reshape(*x.shape[:3], t * nb)
    return self.conv3x3(weights @ self.prompt[...].reshape(t * nb, e))


def _sequential(blocks, x):
  for blk in blocks:
    x = blk(x)
  return x


class PromptCIR(nnx.Module):
  """`MyModel(decoder=True)`; see the module docstring."""

  def __init__(self, dim: int = 48, num_blocks=(4, 6, 6, 8), num_refinement_blocks: int = 4,
               heads=(1, 2, 4, 8), window_size: int = 16, num_basis=(64, 32, 16),
               prompt_dims=(64, 128, 320), inp_channels: int = 3, out_channels: int = 3, *,
               rngs: nnx.Rngs, **kw):
    unknown = set(kw) - set(DEFAULTS)
    if unknown:
      raise TypeError(f"PromptCIR: unknown options {sorted(unknown)}")
    cfg = {**DEFAULTS, **kw}
    rngs = init.KeyStream(rngs)
    self.window_size = window_size
    self.overlap_win_size = overlap_window_size(window_size, cfg["overlap_ratio"])
    ffn, bias, nt = cfg["ffn_expansion_factor"], cfg["bias"], cfg["num_task"]
    d1, d2, d3, d4 = dim, dim * 2, dim * 4, dim * 8
    p1, p2, p3 = prompt_dims

    def restormer(d, n, h):
      return nnx.List([TransformerBlock(d, h, ffn, bias, rngs=rngs) for _ in range(n)])

    def conv1x1(cin, cout):
      return Conv2d(cin, cout, 1, bias=bias, rngs=rngs)

    self.patch_embed_input = OverlapPatchEmbed(inp_channels, dim, 3, bias=False, rngs=rngs)
    self.prompt1 = PromptBasis(d2, nt, num_basis[0], p1, rngs=rngs)
    self.prompt2 = PromptBasis(d3, nt, num_basis[1], p2, rngs=rngs)
    self.prompt3 = PromptBasis(d4, nt, num_basis[2], p3, rngs=rngs)
    self.encoder_level1 = RHAG(d1, num_blocks[0], heads[0], window_size, cfg, rngs=rngs)
    self.down1_2 = Resample(d1, down=True, rngs=rngs)
    self.encoder_level2 = RHAG(d2, num_blocks[1], heads[1], window_size, cfg, rngs=rngs)
    self.down2_3 = Resample(d2, down=True, rngs=rngs)
    self.encoder_level3 = restormer(d3, num_blocks[2], heads[2])
    self.down3_4 = Resample(d3, down=True, rngs=rngs)
    self.latent = restormer(d4, num_blocks[3], heads[3])
    self.up4_3 = Resample(d3, down=False, rngs=rngs)
    self.reduce_chan_level3 = conv1x1(d2 + d3, d3)
    self.noise_level3 = TransformerBlock(d4 + p3, heads[2], ffn, bias, rngs=rngs)
    self.reduce_noise_level3 = conv1x1(d4 + p3, d3)
    self.decoder_level3 = restormer(d3, num_blocks[2], heads[2])
    self.up3_2 = Resample(d3, down=False, rngs=rngs)
    self.reduce_chan_level2 = conv1x1(d3, d2)
    self.noise_level2 = TransformerBlock(d3 + p2, heads[2], ffn, bias, rngs=rngs)
    self.reduce_noise_level2 = conv1x1(d3 + p2, d3)
    self.decoder_level2 = RHAG(d2, num_blocks[1], heads[1], window_size, cfg, rngs=rngs)
    self.up2_1 = Resample(d2, down=False, rngs=rngs)
    self.noise_level1 = TransformerBlock(d2 + p1, heads[2], ffn, bias, rngs=rngs)
    self.reduce_noise_level1 = conv1x1(d2 + p1, d2)
    self.decoder_level1 = RHAG(d2, num_blocks[0], heads[0], window_size, cfg, rngs=rngs)
    self.refinement = restormer(d2, num_refinement_blocks, heads[0])
    self.output = Conv2d(d2, out_channels, 3, 1, 1, bias=bias, rngs=rngs)

  @property
  def multiple(self) -> int:
    """H and W must be multiples of this (windows at half resolution, three 2x downsamplings)."""
    return max(2 * self.window_size, 8)

  def __call__(self, x, task_id=None):
    del task_id  # Blind model.
    m = self.multiple
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] % m or x.shape[2] % m:
      raise ValueError(f"PromptCIR expects [B, H, W, 3] with H, W multiples of {m} "
                       f"(pad with promptcir.flip_pad); got {x.shape}")
    rpi_sa = relative_position_index(self.window_size)
    rpi_oca = relative_position_index_oca(self.window_size, self.overlap_win_size)

    enc1 = self.encoder_level1(self.patch_embed_input(x), rpi_sa, rpi_oca)
    enc2 = self.encoder_level2(self.down1_2(enc1), rpi_sa, rpi_oca)
    enc3 = _sequential(self.encoder_level3, self.down2_3(enc2))
    lat = _sequential(self.latent, self.down3_4(enc3))
    lat = jnp.concatenate([lat, self.prompt3(lat)], axis=-1)
    lat = self.reduce_noise_level3(self.noise_level3(lat))

    dec3 = self.reduce_chan_level3(jnp.concatenate([self.up4_3(lat), enc3], axis=-1))
    dec3 = _sequential(self.decoder_level3, dec3)
    dec3 = jnp.concatenate([dec3, self.prompt2(dec3)], axis=-1)
    dec3 = self.reduce_noise_level2(self.noise_level2(dec3))

    dec2 = self.reduce_chan_level2(jnp.concatenate([self.up3_2(dec3), enc2], axis=-1))
    dec2 = self.decoder_level2(dec2, rpi_sa, rpi_oca)
    dec2 = jnp.concatenate([dec2, self.prompt1(dec2)], axis=-1)
    dec2 = self.reduce_noise_level1(self.noise_level1(dec2))

    dec1 = jnp.concatenate([self.up2_1(dec2), enc1], axis=-1)
    dec1 = self.decoder_level1(dec1, rpi_sa, rpi_oca)
    dec1 = _sequential(self.refinement, dec1)
    return self.output(dec1) + x


# ---- Family protocol ----

# Torch state_dict order per module type: own parameters, then children (registration order).
_TORCH_ORDER = {
    PromptCIR: ((), ("patch_embed_input", "prompt1", "prompt2", "prompt3", "encoder_level1",
                     "down1_2", "encoder_level2", "down2_3", "encoder_level3", "down3_4",
                     "latent", "up4_3", "reduce_chan_level3", "noise_level3",
                     "reduce_noise_level3", "decoder_level3", "up3_2", "reduce_chan_level2",
                     "noise_level2", "reduce_noise_level2", "decoder_level2", "up2_1",
                     "noise_level1", "reduce_noise_level1", "decoder_level1", "refinement",
                     "output")),
    PromptBasis: (("prompt",), ("basis_mlp", "task_mlp", "conv3x3")),
    Mlp: ((), ("fc1", "fc2")),
    RHAG: ((), ("residual_group", "conv")),
    AttenBlocks: ((), ("blocks", "overlap_attn")),
    HAB: ((), ("norm1", "attn", "conv_block", "norm2", "ffn")),
    CAB: ((), ("cab",)),
    ChannelAttention: ((), ("attention",)),
    OCAB: (("relative_position_bias_table",), ("norm1", "qkv", "proj", "norm2", "ffn")),
    TransformerBlock: ((), ("norm1", "attn", "norm2", "ffn")),
    RestormerNorm: ((), ("body",)),
    Resample: ((), ("body",)),
    OverlapPatchEmbed: ((), ("proj",)),
    WindowAttention: (("relative_position_bias_table",), ("qkv", "proj")),
    MDTA: (("temperature",), ("qkv", "qkv_dwconv", "project_out")),
    GDFN: ((), ("project_in", "dwconv", "project_out")),
}


def module_table(mod, prefix: str = "") -> list[Entry]:
  """Entries of any PromptCIR (sub)module in torch order (block-level tests load twins so)."""
  return ordered_table(mod, _TORCH_ORDER, prefix, family="promptcir")


def torch_table(model: PromptCIR) -> list[Entry]:
  """The official `MyModel(decoder=True)` state_dict order: the two int64 relative position
  index buffers (emitted from the window sizes), then the 868 parameters. Works on abstract
  models."""
  ws, ows = model.window_size, model.overlap_win_size
  return [Entry("relative_position_index_SA", None, buffer=relative_position_index(ws)),
          Entry("relative_position_index_OCA", None,
                buffer=relative_position_index_oca(ws, ows))] + module_table(model)


SPEC = FamilySpec(
    name="promptcir", variants=VARIANTS, build=PromptCIR, torch_table=torch_table,
    # The official test_model.py: flip-pad to (h // 32 + 1) * 32, tiles of 384 overlapping 96.
    inference=Inference(multiple=32, pad_mode="flip", pad_always=True, tile=384,
                        tile_overlap=96),
    # "The results are tested on the RGB channel with PSNR, SSIM, and PSNRB" (section 4.2).
    evaluation=Evaluation(channel="rgb", crop_border=0, psnr_b=True, best_metric="psnr"),
    # The NTIRE 2024 submission (test_model.py): the above, on two checkpoints (model_best.pth,
    # model_best2.pth) x {identity, H<->W transpose}, each clamped, then averaged.
    presets={"promptcir-ntire24": Preset(
        Inference(multiple=32, pad_mode="flip", pad_always=True, tile=384, tile_overlap=96,
                  ensemble="transpose"), checkpoints=2, variant="official",
        about="PromptCIR NTIRE 2024 test_model.py: flip-pad to 32, 384/96 tiles, 2 checkpoints "
              "x {identity, transpose}")})
create = SPEC.create


# Official inference (test_model.py): flip padding, overlapping tiles, checkpoint/transpose
# ensembles.


def flip_pad(img, multiple: int = 32):
  """Pads [B, H, W, C] at the bottom/right with its mirror image to the next multiple, as the
  official test does: always by at least one pixel, (H // m + 1) * m in total."""
  h, w = img.shape[1:3]
  hp, wp = (h // multiple + 1) * multiple, (w // multiple + 1) * multiple
  if hp > 2 * h or wp > 2 * w:
    raise ValueError(f"flip_pad: image {h}x{w} too small to mirror-pad to {hp}x{wp}")
  img = jnp.concatenate([img, jnp.flip(img, 1)], axis=1)[:, :hp]
  return jnp.concatenate([img, jnp.flip(img, 2)], axis=2)[:, :, :wp]


def tile_positions(n: int, tile: int, overlap: int) -> list[int]:
  stride = tile - overlap
  return list(range(0, n - tile, stride)) + [n - tile]


def tile_forward(fn, img, tile: int = 384, overlap: int = 96):
  """Official `tile_eval`: run `fn` on tile x tile crops (stride tile - overlap), average the
  overlaps, clamp to [0, 1]. `img` [B, H, W, C]; every tile has the same shape, so a jitted
  `fn` compiles once."""
  b, h, w, c = img.shape
  tile = min(tile, h, w)
  if tile % 8:
    raise ValueError(f"tile_forward: tile size {tile} must be a multiple of 8")
  acc = np.zeros((b, h, w, c), np.float32)
  cnt = np.zeros((1, h, w, 1), np.float32)
  for i in tile_positions(h, tile, overlap):
    for j in tile_positions(w, tile, overlap):
      acc[:, i:i + tile, j:j + tile] += np.asarray(fn(img[:, i:i + tile, j:j + tile]))
      cnt[:, i:i + tile, j:j + tile] += 1.0
  return np.clip(acc / cnt, 0.0, 1.0)


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, x):
  return nnx.merge(graphdef, state)(x)


def jit_forward(model):
  """A jitted pure forward of `model`; models of one variant (e.g. several checkpoints) share
  the compilation, and tiles do not re-traverse the NNX graph."""
  graphdef, state = nnx.split(model)
  return functools.partial(_apply, graphdef, state)


def restore(models, img, tile: int = 384, overlap: int = 96, transpose: bool = True,
            multiple: int = 32):
  """Official test-time pipeline on [B, H, W, 3] in [0, 1] of any size: for each model (several
  checkpoints are averaged) and, with `transpose`, also on the H<->W transposed image, flip-pad,
  tile, crop back and clamp; returns the mean as float32 numpy."""
  models = models if isinstance(models, (list, tuple)) else [models]
  img = jnp.asarray(img, jnp.float32)
  views = [(img, False)] + ([(img.transpose(0, 2, 1, 3), True)] if transpose else [])
  outs = []
  for model in models:
    fn = model if not isinstance(model, nnx.Module) else jit_forward(model)
    for view, tr in views:
      vh, vw = view.shape[1:3]
      out = tile_forward(fn, flip_pad(view, multiple), tile, overlap)[:, :vh, :vw]
      outs.append(out.transpose(0, 2, 1, 3) if tr else out)
  return np.mean(outs, axis=0).astype(np.float32)
