"""PyTorch twin of csr_jax.models.cisr (NCHW), with the same module names, so converted
weights run here and tests compare the two numerically. Includes torch versions of the blind
blocking-edge detector and the chunked non-local mean (csr_jax/layers/{blocking,non_local}.py).
Build it with the JAX model's keywords, e.g. `CISR(**csr_jax.models.cisr.VARIANTS["full_x2"])`.
"""

import torch
import torch.nn.functional as F
from torch import nn

from csr_jax.layers.blocking import ALPHA, BLOCKY, HALF_WAY, MACROBLOCK, TAU
from csr_jax.torch_twins.common import ChannelAttention

_MASKED = -1e30
_EPS = 1.0 / 255.0


def luma(x):
  x = x.detach().float()
  return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def _box_rows(d, n: int = 8):
  lo, hi = n // 2, n - 1 - n // 2
  rows = d.shape[1]
  pad = F.pad(d, (0, 0, lo, hi))
  ones = F.pad(torch.ones((1, rows, 1), dtype=d.dtype), (0, 0, lo, hi))
  s, c = 0.0, 0.0
  for t in range(n):
    s = s + pad[:, t:t + rows]
    c = c + ones[:, t:t + rows]
  return s / c


def _steps(y):
  return (y[:, :, 1:] - y[:, :, :-1]).abs()


def _phase_stats(d):
  n = d.shape[2]
  p = F.pad(d, (3, 3), mode="replicate")
  local = sum(p[:, :, 3 + o:3 + o + n] for o in (-3, -2, -1, 1, 2, 3)) / 6.0
  profile = (d / (local + _EPS)).mean(1)
  onehot = (torch.arange(1, n + 1)[None, :] % 16) == torch.arange(16)[:, None]
  sums = torch.where(onehot[None], profile[:, None, :], torch.zeros(())).sum(2)
  counts = onehot.sum(1)
  s16 = sums / counts.clamp(min=1)
  s8 = (sums[:, :8] + sums[:, 8:]) / (counts[:8] + counts[8:]).clamp(min=1)
  at = lambda s, i: s.gather(1, (i % s.shape[1])[:, None])[:, 0]
  f = s8.argmax(1)
  odd = sum(at(s8, f + o) for o in (1, 3, 5, 7)) / 4.0
  return f, at(s8, f), at(s8, f + 4), odd, (at(s16, f) - at(s16, f + 8)).abs()


def detect_grid(x):
  """x: [B, 3, H, W] -> (period, column phase, row phase), int [B] each."""
  y = luma(x)
  fc, ac, bc, cc, mc = _phase_stats(_steps(y))
  fr, ar, br, cr, mr = _phase_stats(_steps(y.transpose(1, 2)))
  norm = cc + cr + 0.01
  a, b, m = (ac - cc + ar - cr) / norm, (bc - cc + br - cr) / norm, (mc + mr) / norm
  four = (b > HALF_WAY * a) | (m > MACROBLOCK * a)
  period = torch.where(a <= BLOCKY, 0, torch.where(four, 4, 8))
  wrap = torch.where(period == 4, 4, 8)
  return period, fc % wrap, fr % wrap


def _marks(y, period, phase, tau: float, alpha: float):
  b, h, w = y.shape
  step = _box_rows(_steps(y))
  left = torch.cat([step[:, :, :1], step[:, :, :-1]], 2)
  right = torch.cat([step[:, :, 1:], step[:, :, -1:]], 2)
  idx = torch.arange(1, w)[None, :]
  on_grid = (period[:, None] > 0) & (idx % period.clamp(min=1)[:, None] == phase[:, None])
  hit = on_grid[:, None, :] & (step > tau) & (step > alpha * torch.maximum(left, right))
  zero = torch.zeros((b, h, 1), dtype=torch.bool)
  return torch.cat([hit, zero], 2) | torch.cat([zero, hit], 2)


def blocking_edges(x, tau: float = TAU, alpha: float = ALPHA):
  """x: [B, 3, H, W] -> {0, 1} mask [B, H, W]."""
  y = luma(x)
  period, phase_c, phase_r = detect_grid(x)
  cols = _marks(y, period, phase_c, tau, alpha)
  rows = _marks(y.transpose(1, 2), period, phase_r, tau, alpha).transpose(1, 2)
  return (cols | rows).to(x.dtype)


def guide_patches(g, patch: int):
  if patch == 1:
    return g
  r = patch // 2
  h, w = g.shape[2:]
  gp = F.pad(g, (r, r, r, r), mode="replicate")
  return torch.cat([gp[:, :, i:i + h, j:j + w] for i in range(patch) for j in range(patch)], 1)


