"""PromptSR: cascade prompting for lightweight image SR (Liu et al., 2025), in Flax NNX.

No official code exists; the paper is the specification. Where it is silent, the parts it takes
from ATD-light [41] (LabShuHangGU/Adaptive-Token-Dictionary: category attention, ConvFFN, MLP
ratio 1, pixel-shuffle-direct decoder, mean shift, init, the training schedule verbatim) and
from GRL [19] (ofsoundof/GRL-Image-Restoration: the anchor projection, regional anchors, the
window position bias) follow those codes. Layout (names are the PyTorch twin's):

  conv_first 3x3 -> layers.i (K residual groups: blocks.j cascade prompting blocks + conv 3x3,
  residual) -> conv_after_body 3x3 + shallow feature -> upsample.0 conv 3x3 to 3 s^2 + pixel
  shuffle.

A cascade prompting block (CPB) is `gapl`, `lpl1`, `lpl2`:
- gapl (global anchor prompting layer), on X_n = LN(X), exactly the paper's equations 6-12:
  Q, K, V = X_n Wq, X_n Wk, X_n Wv; anchors A = down(X_n) Wa; M_coarse = A K^T / sqrt(C);
  P = softmax(M_coarse) V; inside a group P_i = alpha P_(i-1) + (1 - alpha) P_i; K_p, V_p =
  P Wkp, P Wvp; M_fine = Q (K_p + A)^T / sqrt(C); X += softmax(M_fine) V_p; X += FFN(LN(X)).
  Single head, full width C.
- lpl1 / lpl2 (local prompting layers, eq. 13-16): one qkv projection of LN(X) to 3 x
  `attn_dim` feeds 4 heads; the first half do window self-attention (window 16), the other half
  category self-attention over tokens grouped by argmax-anchor of M_coarse (lpl1) or M_fine
  (lpl2), in sub-groups of 128; heads are concatenated, projected back to C, added to X;
  X += FFN(LN(X)).

Sizes (exact here / paper, Tables I, III, V, VII; all within 0.2 %): x2 764,628 / 764 K, x3
771,123 / 770 K, x4 780,216 / 779 K; PromptSR* (N = 4) 982,684 / 982 K, 989,179 / 989 K,
998,272 / 998 K; N = 2 at x4: d = 2 / 4 / 8 534,512 / 540,656 / 562,160 against 534 / 540 /
562 K, and ws = 8 562,160 against 562 K. Cost of a 320x180 -> 1280x720 x4 forward by XLA's
cost analysis (flops / 2, every dot, conv and elementwise op; benchmarks/promptsr_speed.py):
56.4 G multiply-adds with the default regional anchors (paper 53.5 G: +5 %), 182 G global.
At N = 2: 40.0 G (paper 38.3 G), ws = 8 34.2 G (paper 34.4 G); d = 4 / 2 give 60.0 / 140 G
against the paper's 46.8 / 81.1 G (below).

Choices where the paper is silent or inconsistent (each fits the published counts above):
- Downscale: "we downscale X to X_d ... by a factor d and project X_d to generate linear
  embedding as Anchors A in a similar way as described in [19]". GRL's anchor projection is a
  depthwise (d+1) x (d+1) conv of stride d (padding d // 2) followed by a pointwise one, here
  `down` then `a` (= W^A). Its 48 (d+1)^2 weights per GAPL give Table V's deltas (+21.5 K and
  +27.6 K from d = 4 and 2 to 8 over 8 GAPLs; paper +22 K, +28 K).
- WSA position bias: Table VII gives "562K" parameters for both ws = 8 and ws = 16, which rules
  out SwinIR's (2 ws - 1)^2 x heads table (23.6 K apart at N = 2). The bias is the continuous
  one GRL uses (Swin V2): 16 sigmoid(MLP(log-spaced offsets)), MLP Linear(2, 512) -> ReLU ->
  Linear(512, heads, no bias), whose weights do not depend on ws; logits stay SwinIR's
  q.k / sqrt(d_head) + bias.
- FFN: "feed-forward network (FFN) layers" with "MLP expansion ratio ... 1": ATD-light's FFN,
  which is a ConvFFN (fc1 -> GELU -> + GELU(depthwise 7x7) -> fc2) at ratio 1.
- LPL width `attn_dim` = C / 2 = 24: 4 heads of dim 6, 2 WSA + 2 CSA (GRL's MixedAttention
  splits one qkv between its two attentions the same way). Table VII's +3.9 G for ws 8 -> 16
  implies a WSA about 11 channels wide; this one is 12 (+5.9 G by XLA's count).
- Anchor scope: the text says the anchors use "the key K and value V features from image tokens
  across the entire space of X", but then the x4 forward would cost 182 G, not the paper's
  53.5 G. The default attends within `anchor_region` x `anchor_region` regions (64 = the 64x64
  training patch, so training is global over the patch, as GRL's anchor attention is regional);
  `anchor_region=None` is the text's global version. Categories are (region, anchor) pairs.
  Table V's increments from d = 8 to 4 and 2 (+8.5 G, +42.8 G) are 2.3x smaller than this
  anchor term's (+20 G, +100 G) at either scope; no choice here reproduces them.
- Windows: lpl1 unshifted, lpl2 shifted by window/2 with the Swin mask.
- CSA logits use ATD's learned temperature (`logit_scale`, exp clamped at 100, no 1/sqrt(d));
  padding keys in the last sub-group are masked (ATD duplicates tokens instead), see
  csr_jax/layers/category_attention.py. LayerNorm eps 1e-5.
- GAPL order of computation: Wq, Wk, Wv are folded into the anchor side (M_coarse = (A Wk^T)
  X_n^T + A bk; P = (softmax(M_coarse) X_n) Wv + bv, exact since softmax rows sum to 1;
  M_fine = X_n ((K_p + A) Wq^T)^T + (K_p + A) bq), so no C x C projection runs per pixel.
  tests/test_promptsr.py checks it against the paper's order.
- Padding: none at the input; convs, linears, FFNs and CSA run on the H x W tokens. The GAPL
  flip-pads LN(X) to a multiple of `anchor_region` (or d) and the WSA flip-pads qkv to a
  multiple of the window; both crop their outputs (and categories) back to H x W. Inputs need
  H, W >= half that multiple.
- bf16 (params and input cast by the train step): norms, attention logits and softmaxes run in
  float32 and are cast back, so every matmul on activations stays bf16.
"""


