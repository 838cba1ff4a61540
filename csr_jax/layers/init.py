"""Initialisers with PyTorch's distributions: the same numbers eager, traced or jitted.

An initialiser is any `fn(key, shape) -> float32 array`; layers take them as `kernel_init` /
`bias_init` (e.g. `functools.partial(init.trunc_normal, std=0.02)`). Values are drawn on the
host from a NumPy generator seeded by the JAX key: eager construction then compiles nothing
(`jax.random` compiles one program per shape, tens of seconds per model on CPU), and under
tracing (`nnx.eval_shape`, `jax.jit` of a constructor) the same host function runs through
`jax.pure_callback`, so one seed gives one set of weights whichever way a model is built.

`KeyStream` hands out keys with nnx.Rngs' interface (`.params()`) but no per-draw Variable
write, which under tracing costs time proportional to the trace so far (flax 0.12.8 inspects
the tracer's sharding) and made building UCIP `middle` abstractly quadratic (~30 s of CPU).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


class KeyStream:
  """Draw i is fold_in(key, i); built from a key or from an nnx.Rngs (one draw of it)."""

  def __init__(self, rngs_or_key):
    key = rngs_or_key.params() if hasattr(rngs_or_key, "params") else rngs_or_key
    self.key, self.count = key, 0

  def params(self):
    self.count += 1
    return jax.random.fold_in(self.key, self.count)


def _key_data(key):
  return jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key


def _host(kind: str, shape: tuple, a: float, b: float, data) -> np.ndarray:
  rng = np.random.default_rng(np.asarray(data, np.uint32).ravel().tolist())
  if kind == "uniform":
    v = rng.uniform(a, b, shape)
  else:
    v = a * rng.standard_normal(shape)
    if kind == "trunc_normal":  # timm trunc_normal_(std, a=-2, b=2): absolute cut-offs
      v = np.clip(v, -2.0, 2.0)
  return v.astype(np.float32)


def _draw(kind: str, key, shape, a: float, b: float = 0.0):
  shape = tuple(int(s) for s in shape)
  fn = functools.partial(_host, kind, shape, float(a), float(b))
  data = _key_data(key)
  if isinstance(data, jax.core.Tracer):
    return jax.pure_callback(fn, jax.ShapeDtypeStruct(shape, jnp.float32), data)
  return jnp.asarray(fn(np.asarray(data)))


def uniform(key, shape, low: float = 0.0, high: float = 1.0):
  return _draw("uniform", key, shape, low, high)


def normal(key, shape, std: float = 1.0):
  return _draw("normal", key, shape, std)


def trunc_normal(key, shape, std: float = 0.02):
  """timm's trunc_normal_(std) with cut-offs at +-2 (absolute), as HAT/Restormer code uses."""
  return _draw("trunc_normal", key, shape, std)


def torch_uniform(key, shape, fan_in: int):
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch's default for Linear/Conv weight and bias
  (kaiming_uniform with a=sqrt(5) reduces to this bound)."""
  bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
  return uniform(key, shape, -bound, bound)


def constant(value: float):
  """An initialiser filling `value` (made on the host: jnp.full would compile per shape)."""
  return lambda key, shape: jnp.asarray(np.full(tuple(shape), value, np.float32))


zeros = constant(0.0)
ones = constant(1.0)
