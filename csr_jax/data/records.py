"""TFRecord framing and the tf.train.Example codec, without TensorFlow.

Shared by the prep step (writer) and the Grain source (reader); pure Python + google-crc32c, so
importing it costs nothing in Grain workers. Files follow TensorFlow's format exactly (length,
masked CRC32C of the length, payload, masked CRC32C of the payload) and the Example wire format
of tensorflow/core/example/{example,feature}.proto, so `tf.data.TFRecordDataset` and
`tf.train.Example.FromString` read them.
"""

import os
import re
import struct

import google_crc32c

_MASK_DELTA = 0xA282EAD8

# Dataset and split names become part of file names: letters, digits and '_' only (no '-',
# which separates them, no path separators, no leading dot).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*")
# Any shard file name (not its .idx/.done sidecars), whoever wrote it; use with fullmatch.
SHARD_RE = re.compile(r"(?P<stem>.+)\.tfrecord-(?P<index>\d{5})-of-(?P<count>\d{5})")


def shard_name(name: str, split: str, index: int, num_shards: int) -> str:
  """tensorflow-datasets style: <name>-<split>.tfrecord-00000-of-00004."""
  return f"{name}-{split}.tfrecord-{index:05d}-of-{num_shards:05d}"


def masked_crc(data: bytes) -> int:
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(payload: bytes) -> bytes:
  """One TFRecord: header, header CRC, payload, payload CRC."""
  header = struct.pack("<Q", len(payload))
  return (header + struct.pack("<I", masked_crc(header)) + payload
          + struct.pack("<I", masked_crc(payload)))


class RecordError(ValueError):
  """A TFRecord/Example is corrupt; the message names the file and offset."""


