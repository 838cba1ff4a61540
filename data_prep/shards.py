"""Crash-safe TFRecord shards: temp file -> index -> `.done` JSON -> rename of the shard itself.

A shard under its final name is complete: its `.idx` and `.done` were renamed into place
before it. `.done` holds the shard's sha256, record count, configuration hash and the per-record
summary, so a re-run can skip verified shards without decoding them. Anything else (hidden temp
files, an index or `.done` without its shard, a checksum mismatch) is redone from scratch.
"""

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from csr_jax.data import records
from data_prep import codecs

FEATURES = ("hr_png", "lr_clean_png", "lr_png", "codec", "quality", "scale", "bpp", "source",
            "encoder", "hr_height", "hr_width", "lr_height", "lr_width")
shard_name = records.shard_name


def png_bytes(img: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, "PNG", compress_level=6)
  return buf.getvalue()


def examples(source: str, scale: int, hr: np.ndarray, clean: np.ndarray, degraded) -> list:
  """[(features, summary)] for one HR image and its degraded LRs.

  `degraded`: (codec, quality, uint8 LR image, bitstream bits or NaN, encoder description) per
  record. The one place a record is assembled, for prepare and ingest alike, so both write
  the same bytes for the same pixels. bpp = bits / (LR height x width).
  """
  hr_png, clean_png = png_bytes(hr), png_bytes(clean)
  (hh, hw), (lh, lw) = hr.shape[:2], clean.shape[:2]
  out = []
  for codec, q, img, bits, encoder in degraded:
    lr_png = clean_png if np.array_equal(img, clean) else png_bytes(img)
    bpp = float(bits) / (lh * lw)
    out.append(({"hr_png": hr_png, "lr_clean_png": clean_png, "lr_png": lr_png, "codec": codec,
                 "quality": int(q), "scale": scale, "bpp": bpp, "source": source,
                 "encoder": encoder, "hr_height": hh, "hr_width": hw, "lr_height": lh,
                 "lr_width": lw},
                {"source": source, "codec": codec, "quality": int(q), "bpp": bpp,
                 "psnr": codecs.psnr(img, clean)}))
  return out


def sha256_file(path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _write_json_atomic(path: Path, obj) -> None:
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def clean_partial(out_dir: Path, shard_file: str) -> None:
  """Removes the debris of an interrupted attempt at this shard."""
  for p in out_dir.glob(f".{shard_file}.*"):
    p.unlink(missing_ok=True)
  for suffix in (".idx", ".done"):
    (out_dir / (shard_file + suffix)).unlink(missing_ok=True)


def load_done(out_dir: Path, shard_file: str, config_hash: str):
  """The `.done` dict of a complete, checksum-verified shard; None if it must be (re)done.

  Raises ValueError when the shard is complete but was made with another configuration.
  """
  shard, idx, done = (out_dir / (shard_file + s) for s in ("", ".idx", ".done"))
  if not (shard.is_file() and idx.is_file() and done.is_file()):
    return None
  try:
    info = json.loads(done.read_text())
  except ValueError:
    return None
  if info.get("config_hash") != config_hash:
    raise ValueError(f"{shard}: made with different options or inputs; use a new --out or "
                     "delete the folder")
  if info.get("sha256") != sha256_file(shard):
    return None
  try:
    if len(records.read_index(idx)) != info.get("num_records"):
      return None
  except records.RecordError:
    return None
  return info


class ShardWriter:
  """Writes one shard under a hidden temp name; `commit` publishes it atomically."""

  def __init__(self, out_dir: Path, shard_file: str):
    self.out_dir, self.shard_file = Path(out_dir), shard_file
    clean_partial(self.out_dir, shard_file)
    self.tmp = self.out_dir / f".{shard_file}.tmp-{os.getpid()}"
    self._w = records.TFRecordWriter(str(self.tmp))

  def write(self, features: dict) -> int:
    payload = records.encode_example(features)
    self._w.write(payload)
    return len(payload) + 16

  def commit(self, info: dict) -> dict:
    self._w.close()
    final = self.out_dir / self.shard_file
    idx_tmp = self.out_dir / f".{self.shard_file}.idx.tmp-{os.getpid()}"
    records.write_index(self._w.index, str(idx_tmp))
    with open(idx_tmp, "rb+") as f:
      os.fsync(f.fileno())
    info = dict(info, sha256=sha256_file(self.tmp), num_records=len(self._w.index),
                bytes=self.tmp.stat().st_size, file=self.shard_file,
                index=self.shard_file + ".idx")
    os.replace(idx_tmp, final.with_name(self.shard_file + ".idx"))
    _write_json_atomic(final.with_name(self.shard_file + ".done"), info)
    os.replace(self.tmp, final)
    _fsync_dir(self.out_dir)
    return info

  def abort(self) -> None:
    try:
      self._w.close()
    except (OSError, ValueError):
      pass
    self.tmp.unlink(missing_ok=True)


def write_manifest(out_dir: Path, manifest: dict) -> Path:
  path = Path(out_dir) / "manifest.json"
  _write_json_atomic(path, manifest)
  _fsync_dir(Path(out_dir))
  return path
