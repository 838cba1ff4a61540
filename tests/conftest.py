"""Shared test fixtures: real images from ../shared/datasets (never copied into the repo)."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

# One persistent XLA cache for the whole run, subprocesses included: several tests compile the
# same train step or model (two training stages, a resumed run), which then compiles once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2")
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
