"""UCIP (ECCV 2024): x4 compressed-image SR with dynamic prompts.

  python -m csr_jax.main --config configs/ucip.py:middle --workdir runs/ucip \
      --config.data.train_dir=DIR --config.data.eval_dir=DIR
Variants: `middle` (the official train_middle.py setting: Adam 2e-4, betas (0.9, 0.99),
MultiStepLR [100k, 200k] x0.5, L1, LR patch 64), `small` (laptop), `demo` (prepares its own data
from scikit-image photos and trains on CPU in minutes), `prompt` (prompt-only tuning of a
trained model, UCIP Table 3: `--config.init_from=CKPT`). Any variant takes
`,steps=N,batch=N,workers=N` and `,remat=1` (recompute each block in the backward pass:
activation memory of one block, e.g. `middle` at batch 8 on a 24 GB CPU host).
"""

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, variant="middle", remat=False, **common.COMMON_ARGS)
  c = common.base_config()
  c.model.name = "ucip"
  c.model.variant = "middle"
  c.data.scale = 4
  c.data.patch_size = 64
  c.data.batch_size = 16
  c.data.num_workers = 8
  c.total_steps = 300_000
  c.log_every, c.eval_every, c.checkpoint_every = 200, 10_000, 10_000
  c.eval.max_images = 0

  if a.variant == "middle":
    pass
  elif a.variant == "small":
    c.model.variant = "small"
    c.data.patch_size = 48
    c.data.batch_size = 8
    c.data.num_workers = 2
    c.total_steps = 20_000
    c.optim.milestones = (10_000, 15_000)
    c.log_every, c.eval_every, c.checkpoint_every = 50, 1000, 1000
  elif a.variant == "demo":
    c.model.variant = "small"
    # Parameter-free bicubic skip (not in the official layout): a few hundred CPU steps do not
    # teach the official tail to reproduce colours, so the demo learns a correction instead.
    c.model.overrides = {"residual": "bicubic"}
    c.data.demo = True
    c.data.patch_size = 32
    c.data.batch_size = 8
    c.data.num_workers = 1
    c.data.eval_split = "test"
    c.total_steps = 600
    c.optim.lr = 1e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 50
    c.optim.final_lr_ratio = 0.05
    c.ema_decay = 0.99
    c.log_every, c.eval_every, c.checkpoint_every = 50, 300, 300
    c.keep_checkpoints = 2
    c.eval.max_images = 6
    c.eval.at_start = False
    c.report = True
  elif a.variant == "prompt":
    c.optim.trainable = "prompt"  # only prompts.* (bank and basis MLP) train
    c.optim.lr = 1e-4
    c.optim.milestones = (20_000,)
    c.total_steps = 40_000
  else:
    raise KeyError(f"configs/ucip.py: unknown variant {a.variant!r} (middle, small, demo, prompt)")

  if a.remat:  # per-block rematerialisation: middle at batch 8 needs 4.3 GB, not 33 GB
    c.model.overrides = {**c.model.overrides, "remat": True}
  return common.apply_args(c, a)
