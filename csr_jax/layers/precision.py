"""Mixed precision: bfloat16 compute over float32 master weights.

The train step and inference cast the float leaves of the params and the input with
`cast_floats(tree, 'bfloat16')` for the forward and cast the output back to float32. Matmuls
and convolutions then run in bfloat16; the layers keep in float32 what needs its range or
precision (norm statistics, softmax and attention logits, erf, sampling positions, kernel
gradient sums) and hand back the compute dtype. In float32 all of this is a no-op.
"""

import functools

import jax
import jax.numpy as jnp


def cast_floats(tree, dtype):
  """`tree` with its floating-point array leaves cast to `dtype` (ints and keys unchanged)."""
  dtype = jnp.dtype(dtype)

  def cast(a):
    if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating) and a.dtype != dtype:
      return a.astype(dtype)
    return a

  return jax.tree.map(cast, tree)


def in_float32(fn):
  """fn(x, ...) evaluated in float32 when x is a narrower float; the result has x's dtype."""

  @functools.wraps(fn)
  def wrapped(x, *args, **kwargs):
    if x.dtype.itemsize >= 4 or not jnp.issubdtype(x.dtype, jnp.floating):
      return fn(x, *args, **kwargs)
    return fn(x.astype(jnp.float32), *args, **kwargs).astype(x.dtype)

  return wrapped


softmax = in_float32(jax.nn.softmax)
