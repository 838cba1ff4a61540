"""Torch-side blocks shared by the twins (HAT/Swin window helpers, RCAN channel attention),
written once."""

import torch
from torch import nn


def window_partition(x, ws):
  """(b, h, w, c) -> (b * nW, ws, ws, c), row-major windows."""
  b, h, w, c = x.shape
  x = x.view(b, h // ws, ws, w // ws, ws, c)
  return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)


def window_reverse(windows, ws, h, w):
  b = int(windows.shape[0] / (h * w / ws / ws))
  x = windows.view(b, h // ws, w // ws, ws, ws, -1)
  return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def calculate_mask(h, w, ws, ss):
  """SW-MSA mask (nW, ws*ws, ws*ws) with 0 / -100 entries."""
  img_mask = torch.zeros((1, h, w, 1))
  cnt = 0
  for hs in (slice(0, -ws), slice(-ws, -ss), slice(-ss, None)):
    for wsl in (slice(0, -ws), slice(-ws, -ss), slice(-ss, None)):
      img_mask[:, hs, wsl, :] = cnt
      cnt += 1
  mw = window_partition(img_mask, ws).view(-1, ws * ws)
  mask = mw.unsqueeze(1) - mw.unsqueeze(2)
  return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def calculate_rpi(ws):
  """Relative position index (ws*ws, ws*ws) into a (2ws-1)^2 bias table (int64)."""
  coords = torch.stack(torch.meshgrid([torch.arange(ws), torch.arange(ws)], indexing="ij"))
  flat = torch.flatten(coords, 1)
  rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
  rel[:, :, 0] += ws - 1
  rel[:, :, 1] += ws - 1
  rel[:, :, 0] *= 2 * ws - 1
  return rel.sum(-1)


class ChannelAttention(nn.Module):
  """RCAN/HAT squeeze-excitation: x * sigmoid(conv(relu(conv(avgpool(x))))), torch names
  `attention.{1,3}` as in both official codes."""

  def __init__(self, channels, reduction):
    super().__init__()
    self.attention = nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels // reduction, 1),
        nn.ReLU(inplace=True), nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid())

  def forward(self, x):
    return x * self.attention(x)