def non_local_mean(z, g, h, keep, chunk: int = 1024, patch: int = 3):
  """z [B, C, H, W], g [B, Cg, H, W], h [B, H, W], keep [B, H, W] -> [B, C, H, W]."""
  b, c, hh, ww = z.shape
  n = hh * ww
  f = guide_patches(g, patch).flatten(2).transpose(1, 2)           # [B, N, D]
  dim = f.shape[-1]
  sq = (f * f).sum(-1) / dim
  vals = z.flatten(2).transpose(1, 2)
  keep = keep.reshape(b, n) > 0
  keep = torch.where(keep.any(1, keepdim=True), keep, torch.ones_like(keep))
  inv_h2 = 1.0 / h.reshape(b, n).square()
  outs = []
  for s in range(0, n, chunk):
    fq, sqq, ihq = f[:, s:s + chunk], sq[:, s:s + chunk], inv_h2[:, s:s + chunk]
    d = sqq[:, :, None] + sq[:, None, :] - 2.0 * torch.einsum("bqd,bnd->bqn", fq, f) / dim
    logits = torch.where(keep[:, None, :], -d.clamp(min=0) * ihq[:, :, None],
                         torch.full_like(d, _MASKED))
    logits = logits - logits.amax(-1, keepdim=True)
    e = torch.where(keep[:, None, :], logits.exp(), torch.zeros_like(d))
    outs.append(torch.einsum("bqn,bnc->bqc", e / e.sum(-1, keepdim=True), vals))
  return torch.cat(outs, 1).transpose(1, 2).reshape(b, c, hh, ww)


class NonLocal(nn.Module):
  def __init__(self, in_channels=3, hidden=64, chunk=1024, patch=3, h_min=1e-3):
    super().__init__()
    self.chunk, self.patch, self.h_min = chunk, patch, h_min
    self.conv1 = nn.Conv2d(in_channels, hidden, 3, padding=1)
    self.conv2 = nn.Conv2d(hidden, 1, 1)

  def forward(self, z, g, keep):
    h = F.softplus(self.conv2(F.relu(self.conv1(g))))[:, 0] + self.h_min
    return non_local_mean(z, g, h, keep, self.chunk, self.patch)


class RCAB(nn.Module):
  def __init__(self, channels, reduction):
    super().__init__()
    self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
    self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
    self.ca = ChannelAttention(channels, reduction)

  def forward(self, x):
    return x + self.ca(self.conv2(F.relu(self.conv1(x))))


class ResidualGroup(nn.Module):
  def __init__(self, channels, reduction, n_blocks):
    super().__init__()
    self.blocks = nn.ModuleList([RCAB(channels, reduction) for _ in range(n_blocks)])
    self.conv = nn.Conv2d(channels, channels, 3, padding=1)

  def forward(self, x):
    r = x
    for blk in self.blocks:
      r = blk(r)
    return x + self.conv(r)


class Mix(nn.Module):
  def __init__(self, hidden):
    super().__init__()
    self.conv1 = nn.Conv2d(9, hidden, 1)
    self.conv2 = nn.Conv2d(hidden, 3, 1)

  def forward(self, z, g, u):
    a = torch.softmax(self.conv2(F.relu(self.conv1(torch.cat([z, g, u], 1)))), 1)
    return a[:, 0:1] * z + a[:, 1:2] * g + a[:, 2:3] * u


class CISRModule(nn.Module):
  def __init__(self, aux_channels, upscale, *, channels, reduction, n_groups, n_blocks, hidden,
               patch, chunk):
    super().__init__()
    self.upscale = upscale
    self.non_local = NonLocal(3, hidden, chunk, patch)
    self.head = nn.Conv2d(6 + aux_channels, channels, 3, padding=1)
    self.body = nn.ModuleList([ResidualGroup(channels, reduction, n_blocks)
                               for _ in range(n_groups)])
    self.body_conv = nn.Conv2d(channels, channels, 3, padding=1)
    self.tail = nn.Conv2d(channels, 3 * upscale * upscale, 3, padding=1)
    self.mix = Mix(hidden)

  def forward(self, z, g, aux, keep):
    u = self.non_local(z, g, keep)
    f = self.head(torch.cat([u, z, aux], 1))
    r = f
    for grp in self.body:
      r = grp(r)
    out = self.tail(self.body_conv(r) + f)
    skip = self.mix(z, g, u)
    if self.upscale == 1:
      return out + skip
    s = self.upscale
    up = F.interpolate(skip, scale_factor=s, mode="bicubic", align_corners=False)
    return F.pixel_shuffle(out, s) + up


def split_copies(x_hr, scale):
  o = scale // 2
  return x_hr[:, :, o::scale, o::scale], F.pixel_unshuffle(x_hr, scale)


class CISR(nn.Module):
  def __init__(self, scale=2, steps=3, channels=64, reduction=16, n_groups=5, n_blocks=12,
               hidden=64, patch=3, chunk=1024):
    super().__init__()
    self.scale, self.steps = scale, steps
    kw = dict(channels=channels, reduction=reduction, n_groups=n_groups, n_blocks=n_blocks,
              hidden=hidden, patch=patch, chunk=chunk)
    self.arm = CISRModule(3 * scale * scale, 1, **kw)
    self.rem = CISRModule(3, scale, **kw)

  def forward(self, lr):
    """lr: [B, 3, h, w] in [0, 1] -> {'y': [y_1..y_J], 'x': [x_1..x_J]} (NCHW)."""
    z = lr
    keep = 1.0 - blocking_edges(z)
    x = F.interpolate(z, scale_factor=self.scale, mode="bicubic", align_corners=False)
    ys, xs = [], []
    for _ in range(self.steps):
      g, copies = split_copies(x, self.scale)
      y = self.arm(z, g, copies, keep)
      x = self.rem(z, y, y, keep)
      ys.append(y)
      xs.append(x)
    return {"y": ys, "x": xs}
