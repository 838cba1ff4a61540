"""Per-example train transforms (numpy + Pillow, run in Grain workers).

All take and return dicts of uint8 HWC arrays; randomness comes from the `np.random.Generator`
Grain derives from the pipeline seed and the element index, so a pipeline is reproducible and
its position is all a checkpoint needs.
"""

import io

import grain
import numpy as np
from PIL import Image

from csr_jax import family
from csr_jax.data import source

PAIRED = ("lr", "lr_clean")  # LR-resolution images cropped together with `hr`


def paired_random_crop(ex: dict, patch: int, scale: int, rng: np.random.Generator) -> dict:
  """Crops an LR `patch` x `patch` window and the HR window exactly `scale` times it."""
  lr, hr = ex["lr"], ex["hr"]
  h, w = lr.shape[:2]
  if hr.shape[:2] != (h * scale, w * scale):
    raise ValueError(f"{ex.get('source', '?')}: HR {hr.shape[:2]} is not {scale}x LR {lr.shape[:2]}")
  if h < patch or w < patch:
    raise ValueError(f"{ex.get('source', '?')}: LR {h}x{w} is smaller than the {patch} patch")
  y, x = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
  out = dict(ex)
  for k in PAIRED:
    if k in ex:
      out[k] = ex[k][y:y + patch, x:x + patch]
  out["hr"] = hr[y * scale:(y + patch) * scale, x * scale:(x + patch) * scale]
  return out


def flip_rotate(ex: dict, rng: np.random.Generator) -> dict:
  """One of the 8 dihedral transforms (h-flip, v-flip, transpose), the same on every image."""
  hflip, vflip, rot = (bool(b) for b in rng.integers(0, 2, size=3))

  def f(a):
    if hflip:
      a = a[:, ::-1]
    if vflip:
      a = a[::-1]
    if rot:
      a = a.transpose(1, 0, 2)
    return np.ascontiguousarray(a)

  out = dict(ex)
  for k in ("hr", *PAIRED):
    if k in ex:
      out[k] = f(ex[k])
  return out


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
  """Pillow JPEG round trip (4:2:0, as the prep step uses)."""
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
  return source.decode_png(buf.getvalue())


def online_jpeg(ex: dict, qualities: tuple[int, int], rng: np.random.Generator) -> dict:
  """Re-degrades the clean LR with JPEG at a quality drawn from [lo, hi] (on-line degradation)."""
  q = int(rng.integers(qualities[0], qualities[1] + 1))
  out = dict(ex)
  out["lr"] = jpeg(ex["lr_clean"], q)
  out["quality"], out["codec"] = np.int32(q), "jpeg"
  return out


def with_task_id(ex: dict, table) -> dict:
  """`task_id` of the example's codec in the model's table (a task id belongs to the model,
  not to the data); 0 when the model takes none."""
  tid = 0 if table is None else family.task_id(table, ex["codec"], where=ex.get("source", ""))
  return {**ex, "task_id": np.int32(tid)}


class Decode(grain.transforms.Map):
  """Example bytes -> dict of arrays (only the images the model family needs)."""

  def __init__(self, keys=("hr", "lr")):
    self.keys = tuple(keys)

  def map(self, serialized: bytes) -> dict:
    return source.decode(serialized, self.keys)


class TrainAugment(grain.transforms.RandomMap):
  """Paired crop, optional on-line JPEG, flips/rotations; keeps only batchable fields."""

  def __init__(self, patch: int, scale: int, augment: bool = True,
               jpeg_qualities: tuple[int, int] | None = None, keep=("hr", "lr", "task_id"),
               task_ids=None):
    self.patch, self.scale, self.augment = patch, scale, augment
    self.jpeg_qualities = tuple(jpeg_qualities) if jpeg_qualities else None
    self.keep, self.task_ids = tuple(keep), task_ids

  def random_map(self, ex: dict, rng: np.random.Generator) -> dict:
    ex = paired_random_crop(ex, self.patch, self.scale, rng)
    if self.jpeg_qualities:
      ex = online_jpeg(ex, self.jpeg_qualities, rng)
    if self.augment:
      ex = flip_rotate(ex, rng)
    if "task_id" in self.keep:
      ex = with_task_id(ex, self.task_ids)
    return {k: ex[k] for k in self.keep}
