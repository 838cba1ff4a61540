"""PromptSR: cascade prompting for lightweight image SR (Liu et al., 2025), in Flax NNX.

No official code exists; this follows the paper, with ATD-light (LabShuHangGU/Adaptive-Token-
Dictionary) for the parts the paper takes from it (category attention, pixel-shuffle-direct
decoder, mean shift, init). Layout (names are the PyTorch twin's):

  conv_first 3x3 -> layers.i (K residual groups: blocks.j cascade prompting blocks + conv 3x3,
  residual) -> conv_after_body 3x3 + shallow feature -> upsample.0 conv 3x3 to 3 s^2 + pixel
  shuffle.

A cascade prompting block (CPB) is `gapl`, `lpl1`, `lpl2`:
- gapl (global anchor prompting layer), on X_n = LN(X), exactly the paper's equations: Q, K, V
  = X_n Wq, X_n Wk, X_n Wv; anchors A = down(X_n) Wa; M_coarse = A K^T / sqrt(C); P =
  softmax(M_coarse) V; inside a group P_i = alpha P_(i-1) + (1 - alpha) P_i; K_p, V_p = P Wkp,
  P Wvp; M_fine = Q (K_p + A)^T / sqrt(C); X += softmax(M_fine) V_p; X += FFN(LN(X)). Single
  head, full width C.
- lpl1 / lpl2 (local prompting layers): one qkv projection of LN(X) to 3 x `attn_dim` feeds 4
  heads; the first half of the heads do window self-attention (window 16, relative position
  bias), the other half category self-attention over tokens grouped by argmax-anchor of
  M_coarse (lpl1) or M_fine (lpl2), in sub-groups of 128; heads are concatenated, projected
  back to C, added to X; X += FFN(LN(X)).

Sizes and cost: 779,304 parameters at x4, 770,211 at x3, 763,716 at x2, 997,056 for x4_star
(paper 779/770/764/998 K: within 0.1 %). A 320x180 -> 1280x720 x4 forward is 53.80 G multiply-
adds by XLA's cost analysis (flops / 2, every dot, conv and elementwise op; paper 53.5 G,
+0.6 %), of which 23.5 G are conv/linear weights (benchmarks/promptsr_speed.py). Per LR pixel:
convs 126 K; each GAPL 21.2 K, each LPL 23 K (WSA 6.6 K on its padded grid, CSA 3.1 K, qkv +
proj 4.6 K, FFN 4.6 K, GELU/LN/softmax the rest).

Choices where the paper is silent (the published parameter counts and multiply-adds both come
out of them):
- GAPL order of computation: Wq, Wk, Wv are folded into the anchor side (M_coarse = (A Wk^T)
  X_n^T + A bk; P = (softmax(M_coarse) X_n) Wv + bv, exact since softmax rows sum to 1;
  M_fine = X_n ((K_p + A) Wq^T)^T + (K_p + A) bq), so no C x C projection runs per pixel: the
  per-pixel GAPL work is four (anchors x C) products. tests/test_promptsr.py checks it against
  the paper's order.
- Downscale operator: a learned d x d conv with stride d, grouped (`down_groups` = 12, i.e. 4
  channels per group): 12 K parameters per GAPL for 192 multiply-adds per pixel.
- LPL attention width `attn_dim` = C / 2 = 24: 4 heads of dim 6, split 2 WSA / 2 CSA (the
  heads of one LPL see C / 2 channels; the projection brings them back to C).
- Anchor scope: anchors attend within `anchor_region` x `anchor_region` regions (64 = the 64x64
  training patch, so during training the layer is global over the patch; at test time its cost
  stays linear in pixels). `anchor_region=None` makes it global over the whole image.
  Categories are (region, anchor) pairs.
- Windows: lpl1 unshifted, lpl2 shifted by window/2 with the Swin mask.
- CSA logits use ATD's learned temperature (`logit_scale`, exp clamped at 100, no 1/sqrt(d));
  padding keys in the last sub-group are masked (ATD duplicates tokens instead), see
  csr_jax/layers/category_attention.py.
- FFN: Linear(C, C * mlp_ratio) -> exact GELU -> Linear, no conv; LayerNorm eps 1e-5.
- Padding: none at the input; convs, linears, FFNs and CSA run on the H x W tokens. The GAPL
  flip-pads LN(X) to a multiple of `anchor_region` (anchors, M_coarse and M_fine see the
  mirrored tokens) and the WSA flip-pads qkv to a multiple of the window; both crop their
  outputs (and categories) back to H x W. Inputs need H, W >= half that multiple.
"""


