"""Conv2d with PyTorch semantics (explicit symmetric padding, groups, dilation) on NHWC.

Kernels are stored HWIO (`kernel`, shape (kh, kw, in/groups, out)); conversion to torch's
OIHW `weight` is a transpose in `csr_jax.convert`. Depthwise stride-1 convolutions take a
shifted multiply-add path: XLA's grouped convolution is several times slower on CPU, and the
two give the same result (see tests/layers/test_conv.py).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from csr_jax.layers.init import torch_uniform


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


def depthwise_conv2d(x, kernel, padding: tuple[int, int], dilation=(1, 1)):
  """Stride-1 depthwise conv as a sum of kh*kw shifted, per-channel scaled copies of x.

  x: [B, H, W, C]; kernel: [kh, kw, 1, C]; zero padding `padding` = (ph, pw).
  """
  kh, kw = kernel.shape[:2]
  ph, pw = padding
  dh, dw = dilation
  h_out = x.shape[1] + 2 * ph - dh * (kh - 1)
  w_out = x.shape[2] + 2 * pw - dw * (kw - 1)
  xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  out = None
  for i in range(kh):
    for j in range(kw):
      tap = xp[:, i * dh:i * dh + h_out, j * dw:j * dw + w_out, :] * kernel[i, j, 0]
      out = tap if out is None else out + tap
  return out


def conv2d(x, kernel, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
  """Functional torch-style conv on NHWC with an HWIO kernel."""
  c_in = x.shape[-1]
  if (groups == c_in and kernel.shape[2] == 1 and kernel.shape[3] == c_in
      and tuple(stride) == (1, 1)):
    y = depthwise_conv2d(x, kernel, tuple(padding), tuple(dilation))
  else:
    y = jax.lax.conv_general_dilated(
        x, kernel, window_strides=tuple(stride),
        padding=[(padding[0], padding[0]), (padding[1], padding[1])],
        rhs_dilation=tuple(dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups)
  if bias is not None:
    y = y + bias
  return y


class Conv2d(nnx.Module):
  """torch.nn.Conv2d on NHWC tensors (zero padding), torch default init."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
               dilation=1, groups: int = 1, bias: bool = True, *, rngs: nnx.Rngs):
    if in_channels % groups or out_channels % groups:
      raise ValueError(f"Conv2d: channels {in_channels}->{out_channels} not divisible by "
                       f"groups={groups}")
    self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
    self.kernel_size = _pair(kernel_size)
    self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
    kh, kw = self.kernel_size
    fan_in = (in_channels // groups) * kh * kw
    self.kernel = nnx.Param(torch_uniform(rngs.params(), (kh, kw, in_channels // groups,
                                                          out_channels), fan_in))
    self.bias = nnx.Param(torch_uniform(rngs.params(), (out_channels,), fan_in)) if bias else None

  def __call__(self, x):
    if x.shape[-1] != self.in_channels:
      raise ValueError(f"Conv2d expects {self.in_channels} channels (NHWC), got shape {x.shape}")
    b = self.bias[...] if self.bias is not None else None
    return conv2d(x, self.kernel[...], b, self.stride, self.padding, self.dilation, self.groups)


class Linear(nnx.Module):
  """torch.nn.Linear (kernel stored (in, out)), torch default init."""

  def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
               rngs: nnx.Rngs):
    self.in_features, self.out_features = in_features, out_features
    self.kernel = nnx.Param(torch_uniform(rngs.params(), (in_features, out_features),
                                          in_features))
    self.bias = (nnx.Param(torch_uniform(rngs.params(), (out_features,), in_features))
                 if bias else None)

  def __call__(self, x):
    y = x @ self.kernel[...]
    if self.bias is not None:
      y = y + self.bias[...]
    return y

