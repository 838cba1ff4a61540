"""PromptSR (2025): lightweight bicubic SR x2/x3/x4 with cascade prompting blocks.

  python -m csr_jax.main --config configs/promptsr.py:x2 --workdir runs/psr_x2 \
      --config.data.train_dir=DIV2K_x2 --config.data.eval_dir=Set5_x2
  python -m csr_jax.main --config configs/promptsr.py:x4 --workdir runs/psr_x4 \
      --config.data.train_dir=DIV2K_x4 --config.init_from=runs/psr_x2/checkpoints
The paper's schedule (Sec. IV-A): "we train the x2 model from scratch for 500K iterations and
fine-tune the x3 and x4 models for 250K iterations from the well-trained x2 model"; Adam (0.9,
0.999), lr 5e-4 halved at 250/400/450/475/490K (x2), 2e-4 halved at 150/200/225/240K (x3, x4).
PromptSR* (N = 4) gets the same protocol among its own variants: `x2_star` from scratch, then
`x3_star` / `x4_star` from x2_star (the paper names no other source for them). All: batch 48,
64x64 LR patches, flips/rotations, L1, PSNR/SSIM on Y with a `scale`-pixel border. The
fine-tune configs set `require_init_from` (the trainer refuses to start without `init_from`)
and `init_from_skip` for the decoder conv, whose 3 s^2 outputs differ between scales. `demo`
trains the small model on CPU with its own data.
"""

from csr_jax import config_lib

_SCALES = {"x2": 2, "x3": 3, "x4": 4, "x2_star": 2, "x3_star": 3, "x4_star": 4}


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

  if a.variant in ("x2", "x2_star"):
    c.model.variant, c.data.scale = a.variant, 2
    c.total_steps = 500_000
    c.optim.lr = 5e-4
    c.optim.milestones = (250_000, 400_000, 450_000, 475_000, 490_000)
  elif a.variant in _SCALES:  # fine-tuned from x2 (x3, x4) or x2_star (x3_star, x4_star)
    c.model.variant, c.data.scale = a.variant, _SCALES[a.variant]
    c.total_steps = 250_000
    c.optim.lr = 2e-4
    c.optim.milestones = (150_000, 200_000, 225_000, 240_000)
    c.require_init_from = True
    c.init_from_skip = r"^upsample\.0\."  # the x2 decoder conv (3*4 outputs) does not fit
  else:
    raise KeyError(f"configs/promptsr.py: unknown variant {a.variant!r} "
                   f"({', '.join(_SCALES)})")

  if a.demo:
    c.data.scale = 4
    c.init_from, c.init_from_skip, c.require_init_from = "", "", False
    config_lib.shrink(c, variant="small", steps=400, patch=32)

  return config_lib.apply_args(c, a)
