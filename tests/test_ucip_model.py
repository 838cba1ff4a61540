"""UCIP model: official layout (parameter count, names, init) and forward behaviour on Kodak."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp
from flax import nnx

from csr_jax import models
from csr_jax.conversion import path_str
from tests.conftest import kodak_crop


def _shapes(model):
  return {path_str(p): tuple(v.get_value().shape)
          for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_middle_matches_official_layout():
  abstract = models.abstract("ucip", "middle")
  assert models.count_params(abstract) == 11_424_291
  shapes = _shapes(abstract)
  assert len(shapes) == 1066  # = len(UCIP_Middle().state_dict())
  expected = {
      "patch_embed.proj.kernel": (5, 5, 3, 128),
      "blocks.5.3.atm.atm_h.kernel": (1, 1, 128, 128),
      "blocks.0.0.atm.atm_local.kernel": (5, 5, 1, 128),
      "blocks.0.0.atm.fusion.fc2.kernel": (32, 384),
      "blocks.0.4.offset_layer.0.scale": (192,),
      "blocks.0.4.offset_layer.1.kernel": (192, 128),
      "blocks.2.1.spade.mlp_shared.0.kernel": (3, 3, 64, 32),
      "blocks.2.1.spade.mlp_gamma.kernel": (3, 3, 32, 128),
      "prompts.3.basis_mlp.fc1.kernel": (128, 8),
      "prompts.3.prompt": (6, 8, 1, 1, 64),
      "pos_blocks.5.proj.kernel": (3, 3, 1, 128),
      "conv_before_up.0.kernel": (3, 3, 128, 64),
      "conv_last.kernel": (3, 3, 64, 3),
  }
  assert {k: shapes.get(k) for k in expected} == expected
  owners = sorted({k.split(".")[2] for k in shapes if k.startswith("blocks.0.") and
                   ".offset_layer." in k})
  assert owners == ["0", "2", "4"]  # j % 2 == 0 and j != depth - 1


@pytest.fixture(scope="module")
def small_run():
  m = models.create("ucip", "small", rngs=nnx.Rngs(0))
  lr = np.concatenate([kodak_crop(48, 48, top=100, left=200),
                       kodak_crop(48, 48, "kodim05", top=200, left=300)])
  fwd = nnx.jit(lambda m, x, t: m(x, t))
  return m, lr, fwd


def test_init_follows_official_init_weights(small_run):
  m = small_run[0]
  prompt = np.asarray(m.prompts[0].prompt[...])
  assert prompt.min() >= 0 and prompt.max() < 1 and prompt.std() > 0.2  # torch.rand
  fc1 = np.asarray(m.blocks[0][0].mlp.fc1.kernel[...])
  assert abs(fc1.std() - 0.02) < 0.002 and not np.any(m.blocks[0][0].mlp.fc1.bias[...])
  k = np.asarray(m.conv_up1.kernel[...])  # N(0, sqrt(2 / (3*3*32)))
  assert abs(k.std() - np.sqrt(2 / 288)) < 0.01 and not np.any(m.conv_up1.bias[...])


def test_small_forward_on_kodak(small_run):
  m, lr, fwd = small_run
  out = np.asarray(fwd(m, lr, jnp.array([0, 3])))
  assert out.shape == (2, 192, 192, 3) and np.all(np.isfinite(out))
  assert out[0].std() > 1e-3 and np.abs(out[0] - out[1]).max() > 1e-3


def test_task_id_changes_only_its_sample(small_run):
  m, lr, fwd = small_run
  a = np.asarray(fwd(m, lr, jnp.array([0, 3])))
  b = np.asarray(fwd(m, lr, jnp.array([0, 5])))
  np.testing.assert_array_equal(a[0], b[0])
  assert np.abs(a[1] - b[1]).max() > 1e-3
  # A scalar id broadcasts over the batch.
  np.testing.assert_array_equal(np.asarray(m._task_ids(3, 2)), [3, 3])


def test_task_id_errors(small_run):
  m, lr, _ = small_run
  with pytest.raises(ValueError, match="task_id is required"):
    m(lr, None)
  with pytest.raises(ValueError, match="outside 0..5"):
    m(lr, np.array([0, 6]))
  with pytest.raises(ValueError, match="NHWC"):
    m(lr[..., :2], np.array([0, 1]))


def test_blind_mode_runs_without_task_id():
  m = models.create("ucip", "small", rngs=nnx.Rngs(1), blind=True)
  assert m.prompts[0].task_head.kernel.shape == (32, 6)
  lr = kodak_crop(24, 24, top=300, left=100)
  out = np.asarray(nnx.jit(lambda m, x: m(x, None))(m, lr))
  assert out.shape == (1, 96, 96, 3) and np.all(np.isfinite(out)) and out.std() > 1e-3
  with pytest.raises(TypeError, match="unknown option"):
    models.create("ucip", "tiny", rngs=nnx.Rngs(1), blnd=True)


def test_gradients_are_finite_and_reach_offsets():
  m = models.create("ucip", "small", rngs=nnx.Rngs(2))
  lr = kodak_crop(16, 16, top=50, left=50)
  hr = kodak_crop(64, 64, top=50, left=50)
  graphdef, params = nnx.split(m, nnx.Param)

  @jax.jit
  def grads(params):
    loss = lambda p: jnp.mean(jnp.abs(nnx.merge(graphdef, p)(lr, jnp.array([2])) - hr))
    return jax.grad(loss)(params)

  g = grads(params)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(g))
  off_grad = np.asarray(g["blocks"][0][0]["offset_layer"][1]["kernel"][...])
  assert np.abs(off_grad).max() > 0
  bank_grad = np.asarray(g["prompts"][0]["prompt"][...])
  assert np.abs(bank_grad[2]).max() > 0 and not np.any(np.delete(bank_grad, 2, axis=0))


def test_remat_gives_the_same_gradients():
  """Per-block rematerialisation (for large batches) changes memory, not the maths."""
  x = jnp.asarray(kodak_crop(16, 24, "kodim05"))
  tid = jnp.array([2])
  grads = []
  for remat in (False, True):
    graphdef, params = nnx.split(models.create("ucip", "tiny", rngs=nnx.Rngs(4), remat=remat))
    loss = lambda p: jnp.mean(jnp.abs(nnx.merge(graphdef, p)(x, tid) - 0.5))
    grads.append(jax.tree.leaves(jax.jit(jax.grad(loss))(params)))
  assert len(grads[0]) == len(grads[1]) > 0
  # float32 sums in another fusion order differ by round-off, measured against the largest
  # gradient: the biases right before SPADE's instance norm have a true gradient of zero, so
  # theirs is all round-off.
  scale = max(np.abs(np.asarray(a)).max() for a in grads[0])
  for a, b in zip(*grads):
    assert np.abs(np.asarray(a) - np.asarray(b)).max() <= 1e-5 * scale
