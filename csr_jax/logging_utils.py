"""Training logs: console (steps/s, ETA), TensorBoard events, metrics.csv, and a curves PNG.

tensorboardX and matplotlib write local files: for a workdir on cloud storage they write to a
local directory that `flush()` (at each checkpoint) and `close()` copy to the workdir.
"""

import csv
import io
import logging as pylogging
import time
import warnings

from absl import logging

from csr_jax import paths


class MetricLogger:
  """Writes scalars to TensorBoard (tensorboardX) and `metrics.csv`; only process 0 writes."""

  def __init__(self, workdir, total_steps: int, *, enabled: bool = True):
    self.workdir, self.total_steps, self.enabled = paths.resolve(workdir), total_steps, enabled
    self._writer = None
    self._t0, self._s0 = None, None
    if enabled:
      from tensorboardX import SummaryWriter
      self._local = paths.local_dir(self.workdir)
      self._writer = SummaryWriter(str(paths.resolve(self._local) / "tb"))
      self.csv_path = paths.resolve(self._local) / "metrics.csv"

  def start(self, step: int):
    """Marks the first step whose time counts (after compilation)."""
    self._t0, self._s0 = time.perf_counter(), step

  def rate(self, step: int) -> float:
    if self._t0 is None or step <= self._s0:
      return float("nan")
    return (step - self._s0) / (time.perf_counter() - self._t0)

  def write(self, step: int, scalars: dict, prefix: str = "train"):
    scalars = {f"{prefix}/{k}": float(v) for k, v in scalars.items()}
    if not self.enabled:
      return
    for k, v in scalars.items():
      self._writer.add_scalar(k, v, step)
    new = not self.csv_path.exists()
    buf = io.StringIO()
    w = csv.writer(buf)
    if new:
      w.writerow(["step", "name", "value"])
    w.writerows([step, k, v] for k, v in scalars.items())
    with self.csv_path.open("a") as f:
      f.write(buf.getvalue())

  def console(self, step: int, scalars: dict):
    rate = self.rate(step)
    eta = (self.total_steps - step) / rate if rate == rate and rate > 0 else float("nan")
    text = " ".join(f"{k}={float(v):.4g}" for k, v in scalars.items())
    logging.info("step %d/%d %s | %.2f steps/s | ETA %s", step, self.total_steps, text, rate,
                 _hms(eta))

  def flush(self):
    """Copies the local logs to a workdir on cloud storage (a no-op for local workdirs)."""
    if self.enabled:
      self._writer.flush()
      if paths.is_url(self.workdir):
        paths.copy_tree(self._local, self.workdir)

  def close(self):
    if self._writer is not None:
      self._writer.close()
      self.flush()


def _hms(seconds: float) -> str:
  if seconds != seconds:
    return "?"
  s = int(seconds)
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def read_csv(path) -> dict[str, list[tuple[int, float]]]:
  out = {}
  for row in csv.DictReader(io.StringIO(paths.resolve(path).read_text())):
    out.setdefault(row["name"], []).append((int(row["step"]), float(row["value"])))
  return out


def plot_curves(workdir, loss_key: str = "train/loss_mean", val_key: str = "val/psnr_y"):
  """curves.png: training loss (by default its mean between log steps, as one batch's loss is
  noisy) and the validation metric against steps (matplotlib Agg)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  workdir = paths.resolve(workdir)
  series = read_csv(workdir / "metrics.csv")
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  labels = (f"train {loss_key.split('/')[-1]}", f"validation {val_key.split('/')[-1]}")
  for ax, key, ylabel in zip(axes, (loss_key, val_key), labels):
    pts = dict(series.get(key, []))  # a resumed run may log a step twice; keep the last value
    if pts:
      ax.plot(list(pts), list(pts.values()), marker="o" if len(pts) < 30 else None)
    if key == loss_key and pts and min(pts.values()) > 0:
      ax.set_yscale("log")  # the first steps' loss would flatten the rest
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  plt.close(fig)
  path = workdir / "curves.png"
  path.write_bytes(buf.getvalue())
  return path


class _LibraryInfoFilter(pylogging.Filter):
  """Drops INFO chatter of Orbax and Grain (one line per file written) and Orbax's warning
  that a step's item directory has no step metadata (reading one item is what we mean)."""

  def filter(self, record):
    if "Metadata file does not exist" in str(record.msg):
      return False
    return record.levelno >= pylogging.WARNING or not any(
        s in record.pathname for s in ("/orbax/", "/grain/"))


def quiet_libraries():
  pylogging.getLogger("absl").addFilter(_LibraryInfoFilter())
  # tensorboardX imports google.cloud.storage when it is installed (gcsfs brings it), whose
  # grpcio version notices are about Google's 2027 plans, not this run.
  warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
