"""Crash-safe TFRecord shards: temp file -> index -> `.done` JSON -> rename of the shard itself.

A shard under its final name is complete: its `.idx` and `.done` were renamed into place
before it. `.done` holds the shard's sha256, record count, configuration hash and the per-record
summary, so a re-run can skip verified shards without decoding them. Anything else (hidden temp
files, an index or `.done` without its shard, a checksum mismatch) is redone from scratch.

Output folders are `csr_jax.paths` paths (etils.epath). A local folder gets temp files, fsync
and atomic renames. A URL (`gs://...`, for Beam workers writing to a bucket) gets each object
uploaded whole, in the same order (index, `.done`, shard), since an object store publishes an
object only once its upload completes; the shard is staged in a local temp file first.
"""

import io
import json
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from csr_jax import paths
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


def write_json(path, obj, tag=None) -> None:
  """JSON to `path`: locally fsync'd temp file + rename, on URLs one whole-object write."""
  text = json.dumps(obj, indent=1, sort_keys=True)
  if paths.is_url(path):
    paths.resolve(path).write_text(text)
    return
  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp-{tag or os.getpid()}")
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _fsync_dir(path) -> None:
  if paths.is_url(path):
    return
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def shard_files(out_dir, shard_file: str) -> tuple:
  """(shard, index, .done) paths of a shard in `out_dir`, as `csr_jax.paths` paths (a URL stays
  a URL: `gs://b/x` gives `gs://b/x/<shard>`)."""
  out_dir = paths.resolve(out_dir)
  return tuple(out_dir / (shard_file + s) for s in ("", ".idx", ".done"))


def remove_temps(out_dir, shard_file: str) -> None:
  """Removes hidden temp files of attempts at this shard (not its published files)."""
  for p in paths.resolve(out_dir).glob(f".{shard_file}.*"):
    p.unlink(missing_ok=True)


def clean_partial(out_dir, shard_file: str) -> None:
  """Removes the debris of an interrupted attempt at this shard."""
  remove_temps(out_dir, shard_file)
  for p in shard_files(out_dir, shard_file)[1:]:
    p.unlink(missing_ok=True)


def load_done(out_dir, shard_file: str, config_hash: str):
  """The `.done` dict of a complete, checksum-verified shard; None if it must be (re)done.

  Raises ValueError when the shard is complete but was made with another configuration.
  """
  shard, idx, done = shard_files(out_dir, shard_file)
  if not (shard.is_file() and idx.is_file() and done.is_file()):
    return None
  try:
    info = json.loads(done.read_text())
  except ValueError:
    return None
  if info.get("config_hash") != config_hash:
    raise ValueError(f"{shard}: made with different options or inputs; use a new --out or "
                     "delete the folder")
  if info.get("sha256") != paths.sha256(shard):
    return None
  try:
    if len(records.parse_index(idx.read_bytes(), os.fspath(idx))) != info.get("num_records"):
      return None
  except records.RecordError:
    return None
  return info


class ShardWriter:
  """Writes one shard under a hidden temp name; `commit` publishes it atomically.

  `exclusive` (the local pool: one writer per shard) first removes every earlier attempt's
  debris. Beam may run two attempts at one shard at once (a retry beside a straggler), so its
  writers use a temp name of their own and leave other files alone; both publish the same
  bytes.
  """

  def __init__(self, out_dir, shard_file: str, exclusive: bool = True):
    self.out_dir, self.shard_file = paths.resolve(out_dir), shard_file
    self.url = paths.is_url(self.out_dir)
    if exclusive:
      clean_partial(self.out_dir, shard_file)
    tag = f"{os.getpid()}" if exclusive else f"{uuid.uuid4().hex[:8]}-{os.getpid()}"
    if self.url:
      fd, tmp = tempfile.mkstemp(prefix=f".{shard_file}.tmp-{tag}")
      os.close(fd)
      self.tmp = Path(tmp)
    else:
      self.tmp = Path(self.out_dir / f".{shard_file}.tmp-{tag}")
    self._tag = tag
    self._w = records.TFRecordWriter(str(self.tmp))

  def write(self, features: dict) -> int:
    """Appends one record; its framed size in bytes."""
    payload = records.encode_example(features)
    self._w.write(payload)
    return len(payload) + 16

  def commit(self, info: dict) -> dict:
    self._w.close()
    final, idx, done = shard_files(self.out_dir, self.shard_file)
    index = records.index_text(self._w.index)
    info = dict(info, sha256=paths.sha256(self.tmp), num_records=len(self._w.index),
                bytes=self.tmp.stat().st_size, file=self.shard_file,
                index=self.shard_file + ".idx")
    if self.url:
      idx.write_text(index)
      write_json(done, info)
      with open(self.tmp, "rb") as src, final.open("wb") as dst:
        for chunk in iter(lambda: src.read(1 << 24), b""):
          dst.write(chunk)
      self.tmp.unlink(missing_ok=True)
      return info
    idx_tmp = Path(self.out_dir / f".{self.shard_file}.idx.tmp-{self._tag}")
    with open(idx_tmp, "w") as f:
      f.write(index)
      f.flush()
      os.fsync(f.fileno())
    os.replace(idx_tmp, Path(idx))
    write_json(done, info, self._tag)
    os.replace(self.tmp, Path(final))
    _fsync_dir(self.out_dir)
    return info

  def abort(self) -> None:
    try:
      self._w.close()
    except (OSError, ValueError):
      pass
    self.tmp.unlink(missing_ok=True)


def write_manifest(out_dir, manifest: dict):
  out_dir = paths.resolve(out_dir)
  path = out_dir / "manifest.json"
  write_json(path, manifest)
  _fsync_dir(out_dir)
  return path
