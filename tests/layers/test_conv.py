"""Conv2d / Linear / depthwise fast path against torch.nn on random inputs (float32)."""

import numpy as np
import pytest
import torch
import jax
import jax.numpy as jnp
from flax import nnx

from csr_jax.layers.conv import Conv2d, Linear, conv2d, depthwise_conv2d


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(x), (0, 3, 1, 2))))


def _nhwc(t):
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


CASES = [  # cin, cout, kernel, stride, padding, dilation, groups, bias
    (3, 8, 5, 1, 2, 1, 1, True),         # UCIP patch embed
    (8, 6, 3, 1, 1, 1, 1, False),
    (8, 6, 3, 2, 1, 1, 1, True),          # strided (torch pads symmetrically, never 'SAME')
    (8, 8, 3, 1, 2, 2, 1, True),          # dilated
    (8, 4, 1, 1, 0, 1, 1, True),          # 1x1
    (8, 6, (3, 5), 1, (1, 2), 1, 2, True),  # rectangular, grouped
    (8, 8, 5, 1, 2, 1, 8, True),          # depthwise 5x5: fast path (UCIP atm_local)
    (8, 8, 3, 1, 1, 1, 8, True),          # depthwise 3x3: fast path (UCIP PEG)
    (8, 8, 3, 1, 2, 2, 8, False),         # depthwise dilated: fast path
    (8, 8, 3, 2, 1, 1, 8, True),          # depthwise strided: XLA grouped path
    (8, 16, 3, 1, 1, 1, 8, True),         # channel multiplier 2: XLA grouped path
]


@pytest.mark.parametrize("cin,cout,k,stride,pad,dil,groups,bias", CASES)
def test_conv2d_matches_torch(cin, cout, k, stride, pad, dil, groups, bias):
  m = Conv2d(cin, cout, k, stride, pad, dil, groups, bias, rngs=nnx.Rngs(0))
  x = np.random.default_rng(1).normal(size=(2, 13, 11, cin)).astype(np.float32)
  ref = torch.nn.Conv2d(cin, cout, k, stride, pad, dil, groups, bias)
  with torch.no_grad():
    ref.weight.copy_(torch.tensor(np.transpose(np.asarray(m.kernel[...]), (3, 2, 0, 1))))
    if bias:
      ref.bias.copy_(torch.tensor(np.asarray(m.bias[...])))
    want = _nhwc(ref(_nchw(x)))
  got = np.asarray(m(jnp.asarray(x)))
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=2e-6 * max(1.0, np.abs(want).max()), rtol=0)


def test_conv2d_init_is_torch_default():
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, as torch's
  kaiming_uniform(a=sqrt(5))."""
  m = Conv2d(32, 64, 3, rngs=nnx.Rngs(0))
  bound = 1 / np.sqrt(32 * 9)
  for v in (np.asarray(m.kernel[...]), np.asarray(m.bias[...])):
    assert np.abs(v).max() <= bound
    assert np.abs(v).max() > 0.9 * bound
  k = np.asarray(m.kernel[...])
  assert abs(k.mean()) < 0.02 * bound
  np.testing.assert_allclose(k.std(), bound / np.sqrt(3), rtol=0.02)


def test_conv2d_rejects_wrong_channels():
  m = Conv2d(4, 4, 3, padding=1, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="expects 4 channels"):
    m(jnp.zeros((1, 8, 8, 3)))


def test_depthwise_fast_path_equals_xla_grouped_conv():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 10, 12, 16)).astype(np.float32))
  kern = jnp.asarray(rng.normal(size=(5, 5, 1, 16)).astype(np.float32))
  fast = depthwise_conv2d(x, kern, (2, 2))
  xla = jax.lax.conv_general_dilated(x, kern, (1, 1), [(2, 2), (2, 2)],
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=16)
  np.testing.assert_allclose(np.asarray(fast), np.asarray(xla), atol=1e-5, rtol=0)
  assert conv2d(x, kern, padding=(2, 2), groups=16).shape == (2, 10, 12, 16)


@pytest.mark.parametrize("shape,bias", [((5, 12), True), ((2, 4, 3, 12), False)])
def test_linear_matches_torch(shape, bias):
  m = Linear(12, 7, bias=bias, rngs=nnx.Rngs(3))
  x = np.random.default_rng(4).normal(size=shape).astype(np.float32)
  ref = torch.nn.Linear(12, 7, bias=bias)
  with torch.no_grad():
    ref.weight.copy_(torch.from_numpy(np.asarray(m.kernel[...]).T.copy()))
    if bias:
      ref.bias.copy_(torch.tensor(np.asarray(m.bias[...])))
    want = ref(torch.from_numpy(x)).numpy()
  np.testing.assert_allclose(np.asarray(m(jnp.asarray(x))), want, atol=2e-6, rtol=0)