import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from csr_jax.convert.core import Entry, ordered_table
from csr_jax.family import Evaluation, FamilySpec, Inference
from csr_jax.layers.act import gelu
from csr_jax.layers.category_attention import category_attention
from csr_jax.layers.conv import Conv2d, Linear
from csr_jax.layers.init import trunc_normal
from csr_jax.layers.norm import LayerNorm
from csr_jax.layers.resize import pixel_shuffle
from csr_jax.layers.window import (relative_position_index, shift_attention_mask,
                                   window_partition, window_reverse)

RGB_MEAN = (0.4488, 0.4371, 0.4040)

_BASE = dict(embed_dim=48, num_groups=4, depth=3, num_heads=4, attn_dim=24, window_size=16,
             category_size=128, anchor_down=8, down_groups=12, anchor_region=64, alpha=0.01,
             mlp_ratio=1.0)
VARIANTS = {
    "x2": dict(_BASE, upscale=2),
    "x3": dict(_BASE, upscale=3),
    "x4": dict(_BASE, upscale=4),
    "x4_star": dict(_BASE, upscale=4, depth=4),
    # CPU-sized: same structure, tiny widths and windows (tests, demo config).
    "small": dict(embed_dim=16, num_groups=2, depth=1, num_heads=4, attn_dim=8, window_size=8,
                  category_size=32, anchor_down=4, down_groups=4, anchor_region=16, alpha=0.01,
                  mlp_ratio=1.0, upscale=4),
}


class _Linear(Linear):
  """Linear with ATD's init: trunc_normal(0.02) weight, zero bias."""

  def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):  # pylint: disable=super-init-not-called
    self.in_features, self.out_features = din, dout
    self.kernel = nnx.Param(trunc_normal(rngs.params(), (din, dout)))
    self.bias = nnx.Param(jnp.zeros((dout,), jnp.float32))


def _linear(din, dout, rngs):
  return _Linear(din, dout, rngs=rngs)


class FFN(nnx.Module):
  def __init__(self, dim, hidden, *, rngs):
    self.fc1 = _linear(dim, hidden, rngs)
    self.fc2 = _linear(hidden, dim, rngs)

  def __call__(self, x):
    return self.fc2(gelu(self.fc1(x)))