def read_record_at(f, offset: int, path: str = "?", check_crc: bool = True) -> bytes:
  """The payload of the record starting at byte `offset` of open file `f`."""
  f.seek(offset)
  header = f.read(12)
  if len(header) != 12:
    raise RecordError(f"{path}: truncated record header at offset {offset}")
  (length,), (hcrc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
  if check_crc and hcrc != masked_crc(header[:8]):
    raise RecordError(f"{path}: bad length CRC at offset {offset}")
  body = f.read(length + 4)
  if len(body) != length + 4:
    raise RecordError(f"{path}: truncated record at offset {offset} (want {length} bytes)")
  payload = body[:length]
  if check_crc and struct.unpack("<I", body[length:])[0] != masked_crc(payload):
    raise RecordError(f"{path}: bad payload CRC at offset {offset}")
  return payload


def scan_offsets(path: str, check_crc: bool = True) -> list[tuple[int, int]]:
  """(offset, total_length) of every record in a TFRecord file, verifying framing."""
  out = []
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    off = 0
    while off < size:
      payload = read_record_at(f, off, path, check_crc)
      total = 16 + len(payload)
      out.append((off, total))
      off += total
  return out


def index_text(records: list[tuple[int, int]]) -> str:
  """Sidecar index in the `tfrecord` package's format: 'offset length' per line."""
  return "".join(f"{o} {n}\n" for o, n in records)


def write_index(records: list[tuple[int, int]], path: str) -> None:
  with open(path, "w") as f:
    f.write(index_text(records))


def read_index(path) -> list[tuple[int, int]]:
  """(offset, length) per record of a `.idx` sidecar (local or a URL); RecordError (one line,
  naming the file) unless every line is two integers describing contiguous records from 0."""
  from csr_jax import paths
  try:
    data = paths.resolve(path).read_bytes()
  except OSError as e:
    raise RecordError(f"{path}: cannot read the index ({e.strerror or e})") from None
  return parse_index(data, path)


def parse_index(data: bytes, path: str = "?") -> list[tuple[int, int]]:
  """`read_index` on the bytes of an index, for callers that read files themselves; `path`
  names it in errors."""
  try:
    text = data.decode("ascii")
  except UnicodeDecodeError as e:
    raise RecordError(f"{path}: not a text index (byte {e.start} is {e.object[e.start]:#04x})"
                      ) from None
  out, want = [], 0
  for i, line in enumerate(text.splitlines(), 1):
    try:
      off, n = (int(p) for p in line.split())
    except ValueError:
      raise RecordError(f"{path}: line {i} is not 'offset length': {line.strip()[:60]!r}"
                        ) from None
    if off != want or n < 16:
      raise RecordError(f"{path}: line {i}: record at offset {off} with length {n}, expected "
                        f"offset {want} and length >= 16")
    out.append((off, n))
    want = off + n
  return out


# ---- protobuf wire format (only what tf.train.Example needs) ----

def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1
  out = bytearray()
  while True:
    b = n & 0x7F
    n >>= 7
    if n:
      out.append(b | 0x80)
    else:
      out.append(b)
      return bytes(out)


def _ld(field: int, data: bytes) -> bytes:
  return _varint(field << 3 | 2) + _varint(len(data)) + data


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
  shift = result = 0
  while True:
    if pos >= len(buf):
      raise RecordError("truncated varint")
    b = buf[pos]
    pos += 1
    result |= (b & 0x7F) << shift
    if not b & 0x80:
      return result, pos
    shift += 7


def _fields(buf: memoryview):
  """Yields (field_number, wire_type, value) where value is an int or a memoryview."""
  pos = 0
  while pos < len(buf):
    key, pos = _read_varint(buf, pos)
    field, wt = key >> 3, key & 7
    if wt == 0:
      v, pos = _read_varint(buf, pos)
    elif wt == 2:
      n, pos = _read_varint(buf, pos)
      v, pos = buf[pos:pos + n], pos + n
    elif wt == 5:
      v, pos = buf[pos:pos + 4], pos + 4
    elif wt == 1:
      v, pos = buf[pos:pos + 8], pos + 8
    else:
      raise RecordError(f"unsupported wire type {wt}")
    yield field, wt, v


def encode_example(features: dict) -> bytes:
  """Serialises {name: bytes | str | int | float | list thereof} as a tf.train.Example.

  bytes/str -> bytes_list, int/bool -> int64_list, float -> float_list (packed, as TF writes).
  """
  entries = []
  for key in sorted(features):
    vals = features[key]
    vals = list(vals) if isinstance(vals, (list, tuple)) else [vals]
    if all(isinstance(v, (bytes, str)) for v in vals):
      body = b"".join(_ld(1, v.encode() if isinstance(v, str) else v) for v in vals)
      feat = _ld(1, body)
    elif all(isinstance(v, (bool, int)) for v in vals):
      feat = _ld(3, _ld(1, b"".join(_varint(int(v)) for v in vals)))
    elif all(isinstance(v, (int, float)) for v in vals):
      feat = _ld(2, _ld(1, struct.pack(f"<{len(vals)}f", *vals)))
    else:
      raise TypeError(f"feature {key!r}: unsupported value types {[type(v) for v in vals]}")
    entries.append(_ld(1, _ld(1, key.encode()) + _ld(2, feat)))
  return _ld(1, b"".join(entries))


def decode_example(data: bytes) -> dict:
  """tf.train.Example bytes -> {name: list of bytes | int | float}."""
  out = {}
  for f1, _, features in _fields(memoryview(data)):
    if f1 != 1:
      continue
    for f2, _, entry in _fields(features):
      if f2 != 1:
        continue
      key, feat = None, b""
      for f3, _, v in _fields(entry):
        if f3 == 1:
          key = bytes(v).decode()
        elif f3 == 2:
          feat = v
      vals = []
      for kind, _, lst in _fields(memoryview(feat)):
        for f5, wt, v in _fields(lst):
          if f5 != 1:
            continue
          if kind == 1:
            vals.append(bytes(v))
          elif kind == 2:
            raw = bytes(v)
            vals.extend(struct.unpack(f"<{len(raw) // 4}f", raw))
          elif kind == 3:
            if wt == 0:
              vals.append(v - (1 << 64) if v >= 1 << 63 else v)
            else:
              sub, p = memoryview(bytes(v)), 0
              while p < len(sub):
                n, p = _read_varint(sub, p)
                vals.append(n - (1 << 64) if n >= 1 << 63 else n)
      out[key] = vals
  return out


class TFRecordWriter:
  """Appends framed records to a file and remembers their (offset, length) for the index."""

  def __init__(self, path: str):
    self.path = path
    self._f = open(path, "wb")
    self.index: list[tuple[int, int]] = []

  def write(self, payload: bytes) -> None:
    rec = frame(payload)
    self.index.append((self._f.tell(), len(rec)))
    self._f.write(rec)

  def close(self) -> None:
    self._f.flush()
    os.fsync(self._f.fileno())
    self._f.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

