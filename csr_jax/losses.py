"""Pixel losses; a family with another objective defines it in its spec (`FamilySpec.loss`)."""

import jax.numpy as jnp


def l1(pred, target):
  return jnp.mean(jnp.abs(pred - target))


def charbonnier(pred, target, eps: float = 1e-3):
  """mean sqrt((pred - target)^2 + eps^2): a smooth L1 (eps as in Restormer)."""
  return jnp.mean(jnp.sqrt(jnp.square(pred - target) + eps * eps))


def mse(pred, target):
  return jnp.mean(jnp.square(pred - target))


PIXEL = {"l1": l1, "charbonnier": charbonnier, "mse": mse}


def pixel_loss(name: str):
  if name not in PIXEL:
    raise KeyError(f"config.loss {name!r} unknown; known: {sorted(PIXEL)}")
  return PIXEL[name]
