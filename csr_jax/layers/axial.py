"""Axial deformable sampling: the shift that UCIP's active token mixer (ATM) applies.

UCIP's `ATMOp` calls torchvision `deform_conv2d` with a 1x1 kernel, one offset group per
channel and one offset component fixed at zero (`atm_w` fills dx, `atm_h` fills dy). That is
a 1-D resampling: output position i of channel c reads x at i + offset[..., i, ..., c] along
one axis, by linear interpolation between the two neighbours, zero outside the array. So each
output costs two gathers, not a dense deformable conv.

`axial_sample` has a custom VJP: the input gradient is a scatter-add of the two neighbour
weights and the offset gradient is the difference of the two neighbours. The scatter writes
each (w0, w1) pair as one 2-wide window with every non-sampled axis as a batching dimension,
several times faster on CPU than the scatter autodiff derives from the gathers. A custom_vjp
function has no forward-mode derivative, so `custom_grad=False` gives the same values under
plain autodiff (for jvp/jacfwd and as the gradient reference in tests).
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

# Positions are clipped to [-2, n + 1] (beyond, both neighbours are outside anyway), so with
# this zero padding every neighbour index is in bounds and no masks are needed.
_PAD_LO, _PAD_HI = 2, 3


def _split(x, offset, axis: int):
  """frac and start index (into the padded axis) of p = iota + offset."""
  n = x.shape[axis]
  pos = lax.broadcasted_iota(offset.dtype, offset.shape, axis) + offset
  pos = jnp.clip(pos, -2.0, n + 1.0)
  lo = jnp.floor(pos)  # zero derivative: d frac / d offset = 1 under autodiff
  return pos - lo, lo.astype(jnp.int32) + _PAD_LO


def _neighbours(x, start, axis: int):
  pad = [(0, 0)] * x.ndim
  pad[axis] = (_PAD_LO, _PAD_HI)
  xp = jnp.pad(x, pad)
  take = functools.partial(jnp.take_along_axis, xp, axis=axis, mode="promise_in_bounds")
  return take(start), take(start + 1)


def _sample(x, offset, axis: int):
  frac, start = _split(x, offset, axis)
  x0, x1 = _neighbours(x, start, axis)
  return (1 - frac) * x0 + frac * x1, (start, frac, x1 - x0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _sample_vjp(x, offset, axis):
  return _sample(x, offset, axis)[0]


def _bwd(axis, res, g):
  start, frac, dpos = res
  n = g.shape[axis]
  last = g.ndim - 1
  to_last = lambda a: jnp.moveaxis(a, axis, last)
  upd = jnp.stack([to_last(g * (1 - frac)), to_last(g * frac)], -1)  # [..., n, 2]
  batch = tuple(range(last))
  dnums = lax.ScatterDimensionNumbers(
      update_window_dims=(g.ndim,), inserted_window_dims=(), scatter_dims_to_operand_dims=(last,),
      operand_batching_dims=batch, scatter_indices_batching_dims=batch)
  shape = upd.shape[:last] + (n + _PAD_LO + _PAD_HI,)
  dx = lax.scatter_add(jnp.zeros(shape, g.dtype), to_last(start)[..., None], upd, dnums,
                       mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)
  dx = jnp.moveaxis(dx[..., _PAD_LO:_PAD_LO + n], last, axis)
  return dx, g * dpos


_sample_vjp.defvjp(lambda x, offset, axis: _sample(x, offset, axis), _bwd)


def axial_sample(x, offset, axis: int, *, custom_grad: bool = True):
  """Samples every element of `x` at its own fractional position shifted along `axis`.

  x, offset: same shape (e.g. NHWC with axis=2 for a horizontal shift). Returns
  out[..., i, ...] = (1 - f) * x[..., floor(p), ...] + f * x[..., floor(p) + 1, ...] with
  p = i + offset[..., i, ...], f = p - floor(p), and x read as zero outside [0, n).
  `custom_grad=False` uses plain autodiff (forward mode works; reverse mode is slower).
  """
  x = jnp.asarray(x)
  offset = jnp.asarray(offset, x.dtype)
  if x.shape != offset.shape:
    raise ValueError(f"axial_sample: offset shape {offset.shape} != input shape {x.shape}")
  if not -x.ndim <= axis < x.ndim:
    raise ValueError(f"axial_sample: axis {axis} out of range for a {x.ndim}-D input")
  axis %= x.ndim
  if custom_grad:
    return _sample_vjp(x, offset, axis)
  return _sample(x, offset, axis)[0]
