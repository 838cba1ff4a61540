"""axial_sample against a dense interpolation matrix, torch grid_sample, and finite differences."""

import numpy as np
import pytest
import torch
import jax
import jax.numpy as jnp
from jax.test_util import check_grads

from csr_jax.layers.axial import axial_sample
from tests.conftest import kodak_crop


def _inputs(b=2, h=9, w=11, c=6, scale=3.0, seed=0, dtype=np.float32):
  """x: Kodak pixels tiled to c channels; offsets random with frac in [0.1, 0.9] (away from
  the kinks of the piecewise-linear interpolation, so finite differences are valid)."""
  img = kodak_crop(h, w * b, top=100, left=200, dtype=dtype)[0]
  x = np.stack(np.split(img, b, axis=1))
  x = np.concatenate([x, 1 - x], -1) if c == 6 else x  # c is 3 or 6
  rng = np.random.default_rng(seed)
  whole = np.round(rng.normal(scale=scale, size=x.shape))
  off = whole + rng.uniform(0.1, 0.9, size=x.shape) * rng.choice([-1, 1], size=x.shape)
  return x.astype(dtype), off.astype(dtype)


def _dense(x, off, axis):
  """Linear interpolation with zero padding as a dense hat-function matrix along `axis`."""
  x, off = np.moveaxis(np.float64(x), axis, -1), np.moveaxis(np.float64(off), axis, -1)
  n = x.shape[-1]
  pos = np.arange(n) + off                                   # [..., i]
  m = np.maximum(0.0, 1.0 - np.abs(pos[..., None] - np.arange(n)))  # [..., i, j]
  return np.moveaxis(np.einsum("...ij,...j->...i", m, x), -1, axis)


@pytest.mark.parametrize("axis", [1, 2])
@pytest.mark.parametrize("custom_grad", [True, False])
def test_matches_dense_reference(axis, custom_grad):
  x, off = _inputs()
  out = jax.jit(lambda x, o: axial_sample(x, o, axis, custom_grad=custom_grad))(x, off)
  np.testing.assert_allclose(np.asarray(out), _dense(x, off, axis), rtol=0, atol=1e-6)
  # A few taps really moved across the border: the zero padding is exercised.
  assert np.mean(np.asarray(out) == 0) > 0.02


def test_integer_offsets_are_shifts():
  x, _ = _inputs()
  off = np.full_like(x, 2.0)
  out = np.asarray(axial_sample(x, off, 2))
  np.testing.assert_array_equal(out[:, :, :-2], x[:, :, 2:])
  np.testing.assert_array_equal(out[:, :, -2:], 0)


@pytest.mark.parametrize("far", [-1e4, 1e4, -3e38, 3e38, -np.inf, np.inf])
def test_offsets_far_outside_give_zero(far):
  x, _ = _inputs()
  off = np.full_like(x, far)
  for axis in (1, 2):
    out, vjp = jax.vjp(lambda x, o: axial_sample(x, o, axis), x, off)
    np.testing.assert_array_equal(np.asarray(out), 0)
    dx, doff = vjp(jnp.ones_like(out))
    np.testing.assert_array_equal(np.asarray(dx), 0)
    np.testing.assert_array_equal(np.asarray(doff), 0)


def test_gradients_float64():
  with jax.enable_x64(True):
    x, off = _inputs(b=1, h=5, w=6, c=3, dtype=np.float64)
    x, off = jnp.asarray(x), jnp.asarray(off)
    for axis in (1, 2):
      f = lambda x, o: axial_sample(x, o, axis)
      check_grads(f, (x, off), order=1, modes=("rev",), eps=1e-4)
      g = lambda x, o: axial_sample(x, o, axis, custom_grad=False)
      check_grads(g, (x, off), order=1, modes=("fwd", "rev"), eps=1e-4)
      # The custom VJP equals autodiff's on a random cotangent.
      ct = jax.random.normal(jax.random.key(axis), x.shape, jnp.float64)
      gc = jax.vjp(f, x, off)[1](ct)
      ga = jax.vjp(g, x, off)[1](ct)
      for a, b in zip(gc, ga):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)


def test_jit_grad_vmap():
  x, off = _inputs()
  ct = np.random.default_rng(3).normal(size=x.shape).astype(np.float32)
  loss = lambda x, o: jnp.sum(ct * axial_sample(x, o, 2))
  g_batched = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, off)
  per_sample = jax.vmap(jax.grad(lambda x, o, c: jnp.sum(c * axial_sample(x, o, 1)),
                                 argnums=(0, 1)))
  g_vmap = jax.jit(per_sample)(x, off, ct)  # vmap over B: axis 1 of the sample is W
  for a, b in zip(g_batched, g_vmap):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
  out_vmap = jax.vmap(lambda x, o: axial_sample(x, o, 0))(x, off)  # H of each sample
  np.testing.assert_allclose(np.asarray(out_vmap), np.asarray(axial_sample(x, off, 1)), atol=0)


def _torch_axial(x, off, axis):
  """The same op through torch grid_sample (bilinear, zero padding), one channel per image."""
  b, h, w, c = x.shape
  xt = x.permute(0, 3, 1, 2).reshape(b * c, 1, h, w)
  o = off.permute(0, 3, 1, 2).reshape(b * c, h, w)
  yy, xx = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype),
                          indexing="ij")
  px, py = (xx + o, yy.expand_as(o)) if axis == 2 else (xx.expand_as(o), yy + o)
  grid = torch.stack([2 * px / (w - 1) - 1, 2 * py / (h - 1) - 1], -1)
  out = torch.nn.functional.grid_sample(xt, grid, mode="bilinear", padding_mode="zeros",
                                        align_corners=True)
  return out.reshape(b, c, h, w).permute(0, 2, 3, 1)


@pytest.mark.parametrize("axis", [1, 2])
def test_matches_torch_grid_sample(axis):
  x, off = _inputs(seed=axis)
  ct = np.random.default_rng(4).normal(size=x.shape)
  xt = torch.tensor(np.float64(x), requires_grad=True)
  ot = torch.tensor(np.float64(off), requires_grad=True)
  yt = _torch_axial(xt, ot, axis)
  (yt * torch.from_numpy(ct)).sum().backward()
  y, vjp = jax.vjp(lambda x, o: axial_sample(x, o, axis), x, off)
  dx, doff = vjp(jnp.asarray(ct, jnp.float32))
  np.testing.assert_allclose(np.asarray(y), yt.detach().numpy(), rtol=0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(dx), xt.grad.numpy(), rtol=0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(doff), ot.grad.numpy(), rtol=0, atol=1e-5)


def test_bad_shapes_raise():
  x, off = _inputs()
  with pytest.raises(ValueError, match="offset shape"):
    axial_sample(x, off[..., :2], 2)
  with pytest.raises(ValueError, match="axis 4 out of range"):
    axial_sample(x, off, 4)
