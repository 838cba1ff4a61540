"""PyTorch twin of csr_jax.models.promptsr (no official code exists; the layout is this project's).

Module names and registration order define the state_dict that csr_jax.convert.promptsr emits;
the numerics follow the JAX model step for step (stable category sort, masked padding keys,
flip padding inside the attention, Q/K/V folded into the anchor side, mean shift).
NCHW in, NCHW out.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from csr_jax.torch_twins.common import calculate_mask, calculate_rpi, window_partition, window_reverse

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


class FFN(nn.Module):
  def __init__(self, dim, hidden):
    super().__init__()
    self.fc1 = nn.Linear(dim, hidden)
    self.fc2 = nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x)))


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
  def __init__(self, dim, anchor_down, down_groups, anchor_region, alpha, mlp_ratio):
    super().__init__()
    self.d, self.region, self.alpha = anchor_down, anchor_region, alpha
    self.norm1 = nn.LayerNorm(dim)
    self.q = nn.Linear(dim, dim)
    self.k = nn.Linear(dim, dim)
    self.v = nn.Linear(dim, dim)
    self.down = nn.Conv2d(dim, dim, anchor_down, stride=anchor_down, groups=down_groups)
    self.a = nn.Linear(dim, dim)
    self.kp = nn.Linear(dim, dim)
    self.vp = nn.Linear(dim, dim)
    self.norm2 = nn.LayerNorm(dim)
    self.ffn = FFN(dim, int(dim * mlp_ratio))

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
  def __init__(self, dim, attn_dim, num_heads, window_size, shift, category_size, mlp_ratio):
    super().__init__()
    self.attn_dim, self.num_heads, self.ws, self.shift = attn_dim, num_heads, window_size, shift
    self.category_size = category_size
    self.win_heads = num_heads // 2
    self.relative_position_bias_table = nn.Parameter(
        torch.zeros((2 * window_size - 1) ** 2, self.win_heads))
    self.logit_scale = nn.Parameter(torch.full((1,), math.log(10.0)))
    self.norm1 = nn.LayerNorm(dim)
    self.qkv = nn.Linear(dim, 3 * attn_dim)
    self.proj = nn.Linear(attn_dim, dim)
    self.norm2 = nn.LayerNorm(dim)
    self.ffn = FFN(dim, int(dim * mlp_ratio))
    nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
    self.register_buffer("rpi", calculate_rpi(window_size), persistent=False)

  def window_attention(self, qkv):  # b, h, w, 3, hw, dh
    b, h, w, _, hw, dh = qkv.shape
    ws, s = self.ws, self.shift
    qkv = flip_pad(qkv.reshape(b, h, w, -1), ws)
    hp, wp = qkv.shape[1:3]
    if s:
      qkv = torch.roll(qkv, (-s, -s), dims=(1, 2))
    win = window_partition(qkv, ws).reshape(-1, ws * ws, 3, hw, dh)
    q, k, v = (win[:, :, i].transpose(1, 2) for i in range(3))
    attn = (q * dh ** -0.5) @ k.transpose(-2, -1)
    bias = self.relative_position_bias_table[self.rpi.view(-1)].view(ws * ws, ws * ws, hw)
    attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
    if s:
      mask = calculate_mask(hp, wp, ws, s).to(attn)
      nw = mask.shape[0]
      attn = (attn.view(-1, nw, hw, ws * ws, ws * ws) + mask[None, :, None]).view(attn.shape)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, ws, ws, hw * dh)
    out = window_reverse(out, ws, hp, wp)
    if s:
      out = torch.roll(out, (s, s), dims=(1, 2))
    return out[:, :h, :w]

  def forward(self, x, category):
    b, h, w, _ = x.shape
    nh, hw = self.num_heads, self.win_heads
    dh = self.attn_dim // nh
    qkv = self.qkv(self.norm1(x)).reshape(b, h, w, 3, nh, dh)
    x_win = self.window_attention(qkv[..., :hw, :])
    qc = qkv[..., hw:, :].reshape(b, h * w, 3, nh - hw, dh)
    scale = torch.clamp(self.logit_scale[0], max=math.log(100.0)).exp()
    x_cat = category_attention(qc[:, :, 0], qc[:, :, 1], qc[:, :, 2], category,
                               self.category_size, scale)
    x = x + self.proj(torch.cat([x_win, x_cat.reshape(b, h, w, -1)], -1))
    return x + self.ffn(self.norm2(x))


class CPB(nn.Module):
  def __init__(self, dim, attn_dim, num_heads, window_size, category_size, anchor_down,
               down_groups, anchor_region, alpha, mlp_ratio):
    super().__init__()
    self.gapl = GAPL(dim, anchor_down, down_groups, anchor_region, alpha, mlp_ratio)
    self.lpl1 = LPL(dim, attn_dim, num_heads, window_size, 0, category_size, mlp_ratio)
    self.lpl2 = LPL(dim, attn_dim, num_heads, window_size, window_size // 2, category_size,
                    mlp_ratio)

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
               category_size, anchor_down, down_groups, anchor_region, alpha, mlp_ratio, upscale,
               in_chans=3):
    super().__init__()
    self.upscale = upscale
    self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
    self.layers = nn.ModuleList([
        ResidualGroup(embed_dim, depth, attn_dim=attn_dim, num_heads=num_heads,
                      window_size=window_size, category_size=category_size,
                      anchor_down=anchor_down, down_groups=down_groups,
                      anchor_region=anchor_region, alpha=alpha, mlp_ratio=mlp_ratio)
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
