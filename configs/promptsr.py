"""PromptSR (2025): lightweight bicubic SR x2/x3/x4 with cascade prompting blocks.

  python -m csr_jax.main --config configs/promptsr.py:x2 --workdir runs/psr_x2 \
      --config.data.train_dir=DIV2K_x2 --config.data.eval_dir=Set5_x2
  python -m csr_jax.main --config configs/promptsr.py:x4 --workdir runs/psr_x4 \
      --config.data.train_dir=DIV2K_x4 --config.init_from=runs/psr_x2/checkpoints
Variants (the paper's schedule): `x2` from scratch, 500K iterations, Adam (0.9, 0.999) lr 5e-4
halved at 250/400/450/475/490K; `x3`, `x4`, `x4_star` fine-tuned from x2 (`init_from`) for 250K,
lr 2e-4 halved at 150/200/225/240K. All: batch 48, 64x64 LR patches, flips/rotations, L1,
PSNR/SSIM on Y with a `scale`-pixel border. `demo` trains the small model on CPU with its own
data. The x2 checkpoint's decoder conv (3*4 outputs) does not fit x3/x4 (3*9, 3*16): the
fine-tune variants set `init_from_skip` so that conv keeps its fresh init (x4_star also the 4th
block of every group, which x2 does not have).
"""

from csr_jax import config_lib

_SCALES = {"x2": 2, "x3": 3, "x4": 4, "x4_star": 4}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="x4", **config_lib.COMMON_ARGS)
  c = config_lib.base_config()
  c.model.name = "promptsr"
  c.loss = "l1"
  c.data.patch_size = 64
  c.data.batch_size = 48
  c.data.num_workers = 8
  c.data.augment = True
  c.optim.name = "adam"
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  c.optim.schedule = "multistep"
  c.optim.gamma = 0.5
  c.log_every, c.eval_every, c.checkpoint_every = 200, 10_000, 10_000

  if a.variant == "x2":
    c.model.variant, c.data.scale = "x2", 2
    c.total_steps = 500_000
    c.optim.lr = 5e-4
    c.optim.milestones = (250_000, 400_000, 450_000, 475_000, 490_000)
  elif a.variant in _SCALES:
    c.model.variant, c.data.scale = a.variant, _SCALES[a.variant]
    c.total_steps = 250_000
    c.optim.lr = 2e-4
    c.optim.milestones = (150_000, 200_000, 225_000, 240_000)
    c.init_from_skip = r"^upsample\.0\."  # the x2 decoder conv (3*4 outputs) does not fit
    if a.variant == "x4_star":  # depth 4: each group's 4th block has no x2 counterpart
      c.init_from_skip += r"|^layers\.\d+\.blocks\.3\."
  else:
    raise KeyError(f"configs/promptsr.py: unknown variant {a.variant!r} "
                   f"({', '.join(['x2'] + list(_SCALES))})")

  if a.demo:
    c.data.scale = 4
    c.init_from, c.init_from_skip = "", ""
    config_lib.shrink(c, variant="small", steps=400, patch=32)

  return config_lib.apply_args(c, a)
