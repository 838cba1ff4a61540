"""Category self-attention: equals dense masked attention, gradients, memory, torch twin."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from csr_jax.layers.category_attention import category_attention, category_attention_dense
from tests.conftest import kodak_crop

HEADS, DH = 2, 8


def _inputs(h=20, w=23, num_categories=7, seed=0):
  """q, k, v from a projection of real pixels (3x3 neighbourhoods), categories by argmax."""
  img = jnp.asarray(kodak_crop(h + 2, w + 2, name="kodim05", top=60, left=300))
  patches = jnp.concatenate([img[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], -1)
  tokens = patches.reshape(1, h * w, 27)
  k1, k2 = jax.random.split(jax.random.key(seed))
  proj = jax.random.normal(k1, (27, 3, HEADS, DH)) * 0.5
  q, k, v = jnp.einsum("bnc,cthd->tbnhd", tokens - 0.4, proj)
  centred = (tokens - tokens.mean(1)) / tokens.std(1)
  category = jnp.argmax(centred @ jax.random.normal(k2, (27, num_categories)), -1)
  return q, k, v, category


@pytest.mark.parametrize("group_size", [16, 37, 1000])  # pads, pads oddly, one group
def test_equals_dense_masked_reference(group_size):
  q, k, v, cat = _inputs()
  assert q.shape[1] % 16 and len(np.unique(cat)) > 3  # 460 tokens: the last group is padded
  out = jax.jit(category_attention, static_argnums=4)(q, k, v, cat, group_size, 0.7)
  ref = category_attention_dense(q, k, v, cat, group_size, 0.7)
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
  assert float(jnp.abs(out).max()) > 0.1


def test_tokens_grouped_by_category():
  """A token only sees its sub-group: changing a token of another category leaves it alone."""
  q, k, v, cat = _inputs()
  order = np.argsort(np.asarray(cat[0]), kind="stable")
  j = int(order[-1])  # in the last sub-group of 16
  v2 = v.at[0, j].add(1.0)
  a = category_attention(q, k, v, cat, 16, 0.7)
  b = category_attention(q, k, v2, cat, 16, 0.7)
  changed = np.nonzero(np.abs(np.asarray(a - b)).max(axis=(2, 3))[0] > 0)[0]
  assert set(changed) == set(order[(len(order) - 1) // 16 * 16:].tolist())


def test_gradients_match_dense_and_finite_differences():
  q, k, v, cat = _inputs(h=9, w=10)

  def loss(fn, q, k, v):
    return jnp.sum(jnp.sin(fn(q, k, v, cat, 16, 0.7)))

  g = jax.grad(lambda *a: loss(category_attention, *a), argnums=(0, 1, 2))(q, k, v)
  g_ref = jax.grad(lambda *a: loss(category_attention_dense, *a), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
  check_grads(lambda q, k, v: category_attention(q, k, v, cat, 16, 0.7), (q, k, v), order=1,
              modes=("rev",), atol=5e-2, rtol=5e-2, eps=1e-2)


def test_memory_is_linear_in_tokens():
  """No intermediate (forward or backward) holds N^2 / 8 elements for N = 4096 tokens."""
  n, gs = 4096, 128
  spec = jax.ShapeDtypeStruct((1, n, HEADS, DH), jnp.float32)
  cat = jax.ShapeDtypeStruct((1, n), jnp.int32)
  fn = lambda q, k, v, c: jnp.sum(category_attention(q, k, v, c, gs, 1.0))
  jaxpr = jax.make_jaxpr(jax.grad(fn, argnums=(0, 1, 2)))(spec, spec, spec, cat)

  def sizes(jp):
    for eqn in jp.eqns:
      for var in eqn.outvars:
        yield int(np.prod(var.aval.shape))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        yield from sizes(sub)

  biggest = max(sizes(jaxpr.jaxpr))
  assert biggest <= n * gs * HEADS, biggest  # the per-sub-group logits, O(N * gs)
  assert biggest < n * n // 8


def test_matches_torch_twin():
  torch = pytest.importorskip("torch")
  from csr_jax.torch_twins.promptsr import category_attention as torch_ca
  q, k, v, cat = _inputs()
  out = category_attention(q, k, v, cat, 37, 0.7)
  t = [torch.from_numpy(np.array(a)) for a in (q, k, v)]
  ref = torch_ca(*t, torch.from_numpy(np.array(cat)), 37, 0.7).numpy()
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
