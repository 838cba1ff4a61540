"""Pure, jitted train and eval steps over split NNX state.

Train state is a pure dict {params, opt_state, ema, step, rng} (params/ema as
`nnx.to_pure_dict` gives them), donated to the step and returned with the same replicated
sharding; the batch arrives as uint8 sharded over 'data' and becomes float32 in [0, 1] here.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from csr_jax import evaluate
from csr_jax import sharding

IMAGE_KEYS = ("lr", "hr", "lr_clean")


def to_float(batch: dict) -> dict:
  return {k: v.astype(jnp.float32) / 255.0 if k in IMAGE_KEYS else v for k, v in batch.items()}


def merge(graphdef, rest, params):
  return nnx.merge(graphdef, nnx.State(params), rest)


def init_state(params, tx: optax.GradientTransformation, seed: int) -> dict:
  return {"params": params, "opt_state": tx.init(params),
          "ema": jax.tree.map(jnp.copy, params), "step": jnp.zeros((), jnp.int32),
          "rng": jax.random.key_data(jax.random.key(seed))}


def make_train_step(graphdef, rest, forward: Callable, loss_fn: Callable,
                    tx: optax.GradientTransformation, mesh, *, ema_decay: float = 0.999):
  """(state, uint8 batch) -> (state, metrics). A non-finite loss or gradient leaves the state
  unchanged (metrics report it), so the last good state is what gets checkpointed."""

  def step(state, batch):
    batch = to_float(batch)

    def objective(params):
      return loss_fn(forward(merge(graphdef, rest, params), batch), batch)

    params = state["params"]
    loss, grads = jax.value_and_grad(objective)(params)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    # Warm-up (as timm's ModelEmaV2 with warmup): early averages are not dominated by the init.
    t = state["step"].astype(jnp.float32)
    decay = jnp.minimum(ema_decay, (1.0 + t) / (10.0 + t))
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema"], new_params)
    gnorm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(gnorm)
    new = {"params": new_params, "opt_state": opt_state, "ema": ema,
           "step": state["step"] + 1, "rng": state["rng"]}
    new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
    metrics = {"loss": loss, "grad_norm": gnorm, "param_norm": optax.tree.norm(new_params),
               "finite": ok}
    return new, metrics

  repl = sharding.replicated(mesh)
  return jax.jit(step, in_shardings=(repl, sharding.data_sharding(mesh)),
                 out_shardings=(repl, repl), donate_argnums=0)


def make_apply(graphdef, rest, forward: Callable, *, per_step_scale: int = 0):
  """Jitted (params, lr float NHWC, task_id) -> the model's image output (for evaluation).

  An unfolded model's dict output gives its final x_J, or with `per_step_scale` (its scale)
  every step stacked on channels (`evaluate.stack_unfolded`, for per-step metrics)."""

  @jax.jit
  def apply(params, lr, task_id):
    out = forward(merge(graphdef, rest, params), {"lr": lr, "task_id": task_id})
    if not isinstance(out, dict):
      return out
    return evaluate.stack_unfolded(out, per_step_scale) if per_step_scale else out["x"][-1]

  return apply
