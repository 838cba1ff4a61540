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

from csr_jax import paths
from csr_jax.data import records

IMAGE_KEYS = {"hr": "hr_png", "lr": "lr_png", "lr_clean": "lr_clean_png"}
INT_KEYS = ("quality", "scale")
MANIFEST = "manifest.json"


class ManifestError(ValueError):
  """A prep output whose manifest and shard files disagree; the message names the file."""


def read_manifest(path) -> dict:
  """The manifest as a dict with its `name`, `split` and `shards` checked (ManifestError)."""
  path = paths.resolve(path)
  try:
    m = json.loads(path.read_bytes())
  except OSError as e:
    raise ManifestError(f"{path}: cannot read ({e.strerror or e})") from None
  except ValueError as e:
    raise ManifestError(f"{path}: not JSON ({str(e).splitlines()[0]})") from None
  if not isinstance(m, dict) or not all(k in m for k in ("name", "split", "shards")):
    raise ManifestError(f"{path}: not a data_prep manifest (needs name, split, shards)")
  for s in m["shards"]:
    file = s.get("file") if isinstance(s, dict) else None
    if not isinstance(file, str) or "/" in file or file in ("", ".", ".."):
      raise ManifestError(f"{path}: bad shard entry {s!r}")
  return m


def _manifest_shards(path) -> list[str]:
  """Shard paths a manifest lists, after checking them against the folder's shard files."""
  m = read_manifest(path)
  folder = paths.resolve(path).parent
  listed = [s["file"] for s in m["shards"]]
  present = {f.name for f in folder.iterdir()}
  for f in listed:
    if f not in present:
      raise ManifestError(f"{path}: lists shard {f}, which is missing")
  extra = sorted(f for f in present if records.SHARD_RE.fullmatch(f) and f not in set(listed))
  if extra:
    raise ManifestError(f"{folder / extra[0]}: shard not in {path} (stale, from another "
                        "run?); remove it or re-run the prep step into a new folder")
  return [str(folder / f) for f in listed]


def find_shards(data_dir, name: str | None = None,
                split: str | None = None) -> dict[str, list[str]]:
  """{dataset name: shard paths} from the `manifest.json` in `data_dir`, or from those one
  folder down when `data_dir` holds several prep outputs; `name`/`split` filter them. Local
  folders and URLs (gs://...) alike.

  Datasets of the same name in several manifests are concatenated in folder order. A manifest
  that lists a missing shard, or a shard file beside it that it does not list, is a
  ManifestError naming the file; no manifest at all is a FileNotFoundError.
  """
  data_dir = paths.resolve(data_dir)
  if (data_dir / MANIFEST).exists():
    manifests = [data_dir / MANIFEST]
  elif data_dir.is_dir():
    manifests = [d / MANIFEST for d in sorted(data_dir.iterdir(), key=lambda p: p.name)
                 if (d / MANIFEST).exists()]
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


def cache_shards(shards: list[str], cache_dir) -> list[str]:
  """Local copies of `shards` (and their `.idx`) under `cache_dir`, each verified against the
  sha256 its manifest records; a copy that already verifies is reused. For data on object
  stores that random access would make slow: copy once per host, then read locally."""
  import hashlib
  cache_dir = paths.resolve(cache_dir)
  out = []
  for shard in shards:
    shard = paths.resolve(shard)
    entry = {s["file"]: s for s in read_manifest(shard.parent / MANIFEST)["shards"]}[shard.name]
    key = hashlib.sha256(str(shard.parent).encode()).hexdigest()[:16]
    local = cache_dir / key / shard.name
    if not (local.exists() and paths.sha256(local) == entry["sha256"]):
      local.parent.mkdir(parents=True, exist_ok=True)
      for src, dst in ((shard, local), (paths.resolve(f"{shard}.idx"), paths.resolve(f"{local}.idx"))):
        tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}"
        tmp.write_bytes(src.read_bytes())
        tmp.replace(dst)
      if paths.sha256(local) != entry["sha256"]:
        raise ManifestError(f"{shard}: its copy in {local.parent} does not match the sha256 in "
                            f"{shard.parent / MANIFEST}")
    out.append(str(local))
  return out


class TFRecordSource:
  """`grain.sources.RandomAccessDataSource` over TFRecord shards with `.idx` sidecars, local or
  on object stores (`paths.Reader`: positioned reads, CRC-checked).

  `__getitem__` returns the serialized tf.train.Example bytes; decoding happens in a map so it
  runs in the Grain workers.
  """

  def __init__(self, shard_paths: list[str], check_crc: bool = True):
    if not shard_paths:
      raise ValueError("TFRecordSource needs at least one shard")
    self._paths = [str(p) for p in shard_paths]
    self._check_crc = check_crc
    self._index = []  # (shard number, offset) per record
    for i, p in enumerate(self._paths):
      idx = paths.resolve(p + ".idx")
      if not idx.exists():
        raise FileNotFoundError(f"{idx}: missing index sidecar of shard {p}")
      entries = records.read_index(idx)
      end, size = sum(n for _, n in entries), paths.resolve(p).stat().length
      if end != size:
        raise records.RecordError(f"{idx}: indexes {end} bytes but the shard has {size}")
      self._index.extend((i, off) for off, _ in entries)
    self._readers = [paths.Reader(p) for p in self._paths]

  def __len__(self) -> int:
    return len(self._index)

  def __getitem__(self, i: int) -> bytes:
    shard, offset = self._index[i]
    return records.read_record_at(self._readers[shard].at(offset), offset, self._paths[shard],
                                  self._check_crc)

  def __repr__(self) -> str:
    return f"TFRecordSource({len(self._paths)} shards, {len(self)} records, first={self._paths[0]})"

  def close(self) -> None:
    for r in self._readers:
      r.close()


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
