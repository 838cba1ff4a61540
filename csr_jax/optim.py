"""optax optimizer and learning-rate schedule from `config.optim`."""

import re

import jax
import optax

from csr_jax.tree import path_str


def schedule(cfg, total_steps: int) -> optax.Schedule:
  """'constant', 'multistep' (torch MultiStepLR: x gamma at each milestone) or 'cosine'."""
  lr, warmup = cfg.lr, cfg.get("warmup_steps", 0)
  if cfg.schedule == "constant":
    main = optax.constant_schedule(lr)
  elif cfg.schedule == "multistep":
    main = optax.piecewise_constant_schedule(
        lr, {int(m) - warmup: cfg.gamma for m in cfg.milestones if int(m) > warmup})
  elif cfg.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1),
                                       alpha=cfg.get("final_lr_ratio", 0.0))
  else:
    raise ValueError(f"config.optim.schedule {cfg.schedule!r}: use constant, multistep or cosine")
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def trainable_mask(params, pattern: str):
  """True for params whose dotted path ('blocks.0.kernel') matches regex `pattern` ('' = all train)."""
  rx = re.compile(pattern) if pattern else None
  return jax.tree_util.tree_map_with_path(
      lambda p, _: rx is None or bool(rx.search(path_str(p))), params)


def make(cfg, params, total_steps: int) -> optax.GradientTransformation:
  """Adam/AdamW with optional global-norm clipping; frozen params get zero updates.

  `cfg.trainable` (regex on param paths, e.g. 'prompt' to tune only a model's prompts)
  selects what trains; the rest is masked with `set_to_zero`, so it keeps no moments either.
  """
  sched = schedule(cfg, total_steps)
  if cfg.name == "adam":
    opt = optax.adam(sched, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  elif cfg.name == "adamw":
    opt = optax.adamw(sched, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
  else:
    raise ValueError(f"config.optim.name {cfg.name!r}: use adam or adamw")
  if cfg.get("clip_norm", 0.0) > 0:
    opt = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
  pattern = cfg.get("trainable", "")
  if not pattern:
    return opt
  mask = trainable_mask(params, pattern)
  if not any(jax.tree.leaves(mask)):
    raise ValueError(f"config.optim.trainable {pattern!r} matches no parameter")
  labels = jax.tree.map(lambda m: "train" if m else "freeze", mask)
  return optax.multi_transform({"train": opt, "freeze": optax.set_to_zero()}, labels)
