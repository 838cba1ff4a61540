"""Shared test fixtures: real images from ../shared/datasets (never copied into the repo)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

# One persistent XLA cache for the whole run, subprocesses included: several tests compile the
# same train step or model (two training stages, a resumed run), which then compiles once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2")
# gs:// through gcsfs (which the tests point at a local GCS emulator), not tf.io.gfile: with
# TensorFlow installed (the tfds tests need it) epath would pick gfile, decided once per process.
os.environ.setdefault("EPATH_USE_TF", "false")
SHARED = Path(os.environ.get("CSR_SHARED", REPO.parent / "shared"))
DATASETS = SHARED / "datasets"


def load_rgb(path) -> np.ndarray:
  with Image.open(path) as im:
    return np.asarray(im.convert("RGB"))


def kodak_path(name: str = "kodim01") -> Path:
  p = DATASETS / "kodak" / f"{name}.png"
  if not p.is_file():
    raise FileNotFoundError(f"{p}: the shared Kodak set is missing (set CSR_SHARED to the "
                            "folder holding datasets/kodak)")
  return p


def kodak_crop(h: int, w: int, name: str = "kodim01", top: int = 0, left: int = 0,
               dtype=np.float32) -> np.ndarray:
  """A [1, h, w, 3] crop in [0, 1] of a Kodak image."""
  img = load_rgb(kodak_path(name))
  crop = img[top:top + h, left:left + w]
  assert crop.shape == (h, w, 3), f"crop {h}x{w} at ({top},{left}) exceeds {img.shape}"
  return (crop.astype(dtype) / 255.0)[None]


@pytest.fixture(scope="session")
def kodak_dir() -> Path:
  return kodak_path().parent


def run_module(args, cwd, *, env=None, timeout=900, check=True) -> subprocess.CompletedProcess:
  """`python -m ARGS` as a user runs it, from `cwd`; `tests.*` importable (toy families)."""
  full_env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", **(env or {}))
  res = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=cwd, env=full_env,
                       capture_output=True, text=True, timeout=timeout)
  if check and res.returncode != 0:
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    raise AssertionError(f"python -m {' '.join(map(str, args))} failed ({res.returncode}): "
                         f"{errors}\n{res.stderr[-4000:]}")
  return res


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
  """A real training run of the main job (UCIP small, 3 steps on Kodak crops, checkpoints at
  steps 2 and 3, evaluation and report), written from its own folder by relative paths.
  Returns the folder holding `run/` (the workdir) and `data/{train,eval}`. Consumers copy the
  workdir before changing anything in it."""
  from tests.shards import kodak_crops, write_shards
  root = tmp_path_factory.mktemp("artifacts")
  write_shards(root / "data" / "train", kodak_crops(("kodim01", "kodim03", "kodim05", "kodim07"),
                                                   96), codec="jpeg:30", split="train")
  write_shards(root / "data" / "eval", kodak_crops(("kodim02", "kodim04"), 64), codec="jpeg:40")
  config = os.path.relpath(REPO / "configs" / "ucip.py", root)
  run_module(["csr_jax.main", "--config", f"{config}:small,steps=3,batch=4,workers=0",
              "--workdir", "run", "--config.data.train_dir=data/train",
              "--config.data.eval_dir=data/eval", "--config.data.patch_size=16",
              "--config.checkpoint_every=2", "--config.eval_every=3", "--config.log_every=1",
              "--config.report=True", "--config.optim.lr=1e-3"], root)
  return root