def flip_pad(x, m: int):
  """Pads axes 1, 2 of [B, H, W, ...] up to multiples of m with mirrored copies (no repeat)."""
  h, w = x.shape[1:3]
  hp, wp = -(-h // m) * m, -(-w // m) * m
  if hp > 2 * h or wp > 2 * w:
    raise ValueError(f"PromptSR: feature {h}x{w} is too small to pad to a multiple of {m}")
  if hp > h:
    x = jnp.concatenate([x, jnp.flip(x, 1)], 1)[:, :hp]
  if wp > w:
    x = jnp.concatenate([x, jnp.flip(x, 2)], 2)[:, :, :wp]
  return x


def _to_regions(x, region):
  """[B, H, W, C] -> [B * nR, T, C] tokens per region (raster order inside a region)."""
  b, h, w, c = x.shape
  if region is None:
    return x.reshape(b, h * w, c)
  return window_partition(x, region).reshape(-1, region * region, c)


def _from_regions(t, region, b, h, w):
  if region is None:
    return t.reshape(b, h, w, -1)
  return window_reverse(t.reshape(-1, region, region, t.shape[-1]), region, h, w)


class GAPL(nnx.Module):
  """Global anchor prompting layer; returns (X, P, coarse category, fine category).

  The paper's Q, K, V = X Wq, X Wk, X Wv are never formed per pixel: each is folded into the
  anchor side (exact: softmax rows sum to 1, and per-anchor constants pass through), so the
  per-pixel work is four Na x C products plus the FFN.
  """

  def __init__(self, dim, anchor_down, down_groups, anchor_region, alpha, mlp_ratio, *, rngs):
    self.dim, self.d, self.region, self.alpha = dim, anchor_down, anchor_region, alpha
    self.norm1 = LayerNorm(dim)
    self.q = _linear(dim, dim, rngs)
    self.k = _linear(dim, dim, rngs)
    self.v = _linear(dim, dim, rngs)
    self.down = Conv2d(dim, dim, anchor_down, stride=anchor_down, groups=down_groups, rngs=rngs)
    self.a = _linear(dim, dim, rngs)
    self.kp = _linear(dim, dim, rngs)
    self.vp = _linear(dim, dim, rngs)
    self.norm2 = LayerNorm(dim)
    self.ffn = FFN(dim, int(dim * mlp_ratio), rngs=rngs)

  def __call__(self, x, p_prev=None):
    b, h, w, c = x.shape
    region = self.region
    xn = flip_pad(self.norm1(x), region or self.d)
    hp, wp = xn.shape[1:3]
    t = _to_regions(xn, region)  # nR, T, C
    a = _to_regions(self.a(self.down(xn)), None if region is None else region // self.d)
    scale = c ** -0.5
    # M_coarse = A K^T with K = t Wk + bk, as (A Wk^T) t^T + A bk.
    k_w, k_b = self.k.kernel[...], self.k.bias[...]
    m_coarse = (jnp.einsum("rac,rtc->rat", a @ k_w.T, t) + (a @ k_b)[..., None]) * scale
    p = self.v(jax.nn.softmax(m_coarse, axis=-1) @ t)  # = softmax(M_coarse) V; nR, Na, C
    if p_prev is not None:
      p = self.alpha * p_prev + (1.0 - self.alpha) * p
    # M_fine = Q (K_p + A)^T with Q = t Wq + bq, as t ((K_p + A) Wq^T)^T + (K_p + A) bq.
    key = self.kp(p) + a
    q_w, q_b = self.q.kernel[...], self.q.bias[...]
    m_fine = (jnp.einsum("rtc,rac->rta", t, key @ q_w.T) + (key @ q_b)[:, None, :]) * scale
    xp = jax.nn.softmax(m_fine, axis=-1) @ self.vp(p)
    x = x + _from_regions(xp, region, b, hp, wp)[:, :h, :w]
    x = x + self.ffn(self.norm2(x))
    na = a.shape[1]
    offset = (jnp.arange(a.shape[0]) % (a.shape[0] // b) * na)[:, None]  # region id * Na
    cats = [jnp.argmax(m_coarse, axis=1) + offset, jnp.argmax(m_fine, axis=-1) + offset]
    cats = [_from_regions(cat[..., None], region, b, hp, wp)[:, :h, :w].reshape(b, h * w)
            for cat in cats]
    return x, p, cats[0], cats[1]


@functools.lru_cache(maxsize=None)
def _shift_mask(h, w, ws, shift):
  return shift_attention_mask(h, w, ws, shift)


class LPL(nnx.Module):
  """Local prompting layer: WSA heads + CSA heads on one narrow qkv projection, then FFN."""

  def __init__(self, dim, attn_dim, num_heads, window_size, shift, category_size, mlp_ratio, *,
               rngs):
    if attn_dim % num_heads or num_heads < 2:
      raise ValueError(f"LPL: attn_dim {attn_dim} must split into >= 2 heads (got {num_heads})")
    self.dim, self.attn_dim, self.num_heads = dim, attn_dim, num_heads
    self.ws, self.shift, self.category_size = window_size, shift, category_size
    self.win_heads = num_heads // 2
    self.relative_position_bias_table = nnx.Param(
        trunc_normal(rngs.params(), ((2 * window_size - 1) ** 2, self.win_heads)))
    self.logit_scale = nnx.Param(jnp.full((1,), math.log(10.0), jnp.float32))
    self.norm1 = LayerNorm(dim)
    self.qkv = _linear(dim, 3 * attn_dim, rngs)
    self.proj = _linear(attn_dim, dim, rngs)
    self.norm2 = LayerNorm(dim)
    self.ffn = FFN(dim, int(dim * mlp_ratio), rngs=rngs)

  def _window_attention(self, qkv):
    """qkv [B, H, W, 3, heads, dh] -> [B, H, W, heads * dh]; flip-pads to window multiples."""
    b, h, w, _, hw, dh = qkv.shape
    ws, s = self.ws, self.shift
    qkv = flip_pad(qkv.reshape(b, h, w, -1), ws)
    hp, wp = qkv.shape[1:3]
    if s:
      qkv = jnp.roll(qkv, (-s, -s), axis=(1, 2))
    win = window_partition(qkv, ws).reshape(-1, ws * ws, 3, hw, dh)
    q, k, v = (win[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # nW*b, hw, n, dh
    attn = (q * dh ** -0.5) @ jnp.swapaxes(k, -2, -1)
    rpi = relative_position_index(ws).reshape(-1)
    bias = self.relative_position_bias_table[...][rpi].reshape(ws * ws, ws * ws, hw)
    attn = attn + bias.transpose(2, 0, 1)[None]
    if s:
      mask = jnp.asarray(_shift_mask(hp, wp, ws, s))
      nw = mask.shape[0]
      attn = (attn.reshape(-1, nw, hw, ws * ws, ws * ws) + mask[None, :, None]).reshape(attn.shape)
    out = (jax.nn.softmax(attn, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(-1, ws, ws, hw * dh)
    out = window_reverse(out, ws, hp, wp)
    if s:
      out = jnp.roll(out, (s, s), axis=(1, 2))
    return out[:, :h, :w]

  def __call__(self, x, category):
    b, h, w, _ = x.shape
    nh, hw = self.num_heads, self.win_heads
    dh = self.attn_dim // nh
    qkv = self.qkv(self.norm1(x)).reshape(b, h, w, 3, nh, dh)
    x_win = self._window_attention(qkv[..., :hw, :])
    qc = qkv[..., hw:, :].reshape(b, h * w, 3, nh - hw, dh)
    scale = jnp.exp(jnp.minimum(self.logit_scale[...][0], math.log(100.0)))
    x_cat = category_attention(qc[:, :, 0], qc[:, :, 1], qc[:, :, 2], category,
                               self.category_size, scale)
    x = x + self.proj(jnp.concatenate([x_win, x_cat.reshape(b, h, w, -1)], axis=-1))
    return x + self.ffn(self.norm2(x))


class CPB(nnx.Module):
  """Cascade prompting block: GAPL, then coarse (M_coarse) and fine (M_fine) LPLs."""

  def __init__(self, dim, attn_dim, num_heads, window_size, category_size, anchor_down,
               down_groups, anchor_region, alpha, mlp_ratio, *, rngs):
    self.gapl = GAPL(dim, anchor_down, down_groups, anchor_region, alpha, mlp_ratio, rngs=rngs)
    self.lpl1 = LPL(dim, attn_dim, num_heads, window_size, 0, category_size, mlp_ratio,
                    rngs=rngs)
    self.lpl2 = LPL(dim, attn_dim, num_heads, window_size, window_size // 2, category_size,
                    mlp_ratio, rngs=rngs)

  def __call__(self, x, p_prev=None):
    x, p, cat_coarse, cat_fine = self.gapl(x, p_prev)
    x = self.lpl1(x, cat_coarse)
    return self.lpl2(x, cat_fine), p


class ResidualGroup(nnx.Module):
  """N CPBs sharing the anchor-prompt update, then a 3x3 conv, plus the group input."""

  def __init__(self, dim, depth, *, rngs, **kw):
    self.blocks = nnx.List([CPB(dim, rngs=rngs, **kw) for _ in range(depth)])
    self.conv = Conv2d(dim, dim, 3, padding=1, rngs=rngs)

  def __call__(self, x):
    res, p = x, None
    for blk in self.blocks:
      x, p = blk(x, p)
    return self.conv(x) + res


class PromptSR(nnx.Module):
  """lr [B, H, W, 3] in [0, 1] -> sr [B, sH, sW, 3]; any H, W (attention pads internally)."""

  def __init__(self, *, embed_dim, num_groups, depth, num_heads, attn_dim, window_size,
               category_size, anchor_down, down_groups, anchor_region, alpha, mlp_ratio, upscale,
               in_chans=3, rngs: nnx.Rngs):
    if anchor_region is not None and anchor_region % anchor_down:
      raise ValueError(f"anchor_region {anchor_region} must be a multiple of anchor_down "
                       f"{anchor_down}")
    self.upscale, self.window_size = upscale, window_size
    self.anchor_down, self.anchor_region = anchor_down, anchor_region
    self.conv_first = Conv2d(in_chans, embed_dim, 3, padding=1, rngs=rngs)
    self.layers = nnx.List([
        ResidualGroup(embed_dim, depth, attn_dim=attn_dim, num_heads=num_heads,
                      window_size=window_size, category_size=category_size,
                      anchor_down=anchor_down, down_groups=down_groups,
                      anchor_region=anchor_region, alpha=alpha, mlp_ratio=mlp_ratio, rngs=rngs)
        for _ in range(num_groups)])
    self.conv_after_body = Conv2d(embed_dim, embed_dim, 3, padding=1, rngs=rngs)
    self.upsample = nnx.List([Conv2d(embed_dim, in_chans * upscale ** 2, 3, padding=1,
                                     rngs=rngs)])

  def __call__(self, lr, task_id=None):
    del task_id  # PromptSR is a plain SR model.
    mean = jnp.asarray(RGB_MEAN, lr.dtype)
    x0 = self.conv_first(lr - mean)
    x = x0
    for group in self.layers:
      x = group(x)
    x = self.conv_after_body(x) + x0
    return pixel_shuffle(self.upsample[0](x), self.upscale) + mean


# ---- Family protocol ----

# Torch (twin) state_dict order per module type: own parameters, then children.
_TORCH_ORDER = {
    PromptSR: ((), ("conv_first", "layers", "conv_after_body", "upsample")),
    ResidualGroup: ((), ("blocks", "conv")),
    CPB: ((), ("gapl", "lpl1", "lpl2")),
    GAPL: ((), ("norm1", "q", "k", "v", "down", "a", "kp", "vp", "norm2", "ffn")),
    LPL: (("relative_position_bias_table", "logit_scale"), ("norm1", "qkv", "proj", "norm2", "ffn")),
    FFN: ((), ("fc1", "fc2")),
}


def torch_table(model: PromptSR) -> list[Entry]:
  """The PyTorch twin's state_dict order (no official code exists, so the twin is the layout;
  its relative position index is a non-persistent buffer). Works on abstract models."""
  return ordered_table(model, _TORCH_ORDER, family="promptsr")


SPEC = FamilySpec(
    name="promptsr", variants=VARIANTS, build=PromptSR, torch_table=torch_table,
    # Any size runs (the attention flip-pads internally); PSNR/SSIM on Y, border = scale.
    inference=Inference(multiple=16, pad_mode="reflect"),
    evaluation=Evaluation(channel="y", best_metric="psnr_y"))
create = SPEC.create
