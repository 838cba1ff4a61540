"""Window partition/reverse, relative position index, shift mask and WindowAttention against a
torch re-implementation of HAT's (XPixelGroup/HAT hat_arch.py) on random inputs."""

import numpy as np
import pytest
import torch

from csr_jax.torch_twins.common import calculate_mask as torch_mask
from csr_jax.torch_twins.common import calculate_rpi as torch_rpi
from csr_jax.torch_twins.common import window_partition as torch_window_partition
from csr_jax.torch_twins.common import window_reverse as torch_window_reverse
import jax.numpy as jnp
from flax import nnx

from csr_jax.layers.window import (WindowAttention, relative_position_index,
                                   shift_attention_mask, window_partition, window_reverse)


def torch_window_attention(x, rpi, mask, table, qkv_w, qkv_b, proj_w, proj_b, heads, ws):
  """HAT WindowAttention.forward with explicit weights (torch Linear layout)."""
  b_, n, c = x.shape
  qkv = (x @ qkv_w.T + qkv_b).reshape(b_, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
  q, k, v = qkv[0] * (c // heads) ** -0.5, qkv[1], qkv[2]
  attn = q @ k.transpose(-2, -1)
  bias = table[rpi.view(-1)].view(ws * ws, ws * ws, -1).permute(2, 0, 1)
  attn = attn + bias.unsqueeze(0)
  if mask is not None:
    nw = mask.shape[0]
    attn = attn.view(b_ // nw, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
    attn = attn.view(-1, heads, n, n)
  attn = attn.softmax(-1)
  return (attn @ v).transpose(1, 2).reshape(b_, n, c) @ proj_w.T + proj_b


def test_partition_reverse_round_trip_and_torch_order():
  x = np.random.default_rng(0).normal(size=(2, 8, 12, 3)).astype(np.float32)
  win = window_partition(jnp.asarray(x), 4)
  np.testing.assert_array_equal(np.asarray(win),
                                torch_window_partition(torch.from_numpy(x), 4).numpy())
  np.testing.assert_array_equal(np.asarray(window_reverse(win, 4, 8, 12)), x)
  np.testing.assert_array_equal(
      torch_window_reverse(torch.tensor(np.asarray(win)), 4, 8, 12).numpy(), x)


@pytest.mark.parametrize("ws", [4, 16])
def test_relative_position_index_matches_hat(ws):
  np.testing.assert_array_equal(relative_position_index(ws), torch_rpi(ws).numpy())
  assert relative_position_index(ws).dtype == np.int64


def test_shift_mask_matches_hat():
  np.testing.assert_array_equal(shift_attention_mask(16, 24, 8, 4),
                                torch_mask(16, 24, 8, 4).numpy())


@pytest.mark.parametrize("shift", [0, 2])
def test_window_attention_matches_hat(shift):
  """Full (shifted) window attention: roll, partition, attend with bias and mask, reverse."""
  b, h, w, c, heads, ws = 2, 8, 12, 16, 4, 4
  m = WindowAttention(c, ws, heads, rngs=nnx.Rngs(0))
  # A non-trivial bias table (trunc-normal std 0.02 barely moves the softmax).
  m.relative_position_bias_table[...] = m.relative_position_bias_table[...] * 50
  x = np.random.default_rng(1).normal(size=(b, h, w, c)).astype(np.float32)
  rpi = relative_position_index(ws)
  mask = shift_attention_mask(h, w, ws, shift) if shift else None

  xs = jnp.roll(jnp.asarray(x), (-shift, -shift), axis=(1, 2))
  out = m(window_partition(xs, ws).reshape(-1, ws * ws, c), rpi, mask)
  got = np.asarray(jnp.roll(window_reverse(out.reshape(-1, ws, ws, c), ws, h, w),
                            (shift, shift), axis=(1, 2)))

  p = {k: torch.tensor(np.asarray(v)) for k, v in [
      ("table", m.relative_position_bias_table[...]), ("qkv_w", m.qkv.kernel[...].T),
      ("qkv_b", m.qkv.bias[...]), ("proj_w", m.proj.kernel[...].T), ("proj_b", m.proj.bias[...])]}
  with torch.no_grad():
    xt = torch.roll(torch.from_numpy(x), (-shift, -shift), dims=(1, 2))
    tmask = torch_mask(h, w, ws, shift) if shift else None
    o = torch_window_attention(torch_window_partition(xt, ws).view(-1, ws * ws, c), torch_rpi(ws),
                               tmask, heads=heads, ws=ws, **p)
    want = torch.roll(torch_window_reverse(o.view(-1, ws, ws, c), ws, h, w), (shift, shift),
                      dims=(1, 2)).numpy()
  np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max(), rtol=0)
  if shift:  # The mask changes the result: the test would catch a dropped or transposed mask.
    nomask = m(window_partition(xs, ws).reshape(-1, ws * ws, c), rpi, None)
    assert np.abs(np.asarray(nomask) - np.asarray(out)).max() > 1e-2
