"""PyTorch twin of csr_jax.models.promptsr (no official code exists; the layout is this project's).

Module names and registration order define the state_dict that the JAX model's `torch_table`
emits; the numerics follow the JAX model step for step (stable category sort, masked padding
keys, flip padding inside the attention, Q/K/V folded into the anchor side, mean shift). Imports
nothing from csr_jax.models. NCHW in, NCHW out.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from csr_jax.torch_twins.common import (calculate_mask, calculate_rpi, window_partition,
                                       window_reverse)

RGB_MEAN = (0.4488, 0.4371, 0.4040)


def category_attention(q, k, v, category, group_size, scale):
  """q, k, v: (b, n, heads, dh); category (b, n) -> (b, n, heads, dh)."""
  b, n, h, dh = q.shape
  gs = min(n, group_size)
  ng = (n + gs - 1) // gs
  pad = ng * gs - n
  order = torch.sort(category, dim=-1, stable=True).indices
  inverse = torch.argsort(order, dim=-1)

  def sort_pad(t):
    t = torch.gather(t, 1, order[:, :, None, None].expand_as(t))
    t = F.pad(t, (0, 0, 0, 0, 0, pad))
    return t.reshape(b, ng, gs, h, dh).permute(0, 1, 3, 2, 4)

  qs, ks, vs = sort_pad(q), sort_pad(k), sort_pad(v)
  attn = (qs @ ks.transpose(-2, -1)) * scale
  if pad:
    valid = (torch.arange(ng * gs) < n).view(ng, gs)
    attn = attn.masked_fill(~valid[None, :, None, None, :], float("-inf"))
  out = (attn.softmax(-1) @ vs).permute(0, 1, 3, 2, 4).reshape(b, ng * gs, h, dh)[:, :n]
  return torch.gather(out, 1, inverse[:, :, None, None].expand_as(out))


class ConvFFN(nn.Module):
  """ATD-light's ConvFFN on (b, h, w, c): fc1, GELU, h + GELU(dwconv(h)), fc2."""

  def __init__(self, dim, hidden, kernel):
    super().__init__()
    self.fc1 = nn.Linear(dim, hidden)
    self.dwconv = nn.Conv2d(hidden, hidden, kernel, 1, kernel // 2, groups=hidden)
    self.fc2 = nn.Linear(hidden, dim)

  def forward(self, x):
    h = F.gelu(self.fc1(x))
    return self.fc2(h + F.gelu(self.dwconv(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)))


def log_relative_coords(ws):
  """Swin V2 / GRL log-spaced relative offsets ((2ws-1)^2, 2), rows in rpi order."""
  r = torch.arange(-(ws - 1), ws, dtype=torch.float64) * 8 / max(ws - 1, 1)
  t = torch.stack(torch.meshgrid([r, r], indexing="ij"), -1).reshape(-1, 2)
  return (torch.sign(t) * torch.log2(t.abs() + 1.0) / 3.0).float()


def window_attention(qkv, ws, shift, bias):
  """(b, h, w, 3, heads, dh) -> (b, h, w, heads * dh): Swin (S)W-MSA with an additive bias."""
  b, h, w, _, nh, dh = qkv.shape
  if shift:
    qkv = torch.roll(qkv, (-shift, -shift), dims=(1, 2))
  win = window_partition(qkv.reshape(b, h, w, -1), ws).reshape(-1, ws * ws, 3, nh, dh)
  q, k, v = (win[:, :, i].transpose(1, 2) for i in range(3))
  attn = (q @ k.transpose(-2, -1)) * dh ** -0.5 + bias.unsqueeze(0)
  if shift:
    mask = calculate_mask(h, w, ws, shift).to(attn)
    nw = mask.shape[0]
    attn = (attn.view(-1, nw, nh, ws * ws, ws * ws) + mask[None, :, None]).view(attn.shape)
  out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, ws, ws, nh * dh)
  out = window_reverse(out, ws, h, w)
  return torch.roll(out, (shift, shift), dims=(1, 2)) if shift else out


