"""The pure, jitted train step over split NNX state.

Train state is a pure dict {params, opt_state, ema, step, rng} (params/ema as
`nnx.to_pure_dict` gives them), donated to the step and returned with the same replicated
sharding; the batch arrives as uint8 sharded over 'data' and becomes float32 in [0, 1] here.
What the model reads and how it is scored comes from its family's spec.
"""

import jax
import jax.numpy as jnp
import optax

from csr_jax import losses
from csr_jax import sharding
from csr_jax import weights
from csr_jax.layers.precision import cast_floats

IMAGE_KEYS = ("lr", "hr", "lr_clean")


def to_float(batch: dict) -> dict:
  return {k: v.astype(jnp.float32) / 255.0 if k in IMAGE_KEYS else v for k, v in batch.items()}


def init_state(params, tx: optax.GradientTransformation, seed: int) -> dict:
  return {"params": params, "opt_state": tx.init(params),
          "ema": jax.tree.map(jnp.copy, params), "step": jnp.zeros((), jnp.int32),
          "rng": jax.random.key_data(jax.random.key(seed))}


def make_loss(spec, config):
  """fn(output, batch) -> scalar: the family's loss, else `config.loss` on its predicted image
  against the HR."""
  if spec.loss is not None:
    return spec.loss(config)
  pixel = losses.pixel_loss(config.loss)
  return lambda out, batch: pixel(spec.predict(out), batch["hr"])


def make_train_step(spec, graphdef, rest, loss_fn, tx: optax.GradientTransformation, mesh, *,
                    ema_decay: float = 0.999, dtype: str = "float32"):
  """(state, uint8 batch) -> (state, metrics). A non-finite loss or gradient leaves the state
  unchanged (metrics report it), so the last good state is what gets checkpointed. With
  `dtype` 'bfloat16' the forward and backward run on bf16 copies of the params and inputs;
  params, gradients and optimizer state stay float32."""

  def step(state, batch):
    batch = to_float(batch)

    def objective(params):
      p, x = params, batch["lr"]
      if dtype != "float32":
        p, x = cast_floats(p, dtype), x.astype(dtype)
      out = spec.apply(weights.merge(graphdef, rest, p), x, batch.get("task_id"))
      return loss_fn(jax.tree.map(lambda a: a.astype(jnp.float32), out), batch)

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
