"""Conv2d with PyTorch semantics (explicit symmetric padding, groups, dilation) on NHWC.

Kernels are stored HWIO (`kernel`, shape (kh, kw, in/groups, out)); conversion to torch's
OIHW `weight` is a transpose in `csr_jax.convert`. Two CPU speed paths, taken only when the
default backend is CPU at trace time (other backends get plain XLA convolutions; neither path
was timed there): depthwise stride-1 convolutions as shifted multiply-adds (XLA:CPU's grouped
convolution is several times slower), 1x1 convolutions as matmuls (XLA:CPU computed their
kernel gradient at ~3 GFLOP/s, a dot runs at ~50), and the kernel gradient of large dense
stride-1 convs in row bands. Both give XLA's values (tests/layers/test_conv_grad.py forces each path on and off).
"""

import contextlib
import functools

import jax
import jax.numpy as jnp
from jax import lax
from flax import nnx

from csr_jax.layers import init


_FORCE_CPU_PATHS = None


@contextlib.contextmanager
def cpu_paths(enabled: bool):
  """Forces the CPU speed paths on or off while tracing inside the block (tests)."""
  global _FORCE_CPU_PATHS
  previous, _FORCE_CPU_PATHS = _FORCE_CPU_PATHS, enabled
  try:
    yield
  finally:
    _FORCE_CPU_PATHS = previous


def use_cpu_paths() -> bool:
  """Whether the CPU speed paths apply to what is being traced now (layers outside this
  module ask too)."""
  if _FORCE_CPU_PATHS is not None:
    return _FORCE_CPU_PATHS
  return jax.default_backend() == "cpu"


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


def _taps(xp, kernel, h_out: int, w_out: int, dilation):
  """sum over taps (i, j) of xp[:, i*dh:, j*dw:][:h_out, :w_out] * kernel[i, j, 0]."""
  kh, kw = kernel.shape[:2]
  dh, dw = dilation
  out = None
  for i in range(kh):
    for j in range(kw):
      tap = xp[:, i * dh:i * dh + h_out, j * dw:j * dw + w_out, :] * kernel[i, j, 0]
      out = tap if out is None else out + tap
  return out


def _dw_fwd(x, kernel, padding, dilation):
  kh, kw = kernel.shape[:2]
  (ph, pw), (dh, dw) = padding, dilation
  h_out = x.shape[1] + 2 * ph - dh * (kh - 1)
  w_out = x.shape[2] + 2 * pw - dw * (kw - 1)
  xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  # x, not xp, is kept: a saved xp is materialised, otherwise the pad fuses into the taps.
  return _taps(xp, kernel, h_out, w_out, dilation), (x, kernel)


def _dw_bwd(padding, dilation, res, g):
  """dx: the same shifted multiply-add on g with the flipped kernel (lax.pad crops where the
  padding is negative); dkernel: one product sum per tap, in a loop. The loop keeps XLA from
  fusing g's producers into the reductions: unrolled (even as one variadic reduction), XLA
  recomputed the forward's depthwise conv and GELU inside them, 4x slower in a PromptCIR
  block than materialising g once."""
  x, kernel = res
  kh, kw = kernel.shape[:2]
  (ph, pw), (dh, dw) = padding, dilation
  h_out, w_out = g.shape[1:3]
  h_in, w_in = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  lo_h, lo_w = dh * (kh - 1) - ph, dw * (kw - 1) - pw
  gp = lax.pad(g, jnp.zeros((), g.dtype), [(0, 0, 0), (lo_h, lo_h, 0), (lo_w, lo_w, 0), (0, 0, 0)])
  dx = _taps(gp, kernel[::-1, ::-1], h_in, w_in, dilation)

  chunks = 2 if h_out % 2 == 0 else 1
  rows = h_out // chunks

  def row_chunk(r, dk):
    xs = lax.dynamic_slice_in_dim(xp, r * rows, rows + dh * (kh - 1), axis=1)
    gs = lax.dynamic_slice_in_dim(g, r * rows, rows, axis=1).astype(jnp.float32)
    prods = tuple(xs[:, i * dh:i * dh + rows, j * dw:j * dw + w_out] * gs
                  for i in range(kh) for j in range(kw))
    sums = lax.reduce(prods, (jnp.zeros((), jnp.float32),) * len(prods),
                      lambda a, b: tuple(u + v for u, v in zip(a, b)), (0, 1))
    return dk + jnp.sum(jnp.stack(sums), axis=1)

  dk = lax.fori_loop(0, chunks, row_chunk, jnp.zeros((kh * kw, g.shape[-1]), jnp.float32))
  return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise(x, kernel, padding, dilation):
  return _dw_fwd(x, kernel, padding, dilation)[0]


_depthwise.defvjp(_dw_fwd, _dw_bwd)


def depthwise_conv2d(x, kernel, padding: tuple[int, int], dilation=(1, 1)):
  """Stride-1 depthwise conv as a sum of kh*kw shifted, per-channel scaled copies of x.

  x: [B, H, W, C]; kernel: [kh, kw, 1, C]; zero padding `padding` = (ph, pw). The custom VJP
  keeps the train step from materialising every shifted slice (autodiff's slice transposes
  cost ~10x the forward). Reverse mode only (no jvp).
  """
  return _depthwise(x, kernel, tuple(padding), tuple(dilation))


@jax.custom_vjp
def _matmul(x, kernel):
  return x @ kernel


def _matmul_fwd(x, kernel):
  return x @ kernel, (x, kernel)


