"""csr_jax.data.records against the independent `tfrecord` package (crc32c + protobuf)."""

import struct

import pytest

from csr_jax.data import records
from tests.shards import kodak_u8, png_bytes


def read_all_checked(path) -> list[bytes]:
  """Every payload of a TFRecord file through the `tfrecord` package, CRCs verified with its
  own crc32c implementation (the reader itself skips CRCs)."""
  from tfrecord.reader import tfrecord_iterator  # pylint: disable=g-import-not-at-top
  from tfrecord.writer import TFRecordWriter  # pylint: disable=g-import-not-at-top
  payloads = [bytes(p) for p in tfrecord_iterator(str(path))]
  with open(path, "rb") as f:
    data = f.read()
  off = 0
  for p in payloads:
    header = data[off:off + 8]
    assert data[off + 8:off + 12] == TFRecordWriter.masked_crc(header), f"{path}@{off}: len crc"
    (n,) = struct.unpack("<Q", header)
    assert data[off + 12:off + 12 + n] == p
    assert data[off + 12 + n:off + 16 + n] == TFRecordWriter.masked_crc(p), f"{path}@{off}: crc"
    off += 16 + n
  assert off == len(data), f"{path}: trailing bytes after the last record"
  return payloads


def parse_pb(payload: bytes) -> dict:
  """tf.train.Example bytes -> {name: list} via the protobuf classes shipped with `tfrecord`."""
  from tfrecord import example_pb2  # pylint: disable=g-import-not-at-top
  ex = example_pb2.Example.FromString(payload)
  out = {}
  for k, f in ex.features.feature.items():
    kind = f.WhichOneof("kind")
    out[k] = list(getattr(f, kind).value) if kind else []
  return out


@pytest.fixture(scope="module")
def kodak_png() -> bytes:
  return png_bytes(kodak_u8(32, 48, "kodim03"))


def _features(png, i):
  return {"hr_png": png, "codec": "jpeg", "quality": 10 + i, "scale": 4, "bpp": 0.75 + i,
          "source": f"kodim03_{i}.png", "neg": [-1, -(1 << 40), (1 << 62)], "multi": [1.5, -2.25],
          "names": [b"a", b"", b"\x00\xff"]}


def test_writer_read_by_tfrecord_package(tmp_path, kodak_png):
  path = tmp_path / "x.tfrecord"
  with records.TFRecordWriter(str(path)) as w:
    for i in range(3):
      w.write(records.encode_example(_features(kodak_png, i)))
  payloads = read_all_checked(path)
  assert len(payloads) == 3
  for i, p in enumerate(payloads):
    got = parse_pb(p)
    want = _features(kodak_png, i)
    assert got["hr_png"] == [kodak_png]
    assert got["codec"] == [b"jpeg"] and got["source"] == [f"kodim03_{i}.png".encode()]
    assert got["quality"] == [10 + i] and got["scale"] == [4]
    assert got["bpp"] == pytest.approx([0.75 + i])
    assert got["neg"] == want["neg"] and got["multi"] == [1.5, -2.25]
    assert got["names"] == want["names"]
    # Our own decoder agrees with protobuf on every feature.
    assert records.decode_example(p) == got
  # The package's index tool produces exactly the sidecar we write.
  from tfrecord.tools.tfrecord2idx import create_index  # pylint: disable=g-import-not-at-top
  create_index(str(path), str(tmp_path / "pkg.idx"))
  records.write_index(w.index, str(tmp_path / "ours.idx"))
  assert (tmp_path / "pkg.idx").read_text() == (tmp_path / "ours.idx").read_text()
  assert records.read_index(str(tmp_path / "ours.idx")) == records.scan_offsets(str(path))


def test_example_bytes_equal_protobuf_deterministic_serialization(kodak_png):
  from tfrecord import example_pb2  # pylint: disable=g-import-not-at-top
  ours = records.encode_example(_features(kodak_png, 1))
  assert example_pb2.Example.FromString(ours).SerializeToString(deterministic=True) == ours


def test_reads_files_written_by_tfrecord_package(tmp_path, kodak_png):
  from tfrecord.writer import TFRecordWriter  # pylint: disable=g-import-not-at-top
  path = tmp_path / "pkg.tfrecord"
  w = TFRecordWriter(str(path))
  for i in range(2):
    w.write({"hr_png": (kodak_png, "byte"), "quality": (i * 5, "int"), "bpp": (0.5, "float")})
  w.close()
  offsets = records.scan_offsets(str(path))  # CRC-checked
  assert len(offsets) == 2
  with open(path, "rb") as f:
    for i, (off, _) in enumerate(offsets):
      got = records.decode_example(records.read_record_at(f, off, str(path)))
      assert got == {"hr_png": [kodak_png], "quality": [i * 5], "bpp": [0.5]}


def test_corruption_is_reported_with_file_name(tmp_path, kodak_png):
  path = tmp_path / "bad.tfrecord"
  with records.TFRecordWriter(str(path)) as w:
    w.write(records.encode_example(_features(kodak_png, 0)))
  data = bytearray(path.read_bytes())
  data[40] ^= 0x01
  path.write_bytes(bytes(data))
  with pytest.raises(records.RecordError, match="bad.tfrecord: bad payload CRC at offset 0"):
    records.scan_offsets(str(path))
  path.write_bytes(bytes(data[:100]))
  with pytest.raises(records.RecordError, match="bad.tfrecord: truncated record"):
    records.scan_offsets(str(path))
  data[0] ^= 0x01
  path.write_bytes(bytes(data))
  with pytest.raises(records.RecordError, match="bad length CRC"):
    records.scan_offsets(str(path))