import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from csr_jax.conversion import Entry, ordered_table
from csr_jax.family import Evaluation, FamilySpec, Inference
from csr_jax.layers.act import gelu
from csr_jax.layers.blocks import Mlp
from csr_jax.layers.category_attention import category_attention
from csr_jax.layers.conv import Conv2d, Linear
from csr_jax.layers.init import KeyStream, constant, trunc_normal, zeros
from csr_jax.layers.norm import LayerNorm
from csr_jax.layers.resize import pixel_shuffle
from csr_jax.layers.window import (log_relative_coords, relative_position_index,
                                   shifted_window_attention, window_partition, window_reverse)

RGB_MEAN = (0.4488, 0.4371, 0.4040)

_BASE = dict(embed_dim=48, num_groups=4, depth=3, num_heads=4, attn_dim=24, window_size=16,
             category_size=128, anchor_down=8, anchor_region=64, alpha=0.01, mlp_ratio=1.0,
             ffn_kernel=7)
VARIANTS = {
    "x2": dict(_BASE, upscale=2),
    "x3": dict(_BASE, upscale=3),
    "x4": dict(_BASE, upscale=4),
    # PromptSR*: "For the enhanced model, PromptSR*, we use N = 4 CPBs."
    "x2_star": dict(_BASE, upscale=2, depth=4),
    "x3_star": dict(_BASE, upscale=3, depth=4),
    "x4_star": dict(_BASE, upscale=4, depth=4),
    # CPU-sized: same structure, tiny widths and windows (tests, demo config).
    "small": dict(embed_dim=16, num_groups=2, depth=1, num_heads=4, attn_dim=8, window_size=8,
                  category_size=32, anchor_down=4, anchor_region=16, alpha=0.01, mlp_ratio=1.0,
                  ffn_kernel=3, pos_hidden=64, upscale=4),
}

# ATD's init (its `_init_weights`): Linear weights trunc_normal(0.02), biases 0; convs torch's.
_linear = functools.partial(Linear, kernel_init=trunc_normal, bias_init=zeros)


def _norm(ln, x):
  """LayerNorm computed in float32 (bf16 variances are coarse), returned in x's dtype."""
  return ln(x.astype(jnp.float32)).astype(x.dtype)


class ConvFFN(Mlp):
  """ATD-light's ConvFFN: fc1 -> GELU -> h + GELU(depthwise k x k conv(h)) -> fc2."""

  def __init__(self, dim, hidden, kernel, *, rngs):
    super().__init__(dim, hidden, rngs=rngs, kernel_init=trunc_normal, bias_init=zeros)
    self.dwconv = Conv2d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden, rngs=rngs)

  def __call__(self, x):
    h = gelu(self.fc1(x))
    return self.fc2(h + gelu(self.dwconv(h)))


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


