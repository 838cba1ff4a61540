"""PromptCIR (NTIRE 2024): blind JPEG restoration at the same resolution (scale 1).

  python -m data_prep.prepare --hr_dir DF2K_LSDIR --out data/pcir --scale 1 --grid promptcir
  python -m csr_jax.main --config configs/promptcir.py:stage1 --workdir runs/pcir1 \
      --config.data.train_dir=data/pcir --config.data.eval_dir=data/pcir_eval
  python -m csr_jax.main --config configs/promptcir.py:stage2 --workdir runs/pcir2 \
      --config.data.train_dir=data/pcir --config.init_from=runs/pcir1/checkpoints
Variants: `stage1` (fixed JPEG qualities 10..70 from the shards; AdamW 2e-4, cosine to 1e-6,
128x128 patches, flips and rotations), `stage2` (init from stage 1; the clean image re-JPEG'd
on line at a quality drawn from [10, 70] per sample; lr 1e-4 cosine to 1e-6), `demo` (the small
model on CPU; prepares its own data). Evaluation: JPEG 10/20/30/40 shards (prep with
`--codec jpeg:10,20,30,40 --scale 1`), PSNR/SSIM/PSNR-B on Y, tiles of 384 with 96 overlap.
"""

from csr_jax import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="stage1", **config_lib.COMMON_ARGS)
  c = config_lib.base_config()
  c.model.name = "promptcir"
  c.model.variant = "official"
  c.loss = "l1"
  c.data.scale = 1
  c.data.patch_size = 128
  c.data.batch_size = 8
  c.data.num_workers = 8
  c.data.augment = True
  c.total_steps = 200_000
  c.log_every, c.eval_every, c.checkpoint_every = 200, 10_000, 10_000

  c.optim.name = "adamw"
  c.optim.lr = 2e-4
  c.optim.b1, c.optim.b2 = 0.9, 0.999
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "cosine"
  c.optim.final_lr_ratio = 1e-6 / c.optim.lr


  if a.variant == "stage1":
    pass
  elif a.variant == "stage2":
    c.data.online_jpeg = (10, 70)
    c.optim.lr = 1e-4
    c.optim.final_lr_ratio = 1e-6 / c.optim.lr
    c.total_steps = 100_000
  else:
    raise KeyError(f"configs/promptcir.py: unknown variant {a.variant!r} (stage1, stage2)")

  if a.demo:
    config_lib.shrink(c, variant="small", steps=300, patch=64, batch=4, lr=5e-4)

  return config_lib.apply_args(c, a)
