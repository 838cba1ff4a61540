"""LayerNorm (eps 1e-5), instance norm, exact GELU and LeakyReLU against torch on random inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import jax
import jax.numpy as jnp

from csr_jax.layers.act import gelu, leaky_relu, relu
from csr_jax.layers.norm import LayerNorm, instance_norm, layer_norm


def _x(shape, seed=0, scale=3.0, shift=5.0):
  """Inputs with a large mean and spread, where a wrong eps or variance formula shows."""
  return (np.random.default_rng(seed).normal(size=shape) * scale + shift).astype(np.float32)


def test_layer_norm_matches_torch_with_affine():
  x = _x((2, 5, 6, 24))
  m = LayerNorm(24)
  rng = np.random.default_rng(1)
  m.scale[...] = jnp.asarray(rng.normal(size=24).astype(np.float32))
  m.bias[...] = jnp.asarray(rng.normal(size=24).astype(np.float32))
  ref = torch.nn.LayerNorm(24)
  assert ref.eps == m.eps == 1e-5
  with torch.no_grad():
    ref.weight.copy_(torch.tensor(np.asarray(m.scale[...])))
    ref.bias.copy_(torch.tensor(np.asarray(m.bias[...])))
    want = ref(torch.from_numpy(x)).numpy()
  np.testing.assert_allclose(np.asarray(m(jnp.asarray(x))), want, atol=2e-5, rtol=0)


def test_layer_norm_eps_matters_at_small_variance():
  """With variance ~1e-5 the eps choice changes the output by tens of percent: 1e-5 is torch's."""
  x = _x((4, 16), seed=2, scale=3e-3, shift=0.0)
  want = F.layer_norm(torch.from_numpy(x), (16,), eps=1e-5).numpy()
  np.testing.assert_allclose(np.asarray(layer_norm(jnp.asarray(x))), want, atol=1e-4, rtol=0)
  assert np.abs(np.asarray(layer_norm(jnp.asarray(x), eps=1e-6)) - want).max() > 0.1


def test_instance_norm_matches_torch():
  x = _x((2, 9, 7, 5), seed=3)
  ref = torch.nn.InstanceNorm2d(5, affine=False)
  want = ref(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(np.asarray(instance_norm(jnp.asarray(x))), want, atol=2e-5, rtol=0)


def test_gelu_is_exact_erf():
  x = np.linspace(-6, 6, 1001, dtype=np.float32)
  want = torch.nn.GELU()(torch.from_numpy(x)).numpy()
  np.testing.assert_allclose(np.asarray(gelu(jnp.asarray(x))), want, atol=1e-6, rtol=0)
  tanh_approx = np.asarray(jax.nn.gelu(jnp.asarray(x)))  # JAX's default: not torch's
  assert np.abs(tanh_approx - want).max() > 1e-4


def test_gelu_gradient_matches_torch():
  x = np.linspace(-8, 8, 1601, dtype=np.float32)
  xt = torch.from_numpy(x).requires_grad_()
  torch.nn.GELU()(xt).sum().backward()
  got = jax.vmap(jax.grad(gelu))(jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(got), xt.grad.numpy(), atol=2e-6, rtol=0)


@pytest.mark.parametrize("slope", [0.01, 0.2])
def test_leaky_relu_matches_torch(slope):
  x = _x((3, 50), seed=4, shift=0.0)
  want = F.leaky_relu(torch.from_numpy(x), slope).numpy()
  np.testing.assert_array_equal(np.asarray(leaky_relu(jnp.asarray(x), slope)), want)


def test_leaky_relu_default_slope_is_torch_default():
  x = _x((50,), seed=5, shift=0.0)
  want = torch.nn.LeakyReLU()(torch.from_numpy(x)).numpy()
  np.testing.assert_array_equal(np.asarray(leaky_relu(jnp.asarray(x))), want)
  np.testing.assert_array_equal(np.asarray(relu(jnp.asarray(x))),
                                F.relu(torch.from_numpy(x)).numpy())
