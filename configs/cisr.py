"""CISR: unfolded ARM/REM compressed-image SR (DESIGN.md section 1.4).

  python -m data_prep.prepare --hr_dir DIV2K_HR --out data/cisr_x2 --scale 2 --grid cisr
  python -m csr_jax.main --config configs/cisr.py:full,scale=2 --workdir runs/cisr_x2 \
      --config.data.train_dir=data/cisr_x2 --config.data.eval_dir=DIR
Variants: `full` (5 x 12 RCAB per module, J = 3) and `tiny` (2 x 12, J = 5) in the paper's
setting: JPEG 10..50 and WebP 5..40 mixed (the prep step's `cisr` grid), batch 32, 48x48 LR
patches, Adam 1e-4, loss sum_j rho_j (L1(y_j, clean LR) + gamma L1(x_j, HR)), stop when the
validation PSNR falls (`eval.stop_when_worse`); `small` (CPU, 16 channels, J = 2); `demo`
shrinks any of them to a CPU run on data the job prepares itself.
CISR is blind: no task id goes in; its blocking detector finds the block grid in the input.
"""

from csr_jax import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="full", scale=2, **config_lib.COMMON_ARGS)
  if a.scale not in (2, 3, 4):
    raise KeyError(f"configs/cisr.py: scale must be 2, 3 or 4, got {a.scale}")
  c = config_lib.base_config()
  c.model.name = "cisr"
  c.loss = "l1"
  c.loss_weights = dict(rhos=(0.3, 0.6, 1.0), gamma=1.0)
  c.data.scale = a.scale
  c.data.patch_size = 48
  c.data.batch_size = 32
  c.data.num_workers = 8
  c.data.codecs = {"jpeg": (10, 20, 30, 40, 50), "webp": (5, 10, 20, 30, 40)}
  c.optim.name = "adam"
  c.optim.lr = 1e-4
  c.optim.b1, c.optim.b2 = 0.9, 0.999
  c.optim.schedule = "constant"
  c.optim.milestones = ()
  c.total_steps = 500_000
  c.log_every, c.eval_every, c.checkpoint_every = 200, 5_000, 5_000
  c.eval.stop_when_worse = True  # the paper stops training once validation PSNR falls

  if a.variant == "full":
    c.model.variant = f"full_x{a.scale}"
  elif a.variant == "tiny":
    c.model.variant = f"tiny_x{a.scale}"
    c.loss_weights.rhos = (0.2, 0.4, 0.6, 0.8, 1.0)
  elif a.variant == "small":
    c.model.variant = f"small_x{a.scale}"
    c.loss_weights.rhos = (0.5, 1.0)
    c.data.patch_size = 24
    c.data.batch_size = 4
    c.data.num_workers = 1
    c.total_steps = 2_000
    c.optim.lr = 5e-4
    c.log_every, c.eval_every, c.checkpoint_every = 20, 100, 100
    c.keep_checkpoints = 2
    c.eval.max_images = 4
  else:
    raise KeyError(f"configs/cisr.py: unknown variant {a.variant!r} (full, tiny, small)")

  if a.demo:
    c.loss_weights.rhos = (0.5, 1.0)
    config_lib.shrink(c, variant=f"small_x{a.scale}", steps=200, patch=24, batch=4, lr=5e-4)

  return config_lib.apply_args(c, a)
