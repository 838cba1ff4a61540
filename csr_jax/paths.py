"""The one path type for everything a run reads and writes: `etils.epath.Path`.

Every path a user passes (workdirs, checkpoints, data, outputs, `init_from`) goes through
`resolve` once, at the boundary: '~' is expanded and a relative path becomes absolute against
the current directory, so that Orbax, Grain workers and subprocesses never depend on the cwd;
symlinks are kept as given; URLs (`gs://`, `s3://`, ...) pass unchanged, and epath reaches
them through its fsspec/gfile backends. Only this module touches `os.path`.
"""

import glob
import hashlib
import os
import tempfile

from etils import epath

Path = epath.Path


def is_url(path) -> bool:
  return "://" in os.fspath(path)


def resolve(path) -> epath.Path:
  """A user path as an absolute epath.Path (URLs unchanged)."""
  text = os.fspath(path)
  if not text:
    raise ValueError("empty path")
  if is_url(text):
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def write_text(path, text: str) -> epath.Path:
  """Writes `text` to `path` atomically on local disks (temp file + rename); object stores
  write whole objects anyway."""
  path = resolve(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if is_url(path):
    path.write_text(text)
    return path
  tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
  tmp.write_text(text)
  tmp.replace(path)
  return path


def local_dir(path, prefix: str = "csr_jax-") -> str:
  """A local directory standing in for `path` (tools that only write local files, such as
  tensorboardX): `path` itself when local, else a fresh temporary directory to copy from."""
  if is_url(path):
    return tempfile.mkdtemp(prefix=prefix)
  resolve(path).mkdir(parents=True, exist_ok=True)
  return os.fspath(resolve(path))


def copy_tree(src: str, dst) -> None:
  """Copies the files under local `src` to `dst` (local or URL), overwriting."""
  dst = resolve(dst)
  for folder, _, files in os.walk(os.fspath(resolve(src))):
    rel = os.path.relpath(folder, os.fspath(resolve(src)))
    for name in files:
      target = dst / name if rel == "." else dst / rel / name
      target.parent.mkdir(parents=True, exist_ok=True)
      target.write_bytes(resolve(os.path.join(folder, name)).read_bytes())


class Reader:
  """Positioned reads of one file (`seek`/`read`, what `records.read_record_at` needs), safe to
  share between threads (Grain reads in several): `os.pread` on a local file, a per-thread
  epath handle on object stores. Opened lazily, so it can be pickled into worker processes."""

  def __init__(self, path):
    self.path = resolve(path)
    self._fd, self._handles, self.pos = None, {}, 0

  def __getstate__(self):
    return {"path": self.path, "_fd": None, "_handles": {}, "pos": 0}

  def pread(self, n: int, offset: int) -> bytes:
    if not is_url(self.path):
      if self._fd is None:
        self._fd = os.open(os.fspath(self.path), os.O_RDONLY)
      return os.pread(self._fd, n, offset)
    import threading
    f = self._handles.get(threading.get_ident())
    if f is None:
      f = self._handles[threading.get_ident()] = self.path.open("rb")
    f.seek(offset)
    return f.read(n)

  def at(self, offset: int) -> "_Cursor":
    return _Cursor(self, offset)

  def close(self) -> None:
    if self._fd is not None:
      os.close(self._fd)
    for f in self._handles.values():
      f.close()
    self._fd, self._handles = None, {}


class _Cursor:
  """A file-like view (seek/read) over a Reader for one record read."""

  def __init__(self, reader: Reader, pos: int):
    self.reader, self.pos = reader, pos

  def seek(self, pos: int) -> None:
    self.pos = pos

  def read(self, n: int) -> bytes:
    data = self.reader.pread(n, self.pos)
    self.pos += len(data)
    return data


def sha256(path) -> str:
  """Hex sha256 of a file's bytes, read in 1 MiB blocks (local or URL)."""
  h = hashlib.sha256()
  with resolve(path).open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def glob_files(pattern) -> list[epath.Path]:
  """Files matching a glob, '**' included: epath globs object stores itself (without '**'),
  Python's glob does local paths."""
  where = resolve(pattern)
  parts = os.fspath(where).split(os.sep)
  k = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
  base = resolve(os.sep.join(parts[:k]) or os.sep)
  if is_url(where):
    return sorted(f for f in base.glob(os.sep.join(parts[k:])) if f.is_file())
  return sorted(resolve(f) for f in glob.glob(os.fspath(where), recursive=True)
                if os.path.isfile(f))


def with_suffix(rel: str, suffix: str) -> str:
  """A relative name with its extension (if any) replaced by `suffix`."""
  return os.path.splitext(rel)[0] + suffix


def relpath(path, start) -> str:
  """`path` relative to `start` (report links), '/'-separated."""
  return os.path.relpath(os.fspath(path), os.fspath(start)).replace(os.sep, "/")


def display(path) -> str:
  """How a path appears in messages: as the user would type it from the cwd when it is inside
  the cwd, else absolute."""
  text = os.fspath(path)
  if is_url(text):
    return text
  rel = os.path.relpath(text)
  return text if rel.startswith("..") else rel
