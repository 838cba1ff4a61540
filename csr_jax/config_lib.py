"""Config pieces every `configs/<family>.py` shares, and the checks run before any work.

`parse_arg('middle,steps=300,demo')` reads a config argument; `base_config()` holds every key
the training job reads; `shrink(c, ...)` is the one `demo` switch (big_vision's `runlocal`):
a CPU-sized run on data the job prepares itself. `validate(config)` checks the values a user
may have overridden and names the key in a one-line error, before a model is built.
"""

import ml_collections

# 'variant,steps=N,batch=N,workers=N,demo' tails every config accepts (0 / -1: keep the variant's).
COMMON_ARGS = dict(steps=0, batch=0, workers=-1, demo=False)


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'middle,steps=300,demo' -> {variant: 'middle', steps: 300, demo: True} over `defaults`
  (types follow them; a bare word is the variant, or a boolean key set to True)."""
  out = dict(defaults)
  for i, part in enumerate(p for p in (arg or "").split(",") if p):
    if "=" in part:
      k, v = part.split("=", 1)
    elif isinstance(defaults.get(part), bool):
      k, v = part, "True"
    elif i == 0 and "variant" in defaults:
      k, v = "variant", part
    else:
      k, v = part, "True"
    if k not in defaults:
      raise KeyError(f"config argument {k!r} unknown; known: {sorted(defaults)}")
    d = defaults[k]
    try:
      out[k] = (v.lower() in ("1", "true", "yes")) if isinstance(d, bool) else type(d)(v)
    except ValueError:
      raise ValueError(f"config argument {k}={v!r}: expected {type(d).__name__}") from None
  return ml_collections.ConfigDict(out)


def apply_args(c: ml_collections.ConfigDict, a: ml_collections.ConfigDict):
  """Applies the COMMON_ARGS part of a parsed config argument to config `c`; returns `c`."""
  if a.steps:
    c.total_steps = a.steps
  if a.batch:
    c.data.batch_size = a.batch
  if a.workers >= 0:
    c.data.num_workers = a.workers
  return c


def shrink(c: ml_collections.ConfigDict, *, variant: str, steps: int, patch: int,
           batch: int = 8, lr: float = 1e-3, overrides: dict | None = None):
  """The `demo` switch: `variant` (a CPU-sized model) trained `steps` steps on photos the job
  prepares itself, evaluated on held-out Kodak, with a report."""
  c.model.variant = variant
  c.model.overrides = {**c.model.overrides, **(overrides or {})}
  c.data.demo = True
  c.data.patch_size, c.data.batch_size, c.data.num_workers = patch, batch, 1
  c.data.eval_split = "test"
  c.total_steps = steps
  c.optim.lr = lr
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = max(1, steps // 12)
  c.optim.final_lr_ratio = 0.05
  c.ema_decay = 0.99
  c.log_every = max(1, steps // 12)
  c.eval_every = c.checkpoint_every = max(1, steps // 4)
  c.keep_checkpoints = 2
  c.eval.max_images = 6
  c.eval.tile = 0
  c.report = True
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
  c.ema_decay = 0.999  # capped by the warm-up (1+t)/(10+t) (step.py): reached at t = 9/(1-d)-10
  c.loss = "l1"
  c.resume = ""  # a checkpoints dir or step dir of another run (state + data position)
  c.init_from = ""  # params only: a checkpoint (dir or step), a params-only dir or a .pth
  c.init_from_ema = False
  c.init_from_skip = ""  # regex of param paths init_from leaves at their fresh init (re.search)
  c.require_init_from = False  # fine-tune configs: refuse to start from scratch
  c.report = False

  c.model = ml_collections.ConfigDict()
  c.model.name = ""
  c.model.variant = ""
  c.model.overrides = ml_collections.ConfigDict()
  c.model.dtype = "float32"  # compute dtype ('bfloat16': bf16 forward, float32 master params)
  # codec pattern -> prompt id; None = the family's table (a checkpoint saves the one it used)
  c.model.task_ids = ml_collections.config_dict.placeholder(dict)

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
  c.data.demo_codec = "jpeg:20,30"  # the codec grid the demo prepares its photos with
  # Local copies of the shards (sha256-verified against the manifest) for data on object
  # stores: '' reads the shards where they are.
  c.data.cache_dir = ""

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
  c.optim.trainable = ""  # regex over dotted param paths; '' trains everything

  c.eval = ml_collections.ConfigDict()
  c.eval.max_images = 0
  # None = the family's protocol (csr_jax.family.Inference / Evaluation); typed placeholders.
  c.eval.crop_border = ml_collections.config_dict.placeholder(int)
  c.eval.tile = ml_collections.config_dict.placeholder(int)
  c.eval.tile_overlap = ml_collections.config_dict.placeholder(int)
  c.eval.ensemble = ml_collections.config_dict.placeholder(str)
  c.eval.best_metric = ml_collections.config_dict.placeholder(str)
  c.eval.per_step = True  # score the family's extra outputs (e.g. CISR's x_j, y_j) too
  c.eval.use_ema = True
  c.eval.at_start = False
  c.eval.stop_when_worse = False  # stop once `best_metric` stays below its best ...
  c.eval.patience = 1  # ... for this many evaluations in a row (the best checkpoint is kept)
  return c


def _check(ok: bool, key: str, value, why: str):
  if not ok:
    raise ValueError(f"config.{key}={value!r}: {why}")


def validate(config) -> None:
  """One-line errors naming the key, for values that would fail later (or silently)."""
  from csr_jax import losses
  from csr_jax import paths
  from csr_jax import weights
  from csr_jax.inference import ENSEMBLES
  r = weights.ref_from_config(config)  # resolves family and variant (one-line errors)
  r.spec.check(r.variant, r.overrides)
  ints = {"total_steps": 1, "log_every": 1, "eval_every": 1, "checkpoint_every": 1,
          "keep_checkpoints": 1, "data.batch_size": 1, "data.patch_size": 1, "data.scale": 1,
          "data.num_workers": 0, "optim.warmup_steps": 0, "eval.max_images": 0,
          "eval.patience": 1}
  for key, low in ints.items():
    v = _get(config, key)
    _check(isinstance(v, int) and not isinstance(v, bool) and v >= low, key, v,
           f"must be an integer >= {low}")
  for key in ("optim.lr", "optim.eps"):
    v = _get(config, key)
    _check(isinstance(v, (int, float)) and v > 0, key, v, "must be > 0")
  _check(0 <= config.ema_decay < 1, "ema_decay", config.ema_decay, "must be in [0, 1)")
  _check(config.loss in losses.PIXEL, "loss", config.loss, f"known: {sorted(losses.PIXEL)}")
  _check(config.model.get("dtype", "float32") in ("float32", "bfloat16"), "model.dtype",
         config.model.get("dtype"), "use 'float32' or 'bfloat16'")
  _check(config.optim.name in ("adam", "adamw"), "optim.name", config.optim.name,
         "use 'adam' or 'adamw'")
  _check(config.optim.schedule in ("constant", "multistep", "cosine"), "optim.schedule",
         config.optim.schedule, "use constant, multistep or cosine")
  ev = config.eval
  for key in ("tile", "tile_overlap", "crop_border"):
    v = ev.get(key)
    _check(v is None or (isinstance(v, int) and v >= 0), f"eval.{key}", v, "must be >= 0")
  _check(ev.get("ensemble") in (None, *ENSEMBLES), "eval.ensemble", ev.get("ensemble"),
         f"known: {sorted(ENSEMBLES)}")
  if config.get("require_init_from") and not config.get("init_from"):
    raise ValueError(f"config.init_from is required by this config ({config.model.name} "
                     f"{config.model.variant} fine-tunes a trained model); pass "
                     "--config.init_from=RUN")
  for key in ("init_from", "resume", "data.train_dir", "data.eval_dir"):
    v = _get(config, key)
    if v and not paths.is_url(v):
      _check(paths.resolve(v).exists(), key, v, "no such file or directory")
  if not config.data.train_dir and not config.data.get("demo"):
    raise ValueError("config.data.train_dir is empty: point it at prepared shards "
                     "(python -m data_prep.prepare ...) or use the demo config")


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node
