"""launch/colab.ipynb runs unmodified on CPU: every code cell executes in a Jupyter kernel (a
subprocess), with the demo shrunk through the notebook's CSR_DEMO_ARGS knob."""

import os

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO

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
