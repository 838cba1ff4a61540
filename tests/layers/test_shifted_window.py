"""shifted_window_attention (PromptSR's WSA core) against HAT's window attention (through the
tested WindowAttention module) and the PyTorch twin; log_relative_coords against the twin."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from csr_jax.layers.window import (WindowAttention, log_relative_coords, relative_position_index,
                                   shift_attention_mask, shifted_window_attention,
                                   window_partition, window_reverse)
from csr_jax.torch_twins import promptsr as twin
from tests.conftest import kodak_crop


@pytest.mark.parametrize("shift", [0, 4])
def test_equals_window_attention_module_and_twin(shift):
  b, h, w, c, heads, ws = 1, 16, 24, 12, 3, 8
  x = jnp.asarray(kodak_crop(h, w, name="kodim08", top=50, left=80).repeat(4, -1)) - 0.4
  m = WindowAttention(c, ws, heads, rngs=nnx.Rngs(0))
  m.relative_position_bias_table[...] = m.relative_position_bias_table[...] * 50
  m.qkv.kernel[...] = m.qkv.kernel[...] * 8
  rpi = relative_position_index(ws)
  bias = m.relative_position_bias_table[...][rpi.reshape(-1)].reshape(ws * ws, ws * ws, heads)
  bias = bias.transpose(2, 0, 1)

  qkv = m.qkv(x).reshape(b, h, w, 3, heads, c // heads)
  got = jax.jit(shifted_window_attention, static_argnums=(1, 2))(qkv, ws, shift, bias)

  xs = jnp.roll(x, (-shift, -shift), axis=(1, 2))
  ref = m(window_partition(xs, ws).reshape(-1, ws * ws, c), rpi,
          shift_attention_mask(h, w, ws, shift) if shift else None)
  ref = jnp.roll(window_reverse(ref.reshape(-1, ws, ws, c), ws, h, w), (shift, shift), (1, 2))
  np.testing.assert_allclose(m.proj(got), ref, atol=2e-5 * float(jnp.abs(ref).max()), rtol=0)

  with torch.no_grad():
    want = twin.window_attention(torch.from_numpy(np.array(qkv)), ws, shift,
                                 torch.from_numpy(np.array(bias))).numpy()
  np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max(), rtol=0)
  assert float(jnp.std(got)) > 0.05


def test_bfloat16_logits_in_float32():
  qkv = jnp.asarray(np.random.default_rng(0).normal(size=(1, 8, 8, 3, 2, 4)) * 3, jnp.bfloat16)
  bias = jnp.zeros((2, 16, 16), jnp.bfloat16)
  out = shifted_window_attention(qkv, 4, 2, bias)
  ref = shifted_window_attention(qkv.astype(jnp.float32), 4, 2, bias)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), ref,
                             atol=0.05 * float(jnp.abs(ref).max()))


@pytest.mark.parametrize("ws", [8, 16])
def test_log_relative_coords_match_twin(ws):
  got = log_relative_coords(ws)
  np.testing.assert_allclose(got, twin.log_relative_coords(ws).numpy(), atol=1e-7, rtol=0)
  assert got.shape == ((2 * ws - 1) ** 2, 2)
  np.testing.assert_allclose(np.abs(got).max(), np.log2(9) / 3, rtol=1e-6)  # offsets of +-8
  centre = relative_position_index(ws)[0, 0]  # offset (0, 0)
  np.testing.assert_array_equal(got[centre], 0.0)
