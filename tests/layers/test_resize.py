"""Nearest / bilinear / bicubic resize and pixel (un)shuffle against torch on random inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import jax.numpy as jnp

from csr_jax.layers.resize import (pixel_shuffle, pixel_unshuffle, resize_bicubic,
                                   resize_bilinear, upsample_nearest)


def _x(shape, seed=0):
  return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def _torch(fn, x):
  """Runs a torch NCHW op on an NHWC numpy array, returns NHWC numpy."""
  with torch.no_grad():
    return fn(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("scale", [2, 3])
def test_upsample_nearest_matches_torch(scale):
  x = _x((2, 5, 7, 3))
  want = _torch(lambda t: F.interpolate(t, scale_factor=scale, mode="nearest"), x)
  np.testing.assert_array_equal(np.asarray(upsample_nearest(jnp.asarray(x), scale)), want)


@pytest.mark.parametrize("r", [2, 3])
def test_pixel_shuffle_matches_torch_channel_order(r):
  x = _x((2, 4, 5, 2 * r * r), seed=1)
  want = _torch(torch.nn.PixelShuffle(r), x)
  got = np.asarray(pixel_shuffle(jnp.asarray(x), r))
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(np.asarray(pixel_unshuffle(jnp.asarray(got), r)), x)


@pytest.mark.parametrize("r", [2, 4])
def test_pixel_unshuffle_matches_torch(r):
  x = _x((1, 4 * r, 3 * r, 3), seed=2)
  want = _torch(torch.nn.PixelUnshuffle(r), x)
  np.testing.assert_array_equal(np.asarray(pixel_unshuffle(jnp.asarray(x), r)), want)


SIZES = [(28, 32), (14, 21), (5, 3), (7, 16)]  # x4, up, down (no antialias), mixed


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_resize_bilinear_matches_torch(size, align_corners):
  x = _x((2, 7, 8, 3), seed=3)
  want = _torch(lambda t: F.interpolate(t, size=size, mode="bilinear",
                                        align_corners=align_corners), x)
  got = np.asarray(resize_bilinear(jnp.asarray(x), size, align_corners))
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_resize_bicubic_matches_torch(size, align_corners):
  x = _x((2, 7, 8, 3), seed=4)
  want = _torch(lambda t: F.interpolate(t, size=size, mode="bicubic",
                                        align_corners=align_corners), x)
  got = np.asarray(resize_bicubic(jnp.asarray(x), size, align_corners))
  np.testing.assert_allclose(got, want, atol=5e-6, rtol=0)
