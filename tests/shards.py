"""Test data through the real prep code: HR images -> `data_prep.prepare` in this process.

Tests that need shards call `write_shards` instead of assembling records by hand, so they read
exactly what users' prep runs write (MATLAB-bicubic LR, real codecs, manifest, `.idx`).
"""

import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def kodak_u8(h: int, w: int, name: str = "kodim01", top: int = 0, left: int = 0) -> np.ndarray:
  """An h x w uint8 RGB crop of a shared Kodak image."""
  from tests.conftest import load_rgb, kodak_path  # pylint: disable=g-import-not-at-top
  crop = load_rgb(kodak_path(name))[top:top + h, left:left + w]
  assert crop.shape == (h, w, 3), f"crop {h}x{w} at ({top},{left}) of {name} is {crop.shape}"
  return crop


def kodak_crops(names, size: int, top: int = 100, left: int = 150) -> list:
  """(name, size x size uint8 crop) pairs of Kodak images, as `write_shards` takes them."""
  return [(n, kodak_u8(size, size, n, top, left)) for n in names]


def png_bytes(img: np.ndarray) -> bytes:
  """PNG bytes of a uint8 HW or HWC array."""
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, "PNG")
  return buf.getvalue()


def write_png(path, img: np.ndarray) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(png_bytes(img))
  return path


def write_shards(out_dir, hr, *, codec="jpeg:30", scale=4, name="kodak", split="test",
                 num_shards=1, extra=()) -> Path:
  """Runs `python -m data_prep.prepare` in-process on `hr` and returns `out_dir`.

  `hr`: image paths, or (name, uint8 HWC array) pairs written as `<name>.png`. `codec`: one
  `--codec` value or a list of them. Every image is kept (`--min_size 0`); `extra` adds flags.
  """
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  codecs = [codec] if isinstance(codec, str) else list(codec)
  with tempfile.TemporaryDirectory(prefix="hr_") as d:
    for item in hr:
      if isinstance(item, tuple):
        write_png(Path(d) / f"{item[0]}.png", item[1])
      else:
        (Path(d) / Path(item).name).symlink_to(Path(item).resolve())
    argv = ["--hr_dir", d, "--out", str(out_dir), "--scale", str(scale), "--name", name,
            "--split", split, "--num_shards", str(num_shards), "--workers", "0",
            "--min_size", "0"]
    for c in codecs:
      argv += ["--codec", c]
    prepare.main(argv + list(extra))
  return Path(out_dir)


def shard_paths(out_dir) -> list[str]:
  """The shard paths of every dataset under `out_dir`, from its manifest(s)."""
  from csr_jax.data import source  # pylint: disable=g-import-not-at-top
  return [p for paths in source.find_shards(str(out_dir)).values() for p in paths]
