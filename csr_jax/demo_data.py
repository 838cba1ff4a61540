"""Data for the demo: train on photos, evaluate on six held-out Kodak images.

The training photos are scikit-image's bundled colour photos plus the 18 Kodak images that are
not held out (when `../shared/datasets/kodak` exists; else two scikit-image photos are held
out instead). Both sets go through the real prep step (`python -m data_prep.prepare`, its own
process: it imports torch) with the demo's codec grid, so the demo exercises the same files as
real runs.
"""

import contextlib
import io
import os
import subprocess
import sys

import numpy as np
from absl import logging
from PIL import Image

from csr_jax import paths
from csr_jax.data import source

REPO = paths.resolve(__file__).parent.parent
# Colour photos only: grey textures (camera, grass, ...) taught a 500-step run to desaturate.
COLOR = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
HELD_OUT = ("hubble_deep_field", "colorwheel")  # eval set when Kodak is missing
KODAK = ("kodim01", "kodim03", "kodim05", "kodim13", "kodim19", "kodim23")


def kodak_dir():
  return paths.resolve(os.environ.get("CSR_SHARED", REPO.parent / "shared")) / "datasets" / "kodak"


def write_photos(names, out):
  import skimage.data
  out.mkdir(parents=True, exist_ok=True)
  for n in names:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(getattr(skimage.data, n)())[..., :3]).save(buf, format="PNG")
    (out / f"{n}.png").write_bytes(buf.getvalue())
  return out


def link_kodak(names, out):
  out.mkdir(parents=True, exist_ok=True)
  for n in names:
    src, dst = kodak_dir() / f"{n}.png", out / f"{n}.png"
    if not src.is_file():
      raise FileNotFoundError(f"{src}: Kodak image missing")
    if not dst.exists():
      dst.write_bytes(src.read_bytes())
  return out


def write_heldout_inputs(eval_dir, out):
  """The held-out photos as a user would bring them: each degraded LR of the prepared eval
  records (the demo's codec at each quality) as a PNG `<photo>_<codec><quality>.png`, the input
  of the demo's closing `python -m csr_jax.restore`; its outputs are the images the report
  scores."""
  out.mkdir(parents=True, exist_ok=True)
  shards = [p for ps in source.find_shards(eval_dir).values() for p in ps]
  with contextlib.closing(source.TFRecordSource(shards)) as recs:
    for i in range(len(recs)):
      ex = source.decode(recs[i], keys=("lr",))
      stem = ex["source"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
      Image.fromarray(ex["lr"]).save(out / f"{stem}_{ex['codec']}{int(ex['quality'])}.png")
  return out


def prepare(hr_dir, out, *, name: str, split: str, scale: int, codec: str,
            num_shards: int = 1, workers: int = 1):
  """Runs the prep step in a subprocess (argv list, no shell); a finished set is reused."""
  argv = [sys.executable, "-m", "data_prep.prepare", "--hr_dir", str(hr_dir), "--out", str(out),
          "--scale", str(scale), "--codec", codec, "--num_shards", str(num_shards),
          "--workers", str(workers), "--name", name, "--split", split]
  logging.info("preparing %s/%s: %s", name, split, " ".join(argv[1:]))
  res = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
  if res.returncode:
    raise RuntimeError(f"data_prep.prepare failed for {hr_dir} ({res.returncode}):\n"
                       f"{res.stderr[-2000:]}")
  return out


def setup(config, data_dir: str) -> None:
  """Builds (or reuses) the demo sets under `data_dir` with the codec grid
  `config.data.demo_codec` and points `config.data` at them."""
  root = paths.resolve(data_dir)
  codec = config.data.demo_codec
  scale = config.data.scale
  hr_train = write_photos(COLOR, root / "hr_train")
  if kodak_dir().is_dir():
    link_kodak(sorted(p.name[:-4] for p in kodak_dir().iterdir()
                      if p.name.endswith(".png") and p.name[:-4] not in KODAK), hr_train)
  train = prepare(hr_train, root / "train", name="photos", split="train", scale=scale,
                  codec=codec, num_shards=2)
  if kodak_dir().is_dir():
    hr_eval, name = link_kodak(KODAK, root / "hr_eval"), "kodak"
  else:
    hr_eval, name = write_photos(HELD_OUT, root / "hr_eval"), "heldout"
  evals = prepare(hr_eval, root / "eval", name=name, split=config.data.eval_split, scale=scale,
                  codec=codec)
  write_heldout_inputs(evals, root / "heldout_lr")
  config.data.train_dir, config.data.train_name = str(train), "photos"
  config.data.eval_dir, config.data.eval_name = str(evals), name
