"""Gradients of Conv2d's custom-VJP paths (depthwise shifted multiply-add, row-banded kernel
gradient of large dense convs, 1x1 convs as matmuls) against torch autograd on the same
inputs."""

import numpy as np
import pytest
import torch
import jax
import jax.numpy as jnp
from flax import nnx

from csr_jax.layers import conv
from csr_jax.layers.conv import Conv2d


def _torch_grads(m, x, g, cin, cout, k, pad, dil, groups):
  ref = torch.nn.Conv2d(cin, cout, k, 1, pad, dil, groups, True)
  with torch.no_grad():
    ref.weight.copy_(torch.tensor(np.transpose(np.asarray(m.kernel[...]), (3, 2, 0, 1))))
    ref.bias.copy_(torch.tensor(np.asarray(m.bias[...])))
  xt = torch.tensor(np.transpose(x, (0, 3, 1, 2)), requires_grad=True)
  out = ref(xt)
  out.backward(torch.tensor(np.transpose(g, (0, 3, 1, 2))))
  return (np.transpose(xt.grad.numpy(), (0, 2, 3, 1)),
          np.transpose(ref.weight.grad.numpy(), (2, 3, 1, 0)), ref.bias.grad.numpy())


def _jax_grads(m, x, g):
  graphdef, params = nnx.split(m, nnx.Param)

  def loss(p, x):
    return jnp.sum(nnx.merge(graphdef, p)(x) * g)

  dp, dx = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
  return np.asarray(dx), np.asarray(dp["kernel"][...]), np.asarray(dp["bias"][...])


CASES = [  # cin, cout, kernel, padding, dilation, groups
    (8, 8, 5, 2, 1, 8),            # UCIP atm_local
    (8, 8, 3, 1, 1, 8),            # UCIP PEG
    (8, 8, (3, 5), (2, 1), (2, 1), 8),  # dilated, rectangular, cropping transpose
    (8, 8, 3, 0, 1, 8),            # no padding
    (8, 16, 3, 1, 1, 1),           # dense: banded kernel gradient (bands forced below)
    (8, 16, 5, 2, 1, 1),
    (8, 16, 1, 0, 1, 1),           # 1x1: a matmul on CPU
]


@pytest.mark.parametrize("cin,cout,k,pad,dil,groups", CASES)
def test_conv_grads_match_torch(monkeypatch, cin, cout, k, pad, dil, groups):
  monkeypatch.setattr(conv, "_BAND_BYTES", 512)  # 13 rows -> bands of 8 and 5 rows
  m = Conv2d(cin, cout, k, 1, pad, dil, groups, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 13, 11, cin)).astype(np.float32)
  if groups == 1 and k != 1:
    assert conv._band_rows(jnp.asarray(x), m.kernel[...]) == 8
  g = rng.normal(size=m(jnp.asarray(x)).shape).astype(np.float32)
  with conv.cpu_paths(True):
    got_all = _jax_grads(m, jnp.asarray(x), jnp.asarray(g))
  for got, want in zip(got_all,
                       _torch_grads(m, x, g, cin, cout, k, pad, dil, groups)):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-5 * max(1.0, np.abs(want).max()), rtol=0)


@pytest.mark.parametrize("cin,cout,k,pad,dil,groups", CASES)
def test_cpu_paths_equal_plain_xla(monkeypatch, cin, cout, k, pad, dil, groups):
  """Each CPU speed path, forced on and off on this CPU: same outputs and gradients, and the
  switch really changes the program (a depthwise or 1x1 conv has no XLA convolution on the
  CPU path; a banded kernel gradient has one convolution per band)."""
  monkeypatch.setattr(conv, "_BAND_BYTES", 512)
  m = Conv2d(cin, cout, k, 1, pad, dil, groups, rngs=nnx.Rngs(2))
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 13, 11, cin)).astype(np.float32))
  g = jnp.asarray(rng.normal(size=m(x).shape).astype(np.float32))
  graphdef, params = nnx.split(m, nnx.Param)
  loss = lambda p, x: jnp.sum(nnx.merge(graphdef, p)(x) * g)
  runs, convs = [], []
  for on in (True, False):
    with conv.cpu_paths(on):
      fn = jax.value_and_grad(lambda p, x: loss(p, x), argnums=(0, 1))
      convs.append(str(jax.make_jaxpr(fn)(params, x)).count("conv_general_dilated"))
      runs.append(jax.tree.leaves(jax.jit(fn)(params, x)))
  assert convs[0] != convs[1]
  for a, b in zip(*runs):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                               atol=2e-5 * max(1.0, np.abs(np.asarray(b)).max()), rtol=0)
