"""launch/colab.ipynb runs unmodified on CPU: every code cell executes in a Jupyter kernel (a
subprocess), with the demo shrunk through the notebook's CSR_DEMO_ARGS knob. Then the README's
commands for the demo's output run on that output, as written, from the folder above it."""

import csv
import os
import re
import shlex

import nbformat
import numpy as np
from nbclient import NotebookClient
from PIL import Image

from csr_jax import metrics
from tests.conftest import REPO, run_module

SHRINK = ("--config.total_steps=2 --config.log_every=1 --config.eval_every=2 "
          "--config.checkpoint_every=2 --config.eval.max_images=1 --config.data.patch_size=16 "
          "--config.data.batch_size=2 --config.data.num_workers=0")


def test_colab_notebook_runs_on_cpu(tmp_path, monkeypatch):
  nb = nbformat.read(REPO / "launch" / "colab.ipynb", as_version=4)
  workdir = tmp_path / "demo"
  monkeypatch.setenv("CSR_REPO", str(REPO))
  monkeypatch.setenv("CSR_WORKDIR", str(workdir))
  monkeypatch.setenv("CSR_DEMO_ARGS", SHRINK)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  client = NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.outputs)
  assert "demo finished" in outputs and "cpu" in outputs
  report = (workdir / "report.md").read_text()
  assert "| bicubic |" in report and "| model |" in report
  assert (workdir / "curves.png").is_file() and os.listdir(workdir / "eval" / "grids")

  # The README block "Then, on what the demo wrote" on this demo's output (runs/demo -> demo).
  readme = (REPO / "README.md").read_text()
  block = readme.split("Then, on what the demo wrote")[1].split("```bash")[1].split("```")[0]
  commands = [shlex.split(c.replace("runs/demo", "demo"))
              for c in re.sub(r"\\\n\s*", " ", block).strip().splitlines()]
  assert len(commands) == 3
  for argv in commands:
    assert argv[:2] == [".venv/bin/python", "-m"], argv
    run_module(argv[2:], tmp_path)
  assert (tmp_path / "demo.pth").is_file()
  # The held-out inputs are the eval records' degraded LR, one PNG per codec setting; restore
  # wrote one x4 PNG for each. x4 and border 4 (= the scale, the SR papers' crop) are the demo's
  # protocol, stated here rather than read from the code that the test checks.
  held = sorted(os.listdir(workdir / "data" / "heldout_lr"))
  assert len(held) == 12 and all(re.fullmatch(r"kodim\d\d_hevc(32|37)\.png", n) for n in held)
  assert sorted(p for p in os.listdir(tmp_path / "restored") if p.endswith(".png")) == held
  with Image.open(workdir / "data" / "heldout_lr" / held[0]) as lr, \
       Image.open(tmp_path / "restored" / held[0]) as sr:
    assert sr.size == (4 * lr.width, 4 * lr.height)
  assert (workdir / "benchmark" / "table.md").is_file()
  # Same protocol (EMA, x8): each restored PNG is the image the benchmark scored.
  with open(workdir / "benchmark" / "per_image.csv") as f:
    scored = {(r["source"].rsplit(".", 1)[0], r["codec"] + r["quality"]): float(r["psnr_y"])
              for r in csv.DictReader(f) if r["method"] == "model"}
  assert len(scored) == 12
  for name in held[:2]:
    photo, setting = name[:-4].split("_")
    sr = np.asarray(Image.open(tmp_path / "restored" / name))
    hr = np.asarray(Image.open(workdir / "data" / "hr_eval" / f"{photo}.png").convert("RGB"))
    assert metrics.psnr(sr, hr, crop_border=4, y_channel=True) == scored[photo, setting]
