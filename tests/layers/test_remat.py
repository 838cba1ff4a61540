"""sequenced_checkpoint: same values and gradients as the plain function, and (the reason it
exists) XLA:CPU's compiled train step keeps one block's intermediates, not all of them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csr_jax.layers.act import gelu
from csr_jax.layers.remat import sequenced_checkpoint

DEPTH, ROWS, WIDTH = 8, 512, 256


def block(w, x):
  """A residual MLP block whose hidden activations (4x wider) dominate the saved residuals."""
  return x + jnp.tanh(gelu(x @ w[0]) @ w[1])


def chain(wrap):
  def loss(ws, x):
    for w in ws:
      x = wrap(block)(w, x)
    return jnp.mean(x * x)
  return loss


def params(seed=0):
  rng = np.random.default_rng(seed)
  ws = [(rng.normal(0, 0.05, (WIDTH, 4 * WIDTH)).astype(np.float32),
         rng.normal(0, 0.05, (4 * WIDTH, WIDTH)).astype(np.float32)) for _ in range(DEPTH)]
  return ws, rng.normal(0, 1, (ROWS, WIDTH)).astype(np.float32)


def test_values_and_gradients_equal_the_plain_function():
  ws, x = params()
  plain = jax.jit(jax.value_and_grad(chain(lambda f: f), argnums=(0, 1)))
  remat = jax.jit(jax.value_and_grad(chain(sequenced_checkpoint), argnums=(0, 1)))
  (v0, g0), (v1, g1) = plain(ws, x), remat(ws, x)
  np.testing.assert_allclose(float(v1), float(v0), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7)


def test_outputs_may_be_pytrees_with_none():
  """UCIP blocks return (x, offset) and take offset=None."""
  f = lambda x, o: (2 * x, o)
  g = jax.grad(lambda x: jnp.sum(sequenced_checkpoint(f)(x, None)[0]))(jnp.ones(3))
  np.testing.assert_array_equal(np.asarray(g), 2.0)


def temp_bytes(wrap):
  ws, x = params()
  step = jax.jit(jax.grad(chain(wrap)))
  return step.lower(ws, x).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="measures XLA:CPU's schedule")
def test_compiled_step_keeps_one_blocks_intermediates():
  hidden = ROWS * 4 * WIDTH * 4  # bytes of one [ROWS, 4 * WIDTH] float32 activation
  plain, ckpt, seq = (temp_bytes(w) for w in (lambda f: f, jax.checkpoint, sequenced_checkpoint))
  assert plain > 2 * DEPTH * hidden  # every block's hidden activations are saved
  assert ckpt > DEPTH * hidden  # jax.checkpoint's recomputation is hoisted on CPU
  assert seq < 6 * hidden, (plain, ckpt, seq)
