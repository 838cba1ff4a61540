"""Pixel losses and the per-family training objectives."""

import jax.numpy as jnp


def l1(pred, target):
  return jnp.mean(jnp.abs(pred - target))


def charbonnier(pred, target, eps: float = 1e-3):
  """mean sqrt((pred - target)^2 + eps^2): a smooth L1 (eps as in Restormer/PromptCIR)."""
  return jnp.mean(jnp.sqrt(jnp.square(pred - target) + eps * eps))


def mse(pred, target):
  return jnp.mean(jnp.square(pred - target))


PIXEL = {"l1": l1, "charbonnier": charbonnier, "mse": mse}


def pixel_loss(name: str):
  if name not in PIXEL:
    raise KeyError(f"config.loss {name!r} unknown; known: {sorted(PIXEL)}")
  return PIXEL[name]


def unfolded_loss(out: dict, batch: dict, pixel, rhos, gamma: float = 1.0):
  """CISR: sum_j rho_j (pixel(y_j, clean LR) + gamma pixel(x_j, HR)) over the J unfolded steps."""
  ys, xs = out["y"], out["x"]
  if not len(ys) == len(xs) == len(rhos):
    raise ValueError(f"CISR gave {len(ys)} y / {len(xs)} x steps but {len(rhos)} rho weights")
  return sum(r * (pixel(y, batch["lr_clean"]) + gamma * pixel(x, batch["hr"]))
             for r, y, x in zip(rhos, ys, xs))
