"""bfloat16 compute (config.model.dtype): with the float params and the input cast by
`precision.cast_floats`, every matmul and convolution of UCIP and PromptCIR runs on bfloat16
operands (no float32 constant promotes one back), and the output stays close to float32's."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from csr_jax import models
from csr_jax.layers.precision import cast_floats
from tests.conftest import kodak_crop

CASES = {"ucip": (lambda m, x: m(x, jnp.array([1])), kodak_crop(16, 24, "kodim05", 200, 300)),
         "promptcir": (lambda m, x: m(x), kodak_crop(32, 48, "kodim23", 200, 300))}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bfloat16_forward(name):
  apply, x = CASES[name]
  graphdef, params = nnx.split(models.create(name, "small", rngs=nnx.Rngs(0)))

  def run(dtype):
    fn = lambda p, x: apply(nnx.merge(graphdef, cast_floats(p, dtype)), cast_floats(x, dtype))
    return jax.jit(fn), fn

  jitted, fn = run(jnp.bfloat16)
  hlo = jitted.lower(params, x).as_text()
  ops = re.findall(r"stablehlo\.(dot_general|convolution).*?: \((tensor<[^>]*>), (tensor<[^>]*>)\)",
                   hlo)
  assert len(ops) > 20
  assert all(a.endswith("bf16>") and b.endswith("bf16>") for _, a, b in ops), [
      op for op in ops if not op[1].endswith("bf16>") or not op[2].endswith("bf16>")][:3]
  got = np.asarray(jitted(params, x).astype(jnp.float32))
  want = np.asarray(jax.jit(run(jnp.float32)[1])(params, x))
  # bf16 keeps 8 bits of mantissa: measured 1.0e-2 (UCIP) / 0.6e-2 (PromptCIR) of max|out|.
  assert np.abs(got - want).max() <= 3e-2 * np.abs(want).max()
  assert np.abs(got - want).max() > 0  # really computed in bfloat16