def _logits(eq, a, b):
  """An attention-logit product accumulated and returned in float32 (bf16 operands stay)."""
  return jnp.einsum(eq, a, b, preferred_element_type=jnp.float32)


class GAPL(nnx.Module):
  """Global anchor prompting layer; returns (X, P, coarse category, fine category).

  The paper's Q, K, V = X Wq, X Wk, X Wv are never formed per pixel: each is folded into the
  anchor side (exact: softmax rows sum to 1, and per-anchor constants pass through), so the
  per-pixel work is four Na x C products plus the FFN.
  """

  def __init__(self, dim, anchor_down, anchor_region, alpha, mlp_ratio, ffn_kernel, *, rngs):
    self.dim, self.d, self.region, self.alpha = dim, anchor_down, anchor_region, alpha
    self.norm1 = LayerNorm(dim)
    self.q = _linear(dim, dim, rngs=rngs)
    self.k = _linear(dim, dim, rngs=rngs)
    self.v = _linear(dim, dim, rngs=rngs)
    # GRL's anchor projection: depthwise (d+1) x (d+1) stride-d conv, then pointwise (= W^A).
    self.down = Conv2d(dim, dim, anchor_down + 1, stride=anchor_down, padding=anchor_down // 2,
                       groups=dim, rngs=rngs)
    self.a = _linear(dim, dim, rngs=rngs)
    self.kp = _linear(dim, dim, rngs=rngs)
    self.vp = _linear(dim, dim, rngs=rngs)
    self.norm2 = LayerNorm(dim)
    self.ffn = ConvFFN(dim, int(dim * mlp_ratio), ffn_kernel, rngs=rngs)

  def __call__(self, x, p_prev=None):
    b, h, w, c = x.shape
    region = self.region
    xn = flip_pad(_norm(self.norm1, x), region or self.d)
    hp, wp = xn.shape[1:3]
    t = _to_regions(xn, region)  # nR, T, C
    a = _to_regions(self.a(self.down(xn)), None if region is None else region // self.d)
    scale = c ** -0.5
    # M_coarse = A K^T with K = t Wk + bk, as (A Wk^T) t^T + A bk.
    k_w, k_b = self.k.kernel[...], self.k.bias[...]
    m_coarse = (_logits("rac,rtc->rat", a @ k_w.T, t) + (a @ k_b)[..., None]) * scale
    p = self.v(jax.nn.softmax(m_coarse, axis=-1).astype(t.dtype) @ t)  # softmax(M_coarse) V
    if p_prev is not None:
      p = self.alpha * p_prev + (1.0 - self.alpha) * p
    # M_fine = Q (K_p + A)^T with Q = t Wq + bq, as t ((K_p + A) Wq^T)^T + (K_p + A) bq.
    key = self.kp(p) + a
    q_w, q_b = self.q.kernel[...], self.q.bias[...]
    m_fine = (_logits("rtc,rac->rta", t, key @ q_w.T) + (key @ q_b)[:, None, :]) * scale
    xp = jax.nn.softmax(m_fine, axis=-1).astype(t.dtype) @ self.vp(p)
    x = x + _from_regions(xp, region, b, hp, wp)[:, :h, :w]
    x = x + self.ffn(_norm(self.norm2, x))
    na = a.shape[1]
    offset = (jnp.arange(a.shape[0]) % (a.shape[0] // b) * na)[:, None]  # region id * Na
    cats = [jnp.argmax(m_coarse, axis=1) + offset, jnp.argmax(m_fine, axis=-1) + offset]
    cats = [_from_regions(cat[..., None], region, b, hp, wp)[:, :h, :w].reshape(b, h * w)
            for cat in cats]
    return x, p, cats[0], cats[1]


class LPL(nnx.Module):
  """Local prompting layer: WSA heads + CSA heads on one narrow qkv projection, then FFN."""

  def __init__(self, dim, attn_dim, num_heads, window_size, shift, category_size, mlp_ratio,
               ffn_kernel, pos_hidden, *, rngs):
    if attn_dim % num_heads or num_heads < 2:
      raise ValueError(f"LPL: attn_dim {attn_dim} must split into >= 2 heads (got {num_heads})")
    self.dim, self.attn_dim, self.num_heads = dim, attn_dim, num_heads
    self.ws, self.shift, self.category_size = window_size, shift, category_size
    self.win_heads = num_heads // 2
    self.logit_scale = nnx.Param(constant(math.log(10.0))(None, (1,)))
    # Swin V2 / GRL continuous position bias: Linear -> ReLU -> Linear(no bias) on log offsets.
    self.pos_mlp = nnx.List([_linear(2, pos_hidden, rngs=rngs), None,
                             _linear(pos_hidden, self.win_heads, bias=False, rngs=rngs)])
    self.norm1 = LayerNorm(dim)
    self.qkv = _linear(dim, 3 * attn_dim, rngs=rngs)
    self.proj = _linear(attn_dim, dim, rngs=rngs)
    self.norm2 = LayerNorm(dim)
    self.ffn = ConvFFN(dim, int(dim * mlp_ratio), ffn_kernel, rngs=rngs)

  def position_bias(self):
    """[win_heads, ws^2, ws^2] = 16 sigmoid(MLP(log offsets)), computed in float32."""
    ws = self.ws
    hid = jax.nn.relu(self.pos_mlp[0](jnp.asarray(log_relative_coords(ws))))
    table = 16 * jax.nn.sigmoid(self.pos_mlp[2](hid))
    bias = table[relative_position_index(ws).reshape(-1)]
    return bias.reshape(ws * ws, ws * ws, -1).transpose(2, 0, 1)

  def __call__(self, x, category):
    b, h, w, _ = x.shape
    nh, hw = self.num_heads, self.win_heads
    dh = self.attn_dim // nh
    qkv = self.qkv(_norm(self.norm1, x)).reshape(b, h, w, 3, nh, dh)
    # WSA on the window heads, flip-padded to window multiples and cropped back.
    qkv_win = flip_pad(qkv[..., :hw, :], self.ws)
    x_win = shifted_window_attention(qkv_win, self.ws, self.shift, self.position_bias())
    qc = qkv[..., hw:, :].reshape(b, h * w, 3, nh - hw, dh)
    scale = jnp.exp(jnp.minimum(self.logit_scale[...][0], math.log(100.0)))
    x_cat = category_attention(qc[:, :, 0], qc[:, :, 1], qc[:, :, 2], category,
                               self.category_size, scale)
    x = x + self.proj(jnp.concatenate([x_win[:, :h, :w], x_cat.reshape(b, h, w, -1)], -1))
    return x + self.ffn(_norm(self.norm2, x))


class CPB(nnx.Module):
  """Cascade prompting block: GAPL, then coarse (M_coarse) and fine (M_fine) LPLs."""

  def __init__(self, dim, attn_dim, num_heads, window_size, category_size, anchor_down,
               anchor_region, alpha, mlp_ratio, ffn_kernel, pos_hidden, *, rngs):
    self.gapl = GAPL(dim, anchor_down, anchor_region, alpha, mlp_ratio, ffn_kernel, rngs=rngs)
    self.lpl1, self.lpl2 = (
        LPL(dim, attn_dim, num_heads, window_size, shift, category_size, mlp_ratio, ffn_kernel,
            pos_hidden, rngs=rngs) for shift in (0, window_size // 2))

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
               category_size, anchor_down, anchor_region, alpha, mlp_ratio, upscale,
               ffn_kernel=7, pos_hidden=512, in_chans=3, rngs):
    if anchor_region is not None and anchor_region % anchor_down:
      raise ValueError(f"anchor_region {anchor_region} must be a multiple of anchor_down "
                       f"{anchor_down}")
    rngs = KeyStream(rngs)
    self.upscale, self.window_size = upscale, window_size
    self.anchor_down, self.anchor_region = anchor_down, anchor_region
    self.conv_first = Conv2d(in_chans, embed_dim, 3, padding=1, rngs=rngs)
    self.layers = nnx.List([
        ResidualGroup(embed_dim, depth, attn_dim=attn_dim, num_heads=num_heads,
                      window_size=window_size, category_size=category_size,
                      anchor_down=anchor_down, anchor_region=anchor_region, alpha=alpha,
                      mlp_ratio=mlp_ratio, ffn_kernel=ffn_kernel, pos_hidden=pos_hidden,
                      rngs=rngs)
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
    LPL: (("logit_scale",), ("pos_mlp", "norm1", "qkv", "proj", "norm2", "ffn")),
    ConvFFN: ((), ("fc1", "dwconv", "fc2")),
}


def torch_table(model: PromptSR) -> list[Entry]:
  """The PyTorch twin's state_dict order (no official code exists, so the twin is the layout;
  its position table and index are non-persistent buffers). Works on abstract models."""
  return ordered_table(model, _TORCH_ORDER, family="promptsr")


SPEC = FamilySpec(
    name="promptsr", variants=VARIANTS, build=PromptSR, torch_table=torch_table,
    # Any size runs (the attention flip-pads internally); PSNR/SSIM on Y, border = scale.
    inference=Inference(multiple=16, pad_mode="reflect"),
    evaluation=Evaluation(channel="y", best_metric="psnr_y"))
create = SPEC.create
