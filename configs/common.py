"""Shared config pieces: `parse_arg` for 'variant,key=value' strings and the base training config."""

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'middle,steps=300' -> {variant: 'middle', steps: 300} over `defaults` (types follow them)."""
  out = dict(defaults)
  for i, part in enumerate(p for p in (arg or "").split(",") if p):
    if "=" in part:
      k, v = part.split("=", 1)
    elif i == 0 and "variant" in defaults:
      k, v = "variant", part
    else:
      k, v = part, "True"
    if k not in defaults:
      raise KeyError(f"config argument {k!r} unknown; known: {sorted(defaults)}")
    d = defaults[k]
    out[k] = (v.lower() in ("1", "true", "yes")) if isinstance(d, bool) else type(d)(v)
  return ml_collections.ConfigDict(out)


# 'variant,steps=N,batch=N,workers=N' tails every config accepts (0 / -1: keep the variant's).
COMMON_ARGS = dict(steps=0, batch=0, workers=-1)


def apply_args(c: ml_collections.ConfigDict, a: ml_collections.ConfigDict):
  """Applies the COMMON_ARGS part of a parsed config argument to config `c`; returns `c`."""
  if a.steps:
    c.total_steps = a.steps
  if a.batch:
    c.data.batch_size = a.batch
  if a.workers >= 0:
    c.data.num_workers = a.workers
  return c


def base_config() -> ml_collections.ConfigDict:
  """Every key the training job reads, with neutral defaults."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.ema_decay = 0.999
  c.loss = "l1"
  c.resume = ""  # a checkpoints dir or step dir of another run (state + data iterator)
  c.init_from = ""  # params only: a checkpoint (dir or step) or a params-only Orbax dir
  c.init_from_ema = False
  c.init_from_skip = ""  # regex of param paths init_from leaves at their fresh init (re.search)
  c.report = False

  c.model = ml_collections.ConfigDict()
  c.model.name = ""
  c.model.variant = ""
  c.model.use_task_id = True
  c.model.overrides = ml_collections.ConfigDict()

  c.data = ml_collections.ConfigDict()
  c.data.train_dir = ""
  c.data.train_name = ""
  c.data.eval_dir = ""
  c.data.eval_name = ""
  c.data.eval_split = "test"
  c.data.scale = 4
  c.data.patch_size = 64  # LR patch side; the HR patch is scale times it
  c.data.batch_size = 16  # global, over all devices and processes
  c.data.num_workers = 0
  c.data.augment = True
  c.data.online_jpeg = ()  # (q_min, q_max): re-JPEG the clean LR per sample (PromptCIR stage 2)
  c.data.demo = False

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adam"
  c.optim.lr = 2e-4
  c.optim.b1 = 0.9
  c.optim.b2 = 0.99
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.0
  c.optim.schedule = "multistep"
  c.optim.milestones = (100_000, 200_000)
  c.optim.gamma = 0.5
  c.optim.warmup_steps = 0
  c.optim.final_lr_ratio = 0.0
  c.optim.clip_norm = 0.0
  c.optim.trainable = ""  # regex over param paths; '' trains everything

  c.eval = ml_collections.ConfigDict()
  c.eval.max_images = 0
  # None = data.scale (0 at scale 1), resolved by csr_jax.evaluate; a typed placeholder rather
  # than a reference to data.scale, so overriding it never rewrites the scale.
  c.eval.crop_border = ml_collections.config_dict.placeholder(int)
  c.eval.tile = 0
  c.eval.tile_overlap = 0
  c.eval.self_ensemble = False
  c.eval.use_ema = True
  c.eval.best_metric = "psnr_y"
  c.eval.at_start = False
  c.eval.stop_when_worse = False  # stop once `best_metric` stays below its best ...
  c.eval.patience = 1  # ... for this many evaluations in a row (the best checkpoint is kept)
  return c
