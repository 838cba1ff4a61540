"""Grain random-access source over indexed TFRecord shards, and the Example decoder.

A record is located by its shard's `.idx` sidecar ('offset length' per line), so any index can
be read with one positioned read. File descriptors are opened lazily per process and dropped on
pickling, so the source can be shipped to Grain worker processes. Shard lists come from the
`manifest.json` the prep step writes, never from a glob: a glob also reads stale shards of an
earlier run. No torch and no JAX here.
"""

import io
import json
import os

import numpy as np
from PIL import Image

from csr_jax.data import records

IMAGE_KEYS = {"hr": "hr_png", "lr": "lr_png", "lr_clean": "lr_clean_png"}
INT_KEYS = ("quality", "scale")
MANIFEST = "manifest.json"


class ManifestError(ValueError):
  """A prep output whose manifest and shard files disagree; the message names the file."""


def read_manifest(path: str) -> dict:
  """The manifest as a dict with its `name`, `split` and `shards` checked (ManifestError)."""
  try:
    with open(path, "rb") as f:
      m = json.loads(f.read())
  except OSError as e:
    raise ManifestError(f"{path}: cannot read ({e.strerror})") from None
  except ValueError as e:
    raise ManifestError(f"{path}: not JSON ({str(e).splitlines()[0]})") from None
  if not isinstance(m, dict) or not all(k in m for k in ("name", "split", "shards")):
    raise ManifestError(f"{path}: not a data_prep manifest (needs name, split, shards)")
  for s in m["shards"]:
    file = s.get("file") if isinstance(s, dict) else None
    if not isinstance(file, str) or os.path.basename(file) != file:
      raise ManifestError(f"{path}: bad shard entry {s!r}")
  return m


def _manifest_shards(path: str) -> list[str]:
  """Shard paths a manifest lists, after checking them against the folder's shard files."""
  m = read_manifest(path)
  folder = os.path.dirname(path)
  listed = [s["file"] for s in m["shards"]]
  known = set(listed)
  for f in listed:
    if not os.path.isfile(os.path.join(folder, f)):
      raise ManifestError(f"{path}: lists shard {f}, which is missing")
  extra = sorted(f for f in os.listdir(folder)
                 if records.SHARD_RE.fullmatch(f) and f not in known)
  if extra:
    raise ManifestError(f"{os.path.join(folder, extra[0])}: shard not in {path} (stale, from "
                        "another run?); remove it or re-run the prep step into a new folder")
  return [os.path.join(folder, f) for f in listed]


def find_shards(data_dir: str, name: str | None = None,
                split: str | None = None) -> dict[str, list[str]]:
  """{dataset name: shard paths} from the `manifest.json` in `data_dir`, or from those one
  folder down when `data_dir` holds several prep outputs; `name`/`split` filter them.

  Datasets of the same name in several manifests are concatenated in folder order (symlinked
  folders count once). A manifest
  that lists a missing shard, or a shard file beside it that it does not list, is a
  ManifestError naming the file; no manifest at all is a FileNotFoundError.
  """
  data_dir = os.path.expanduser(str(data_dir))
  top = os.path.join(data_dir, MANIFEST)
  if os.path.isfile(top):
    manifests = [top]
  elif os.path.isdir(data_dir):
    found = {}  # one entry per real folder: a symlink to a sibling would read it twice
    for d in sorted(os.listdir(data_dir)):
      path = os.path.join(data_dir, d, MANIFEST)
      if os.path.isfile(path):
        found.setdefault(os.path.realpath(path), path)
    manifests = list(found.values())
  else:
    raise FileNotFoundError(f"{data_dir}: no such folder")
  if not manifests:
    raise FileNotFoundError(f"{data_dir}: no {MANIFEST} here or one folder down (shards are "
                            "listed by the manifest that data_prep.prepare/ingest write)")
  out = {}
  for path in manifests:
    m = read_manifest(path)
    if (name is None or m["name"] == name) and (split is None or m["split"] == split):
      out.setdefault(m["name"], []).extend(_manifest_shards(path))
  if not out:
    want = " ".join(f"{k}={v!r}" for k, v in (("name", name), ("split", split)) if v)
    raise FileNotFoundError(f"{data_dir}: no dataset with {want} in {len(manifests)} "
                            f"manifest(s), e.g. {manifests[0]}")
  return out


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
      entries = records.read_index(idx)
      end, size = sum(n for _, n in entries), os.path.getsize(p)
      if end != size:
        raise records.RecordError(f"{idx}: indexes {end} bytes but the shard has {size}")
      self._index.extend((i, off) for off, _ in entries)
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
  """Example bytes -> {hr, lr, lr_clean: uint8 HWC, codec, source: str, quality, scale}.

  No task id: which prompt a codec gets belongs to the model family (its spec's table).
  """
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
  out["source"] = ex["source"][0].decode(errors="replace") if "source" in ex else ""
  return out
