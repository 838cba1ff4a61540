"""Grain random-access source over indexed TFRecord shards, and the Example decoder.

A record is located by its shard's `.idx` sidecar ('offset length' per line), so any index can
be read with one positioned read. File descriptors are opened lazily per process and dropped on pickling, so
the source can be shipped to Grain worker processes. No torch and no JAX here.
"""

import glob
import io
import os
import re

import numpy as np
from PIL import Image

from csr_jax.data import records

IMAGE_KEYS = {"hr": "hr_png", "lr": "lr_png", "lr_clean": "lr_clean_png"}
INT_KEYS = ("quality", "task_id", "scale")


def find_shards(data_dir: str, name: str | None = None, split: str = "train") -> list[str]:
  """Sorted shard paths `<name>-<split>.tfrecord-*-of-*` in `data_dir` (any name if None)."""
  pattern = f"{name or '*'}-{split}.tfrecord-*-of-*"
  paths = sorted(p for p in glob.glob(os.path.join(data_dir, pattern))
                 if re.search(r"-\d+-of-\d+$", p))  # not the .idx/.done sidecars
  if not paths:
    raise FileNotFoundError(f"{data_dir}: no shards matching {pattern!r}")
  return paths


class TFRecordSource:
  """`grain.sources.RandomAccessDataSource` over TFRecord shards with `.idx` sidecars.

  `__getitem__` returns the serialized tf.train.Example bytes; decoding happens in a map so it
  runs in the Grain workers.
  """

  def __init__(self, paths: list[str], check_crc: bool = True):
    if not paths:
      raise ValueError("TFRecordSource needs at least one shard")
    self._paths = list(paths)
    self._check_crc = check_crc
    self._index = []  # (shard number, offset) per record
    for i, p in enumerate(self._paths):
      idx = p + ".idx"
      if not os.path.isfile(idx):
        raise FileNotFoundError(f"{idx}: missing index sidecar of shard {p}")
      self._index.extend((i, off) for off, _ in records.read_index(idx))
    self._files = {}

  def __len__(self) -> int:
    return len(self._index)

  def __getitem__(self, i: int) -> bytes:
    shard, offset = self._index[i]
    fd = self._files.get(shard)
    if fd is None:
      fd = self._files[shard] = os.open(self._paths[shard], os.O_RDONLY)
    return records.read_record_at(_PRead(fd), offset, self._paths[shard], self._check_crc)

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k != "_files"} | {"_files": {}}

  def __repr__(self) -> str:
    return f"TFRecordSource({len(self._paths)} shards, {len(self)} records, first={self._paths[0]})"

  def close(self) -> None:
    for fd in self._files.values():
      os.close(fd)
    self._files = {}


class _PRead:
  """seek/read over a shared descriptor with `os.pread`: Grain reads from several threads."""

  def __init__(self, fd: int):
    self.fd, self.pos = fd, 0

  def seek(self, pos: int) -> None:
    self.pos = pos

  def read(self, n: int) -> bytes:
    data = os.pread(self.fd, n, self.pos)
    self.pos += len(data)
    return data


def decode_png(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert("RGB"))


def decode(serialized: bytes, keys=("hr", "lr", "lr_clean")) -> dict:
  """Example bytes -> {hr, lr, lr_clean: uint8 HWC, codec, source: str, quality, task_id, scale}."""
  ex = records.decode_example(serialized)
  out = {}
  for k in keys:
    feat = IMAGE_KEYS[k]
    if feat not in ex:
      raise records.RecordError(f"record of {ex.get('source', ['?'])[0]!r} lacks feature {feat!r}")
    out[k] = decode_png(ex[feat][0])
  for k in INT_KEYS:
    out[k] = np.int32(ex[k][0]) if k in ex else np.int32(0)
  out["codec"] = ex["codec"][0].decode() if "codec" in ex else ""
  out["source"] = ex["source"][0].decode() if "source" in ex else ""
  return out
