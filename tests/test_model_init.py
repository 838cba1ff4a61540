"""Same seed, same weights: UCIP and PromptCIR built eagerly and inside `jax.jit` (the way the
train step initialises) hold identical parameters, drawn from the official distributions."""

import jax
import numpy as np
import pytest
from flax import nnx

from csr_jax import models


def _params(name, variant):
  return nnx.to_pure_dict(nnx.state(models.create(name, variant, rngs=nnx.Rngs(7)), nnx.Param))


@pytest.mark.parametrize("name", ["ucip", "promptcir"])
def test_init_is_the_same_eager_and_jitted(name):
  eager = jax.tree.leaves_with_path(_params(name, "small"))
  jitted = jax.tree.leaves(jax.jit(lambda: _params(name, "small"))())
  assert len(eager) == len(jitted) > 100
  for (path, a), b in zip(eager, jitted):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))
  # Different draws for different tensors (the key stream advances).
  flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in eager}
  kernels = [v for k, v in flat.items() if k.endswith("['kernel']") and v.size > 64]
  assert len({v.ravel()[:4].tobytes() for v in kernels}) == len(kernels)


def test_promptcir_linears_follow_official_init_weights():
  p = _params("promptcir", "small")
  attn = p["encoder_level1"]["residual_group"]["blocks"][0]["attn"]
  for lin in (attn["qkv"], attn["proj"], p["prompt1"]["basis_mlp"]["fc1"]):
    assert abs(np.asarray(lin["kernel"]).std() - 0.02) < 0.003 and not np.asarray(lin["bias"]).any()
  bank = np.asarray(p["prompt1"]["prompt"])  # torch.rand
  assert bank.min() >= 0 and bank.max() < 1 and bank.std() > 0.2