def flip_pad(x, m):
  """Pads dims 1, 2 of (b, h, w, ...) up to multiples of m with mirrored copies."""
  h, w = x.shape[1:3]
  hp, wp = -(-h // m) * m, -(-w // m) * m
  if hp > 2 * h or wp > 2 * w:
    raise ValueError(f"PromptSR: feature {h}x{w} is too small to pad to a multiple of {m}")
  if hp > h:
    x = torch.cat([x, torch.flip(x, [1])], 1)[:, :hp]
  if wp > w:
    x = torch.cat([x, torch.flip(x, [2])], 2)[:, :, :wp]
  return x


def to_regions(x, region):
  b, h, w, c = x.shape
  if region is None:
    return x.reshape(b, h * w, c)
  return window_partition(x, region).reshape(-1, region * region, c)


def from_regions(t, region, b, h, w):
  if region is None:
    return t.reshape(b, h, w, -1)
  return window_reverse(t.reshape(-1, region, region, t.shape[-1]), region, h, w)


class GAPL(nn.Module):
  def __init__(self, dim, anchor_down, anchor_region, alpha, mlp_ratio, ffn_kernel):
    super().__init__()
    self.d, self.region, self.alpha = anchor_down, anchor_region, alpha
    self.norm1 = nn.LayerNorm(dim)
    self.q = nn.Linear(dim, dim)
    self.k = nn.Linear(dim, dim)
    self.v = nn.Linear(dim, dim)
    self.down = nn.Conv2d(dim, dim, anchor_down + 1, anchor_down, anchor_down // 2, groups=dim)
    self.a = nn.Linear(dim, dim)
    self.kp = nn.Linear(dim, dim)
    self.vp = nn.Linear(dim, dim)
    self.norm2 = nn.LayerNorm(dim)
    self.ffn = ConvFFN(dim, int(dim * mlp_ratio), ffn_kernel)

  def forward(self, x, p_prev=None):  # x: b, h, w, c
    b, h, w, c = x.shape
    region = self.region
    xn = flip_pad(self.norm1(x), region or self.d)
    hp, wp = xn.shape[1:3]
    t = to_regions(xn, region)
    xd = self.down(xn.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    a = to_regions(self.a(xd), None if region is None else region // self.d)
    scale = c ** -0.5
    # Q, K, V projections folded into the anchor side (torch weights are (out, in)).
    m_coarse = ((a @ self.k.weight) @ t.transpose(1, 2) + (a @ self.k.bias)[..., None]) * scale
    p = self.v(m_coarse.softmax(-1) @ t)
    if p_prev is not None:
      p = self.alpha * p_prev + (1.0 - self.alpha) * p
    key = self.kp(p) + a
    m_fine = (t @ (key @ self.q.weight).transpose(1, 2) + (key @ self.q.bias)[:, None, :]) * scale
    xp = m_fine.softmax(-1) @ self.vp(p)
    x = x + from_regions(xp, region, b, hp, wp)[:, :h, :w]
    x = x + self.ffn(self.norm2(x))
    na, nr = a.shape[1], a.shape[0] // b
    offset = (torch.arange(a.shape[0]) % nr * na)[:, None]
    cats = [m_coarse.argmax(1) + offset, m_fine.argmax(-1) + offset]
    cats = [from_regions(t[..., None], region, b, hp, wp)[:, :h, :w].reshape(b, h * w)
            for t in cats]
    return x, p, cats[0], cats[1]


class LPL(nn.Module):
  def __init__(self, dim, attn_dim, num_heads, window_size, shift, category_size, mlp_ratio,
               ffn_kernel, pos_hidden):
    super().__init__()
    self.attn_dim, self.num_heads, self.ws, self.shift = attn_dim, num_heads, window_size, shift
    self.category_size = category_size
    self.win_heads = num_heads // 2
    self.logit_scale = nn.Parameter(torch.full((1,), math.log(10.0)))
    self.pos_mlp = nn.Sequential(nn.Linear(2, pos_hidden), nn.ReLU(),
                                 nn.Linear(pos_hidden, self.win_heads, bias=False))
    self.norm1 = nn.LayerNorm(dim)
    self.qkv = nn.Linear(dim, 3 * attn_dim)
    self.proj = nn.Linear(attn_dim, dim)
    self.norm2 = nn.LayerNorm(dim)
    self.ffn = ConvFFN(dim, int(dim * mlp_ratio), ffn_kernel)
    self.register_buffer("coords", log_relative_coords(window_size), persistent=False)
    self.register_buffer("rpi", calculate_rpi(window_size), persistent=False)

  def forward(self, x, category):
    b, h, w, _ = x.shape
    nh, hw, ws = self.num_heads, self.win_heads, self.ws
    dh = self.attn_dim // nh
    qkv = self.qkv(self.norm1(x)).reshape(b, h, w, 3, nh, dh)
    table = 16 * torch.sigmoid(self.pos_mlp(self.coords))
    bias = table[self.rpi.view(-1)].view(ws * ws, ws * ws, hw).permute(2, 0, 1)
    x_win = window_attention(flip_pad(qkv[..., :hw, :], ws), ws, self.shift, bias)[:, :h, :w]
    qc = qkv[..., hw:, :].reshape(b, h * w, 3, nh - hw, dh)
    scale = torch.clamp(self.logit_scale[0], max=math.log(100.0)).exp()
    x_cat = category_attention(qc[:, :, 0], qc[:, :, 1], qc[:, :, 2], category,
                               self.category_size, scale)
    x = x + self.proj(torch.cat([x_win, x_cat.reshape(b, h, w, -1)], -1))
    return x + self.ffn(self.norm2(x))


class CPB(nn.Module):
  def __init__(self, dim, attn_dim, num_heads, window_size, category_size, anchor_down,
               anchor_region, alpha, mlp_ratio, ffn_kernel, pos_hidden):
    super().__init__()
    self.gapl = GAPL(dim, anchor_down, anchor_region, alpha, mlp_ratio, ffn_kernel)
    self.lpl1, self.lpl2 = (
        LPL(dim, attn_dim, num_heads, window_size, shift, category_size, mlp_ratio, ffn_kernel,
            pos_hidden) for shift in (0, window_size // 2))

  def forward(self, x, p_prev=None):
    x, p, cat_coarse, cat_fine = self.gapl(x, p_prev)
    return self.lpl2(self.lpl1(x, cat_coarse), cat_fine), p


class ResidualGroup(nn.Module):
  def __init__(self, dim, depth, **kw):
    super().__init__()
    self.blocks = nn.ModuleList([CPB(dim, **kw) for _ in range(depth)])
    self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

  def forward(self, x):  # b, h, w, c
    res, p = x, None
    for blk in self.blocks:
      x, p = blk(x, p)
    return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1) + res


class PromptSR(nn.Module):
  def __init__(self, *, embed_dim, num_groups, depth, num_heads, attn_dim, window_size,
               category_size, anchor_down, anchor_region, alpha, mlp_ratio, upscale, ffn_kernel=7,
               pos_hidden=512, in_chans=3):
    super().__init__()
    self.upscale = upscale
    self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
    self.layers = nn.ModuleList([
        ResidualGroup(embed_dim, depth, attn_dim=attn_dim, num_heads=num_heads,
                      window_size=window_size, category_size=category_size,
                      anchor_down=anchor_down, anchor_region=anchor_region, alpha=alpha,
                      mlp_ratio=mlp_ratio, ffn_kernel=ffn_kernel, pos_hidden=pos_hidden)
        for _ in range(num_groups)])
    self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
    self.upsample = nn.Sequential(nn.Conv2d(embed_dim, in_chans * upscale ** 2, 3, 1, 1),
                                  nn.PixelShuffle(upscale))

  def forward(self, x):  # b, 3, h, w in [0, 1]
    mean = torch.tensor(RGB_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    x0 = self.conv_first(x - mean)
    y = x0.permute(0, 2, 3, 1)
    for group in self.layers:
      y = group(y)
    x = self.conv_after_body(y.permute(0, 3, 1, 2)) + x0
    return self.upsample(x) + mean
