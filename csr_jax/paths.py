"""The one path type for everything a run reads and writes: `etils.epath.Path`.

Every path a user passes (workdirs, checkpoints, data, outputs, `init_from`) goes through
`resolve` once, at the boundary: '~' is expanded and a relative path becomes absolute against
the current directory, so that Orbax, Grain workers and subprocesses never depend on the cwd;
symlinks are kept as given; URLs (`gs://`, `s3://`, ...) pass unchanged, and epath reaches
them through its fsspec/gfile backends. Only this module touches `os.path`.
"""

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
  src, dst = resolve(src), resolve(dst)
  for f in src.rglob("*"):
    if f.is_file():
      target = dst / os.path.relpath(os.fspath(f), os.fspath(src))
      target.parent.mkdir(parents=True, exist_ok=True)
      target.write_bytes(f.read_bytes())


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
