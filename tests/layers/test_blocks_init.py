"""Shared blocks (Mlp, ChannelAttention, OverlapPatchEmbed) against torch, and initialisers that
give the same numbers eager, under jit and under eval_shape's callback path."""

import functools

import jax
import numpy as np
import torch
from flax import nnx

from csr_jax.layers import init
from csr_jax.layers.blocks import ChannelAttention, Mlp, OverlapPatchEmbed
from tests.conftest import kodak_crop


def _load_linear(t, m):
  t.weight.copy_(torch.from_numpy(np.asarray(m.kernel[...]).T.copy()))
  t.bias.copy_(torch.from_numpy(np.asarray(m.bias[...])))


def _load_conv(t, m):
  t.weight.copy_(torch.from_numpy(np.transpose(np.asarray(m.kernel[...]), (3, 2, 0, 1)).copy()))
  if t.bias is not None:
    t.bias.copy_(torch.from_numpy(np.asarray(m.bias[...])))


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def test_mlp_matches_torch():
  x = kodak_crop(6, 7)[..., :3].repeat(4, axis=-1)  # 12 channels of real pixels
  m = Mlp(12, 20, 5, rngs=nnx.Rngs(0))
  ref = torch.nn.Sequential(torch.nn.Linear(12, 20), torch.nn.GELU(), torch.nn.Linear(20, 5))
  with torch.no_grad():
    _load_linear(ref[0], m.fc1)
    _load_linear(ref[2], m.fc2)
    want = ref(torch.from_numpy(x)).numpy()
  np.testing.assert_allclose(np.asarray(m(x)), want, rtol=1e-5, atol=1e-6)


def test_channel_attention_matches_torch():
  x = kodak_crop(9, 10).repeat(6, axis=-1)  # 18 channels
  m = ChannelAttention(18, 3, rngs=nnx.Rngs(1))
  ref = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Conv2d(18, 6, 1),
                            torch.nn.ReLU(), torch.nn.Conv2d(6, 18, 1), torch.nn.Sigmoid())
  with torch.no_grad():
    _load_conv(ref[1], m.attention[1])
    _load_conv(ref[3], m.attention[3])
    want = (_nchw(x) * ref(_nchw(x))).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(m(x)), want, rtol=1e-5, atol=1e-6)


def test_overlap_patch_embed_matches_torch():
  x = kodak_crop(11, 13)
  for k, bias in ((5, True), (3, False)):
    m = OverlapPatchEmbed(3, 8, k, bias, rngs=nnx.Rngs(2))
    ref = torch.nn.Conv2d(3, 8, k, 1, k // 2, bias=bias)
    with torch.no_grad():
      _load_conv(ref, m.proj)
      want = ref(_nchw(x)).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(m(x)), want, rtol=1e-5, atol=1e-6)


def _params(fn):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(fn(), nnx.Param)))


def test_init_is_the_same_eager_and_jitted():
  def build():
    keys = init.KeyStream(nnx.Rngs(3))
    tn = functools.partial(init.trunc_normal, std=0.02)
    return nnx.List([Mlp(8, 16, rngs=keys, kernel_init=tn, bias_init=init.zeros),
                     ChannelAttention(16, 4, rngs=keys), OverlapPatchEmbed(3, 8, 5, rngs=keys)])

  def jitted():
    pure = jax.jit(lambda: nnx.to_pure_dict(nnx.state(build(), nnx.Param)))()
    model = nnx.eval_shape(build)
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)
    return model

  eager, traced = _params(build), _params(jitted)
  flat_e, flat_t = jax.tree.leaves(eager), jax.tree.leaves(traced)
  assert len(flat_e) == len(flat_t) == 10
  for a, b in zip(flat_e, flat_t):
    np.testing.assert_array_equal(a, b)
  kernel = eager[0]["fc1"]["kernel"]
  assert 0.015 < kernel.std() < 0.025 and np.abs(kernel).max() <= 2.0
  assert not eager[0]["fc1"]["bias"].any()