def _matmul_bwd(res, g):
  """dkernel as one [in, N] @ [N, out] product over the flattened leading axes. Left to
  autodiff, XLA:CPU stored g (and the fusion producing it) transposed for that product, at a
  fraction of memory speed (a PromptCIR Restormer block's backward went from 2.6 to 1.8 s)."""
  x, kernel = res
  dk = jnp.dot(x.reshape(-1, x.shape[-1]).T, g.reshape(-1, g.shape[-1]))
  return g @ kernel.T, dk.astype(kernel.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def matmul(x, kernel):
  """x @ kernel over the last axis of x (Linear, 1x1 conv); reverse mode only on CPU."""
  return _matmul(x, kernel) if use_cpu_paths() else x @ kernel


def _xla_conv(x, kernel, stride, padding, dilation, groups):
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=tuple(stride),
      padding=[(padding[0], padding[0]), (padding[1], padding[1])],
      rhs_dilation=tuple(dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups)


# The kernel gradient of a dense conv whose input exceeds the CPU caches (UCIP's 256x256x64
# tail) runs ~2x faster as a sum over row bands of about this many bytes of input.
_BAND_BYTES = 4 << 20


def _band_rows(x, kernel) -> int:
  """Rows per band for the kernel gradient, or 0 to let XLA do it in one piece."""
  row_bytes = x.shape[0] * x.shape[2] * x.shape[3] * x.dtype.itemsize
  if row_bytes * x.shape[1] <= 4 * _BAND_BYTES or kernel.shape[3] < 16:
    return 0
  return max(8, _BAND_BYTES // row_bytes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _banded_conv(x, kernel, padding, rows):
  return _xla_conv(x, kernel, (1, 1), padding, (1, 1), 1)


def _banded_fwd(x, kernel, padding, rows):
  return _banded_conv(x, kernel, padding, rows), (x, kernel)


def _banded_bwd(padding, rows, res, g):
  x, kernel = res
  conv = lambda x, k, pad: _xla_conv(x, k, (1, 1), pad, (1, 1), 1)
  dx = jax.vjp(lambda x: conv(x, kernel, padding), x)[1](g)[0]
  (ph, pw), kh = padding, kernel.shape[0]
  xp = jnp.pad(x, ((0, 0), (ph, ph), (0, 0), (0, 0)))
  dk = None
  for r0 in range(0, g.shape[1], rows):
    r1 = min(r0 + rows, g.shape[1])
    band = xp[:, r0:r1 + kh - 1]
    d = jax.vjp(lambda k: conv(band, k, (0, pw)), kernel)[1](g[:, r0:r1])[0]
    dk = d if dk is None else dk + d
  return dx, dk


_banded_conv.defvjp(_banded_fwd, _banded_bwd)


def conv2d(x, kernel, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
  """Functional torch-style conv on NHWC with an HWIO kernel."""
  c_in = x.shape[-1]
  stride, padding, dilation = tuple(stride), tuple(padding), tuple(dilation)
  cpu = use_cpu_paths()
  if (cpu and groups == c_in and kernel.shape[2] == 1 and kernel.shape[3] == c_in
      and stride == (1, 1)):
    y = depthwise_conv2d(x, kernel, padding, dilation)
  elif cpu and kernel.shape[:2] == (1, 1) and groups == 1 and stride == (1, 1) and padding == (0, 0):
    y = matmul(x, kernel[0, 0])
  elif cpu and groups == 1 and stride == (1, 1) and dilation == (1, 1) and _band_rows(x, kernel):
    y = _banded_conv(x, kernel, padding, _band_rows(x, kernel))
  else:
    y = _xla_conv(x, kernel, stride, padding, dilation, groups)
  if bias is not None:
    y = y + bias
  return y


class Conv2d(nnx.Module):
  """torch.nn.Conv2d on NHWC tensors (zero padding). Default init is torch's
  (U(+-1/sqrt(fan_in)) for weight and bias); `kernel_init`/`bias_init` are `fn(key, shape)`."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
               dilation=1, groups: int = 1, bias: bool = True, *, rngs, kernel_init=None,
               bias_init=None):
    if in_channels % groups or out_channels % groups:
      raise ValueError(f"Conv2d: channels {in_channels}->{out_channels} not divisible by "
                       f"groups={groups}")
    self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
    self.kernel_size = _pair(kernel_size)
    self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
    kh, kw = self.kernel_size
    default = functools.partial(init.torch_uniform, fan_in=(in_channels // groups) * kh * kw)
    self.kernel = nnx.Param((kernel_init or default)(
        rngs.params(), (kh, kw, in_channels // groups, out_channels)))
    self.bias = nnx.Param((bias_init or default)(rngs.params(), (out_channels,))) if bias else None

  def __call__(self, x):
    if x.shape[-1] != self.in_channels:
      raise ValueError(f"Conv2d expects {self.in_channels} channels (NHWC), got shape {x.shape}")
    b = self.bias[...] if self.bias is not None else None
    return conv2d(x, self.kernel[...], b, self.stride, self.padding, self.dilation, self.groups)


class Linear(nnx.Module):
  """torch.nn.Linear (kernel stored (in, out)); torch default init unless `kernel_init` /
  `bias_init` (`fn(key, shape)`) are given."""

  def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rngs,
               kernel_init=None, bias_init=None):
    self.in_features, self.out_features = in_features, out_features
    default = functools.partial(init.torch_uniform, fan_in=in_features)
    self.kernel = nnx.Param((kernel_init or default)(rngs.params(), (in_features, out_features)))
    self.bias = (nnx.Param((bias_init or default)(rngs.params(), (out_features,)))
                 if bias else None)

  def __call__(self, x):
    y = matmul(x, self.kernel[...])
    if self.bias is not None:
      y = y + self.bias[...]
    return y
