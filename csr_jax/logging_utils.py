"""Training logs: console (steps/s, ETA), TensorBoard events, metrics.csv, and a curves PNG."""

import csv
import logging as pylogging
import os
import time

from absl import logging


class MetricLogger:
  """Writes scalars to TensorBoard (tensorboardX) and `metrics.csv`; only process 0 writes."""

  def __init__(self, workdir: str, total_steps: int, *, enabled: bool = True):
    self.workdir, self.total_steps, self.enabled = workdir, total_steps, enabled
    self.csv_path = os.path.join(workdir, "metrics.csv")
    self._writer = None
    self._t0, self._s0 = None, None
    if enabled:
      from tensorboardX import SummaryWriter
      os.makedirs(workdir, exist_ok=True)
      self._writer = SummaryWriter(os.path.join(workdir, "tb"))

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
    new = not os.path.exists(self.csv_path)
    with open(self.csv_path, "a", newline="") as f:
      w = csv.writer(f)
      if new:
        w.writerow(["step", "name", "value"])
      w.writerows([step, k, v] for k, v in scalars.items())

  def console(self, step: int, scalars: dict):
    rate = self.rate(step)
    eta = (self.total_steps - step) / rate if rate == rate and rate > 0 else float("nan")
    text = " ".join(f"{k}={float(v):.4g}" for k, v in scalars.items())
    logging.info("step %d/%d %s | %.2f steps/s | ETA %s", step, self.total_steps, text, rate,
                 _hms(eta))

  def close(self):
    if self._writer is not None:
      self._writer.close()


def _hms(seconds: float) -> str:
  if seconds != seconds:
    return "?"
  s = int(seconds)
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def read_csv(path: str) -> dict[str, list[tuple[int, float]]]:
  out = {}
  with open(path) as f:
    for row in csv.DictReader(f):
      out.setdefault(row["name"], []).append((int(row["step"]), float(row["value"])))
  return out


def plot_curves(workdir: str, loss_key: str = "train/loss", val_key: str = "val/psnr_y") -> str:
  """curves.png: training loss and validation PSNR(-Y) against steps (matplotlib Agg)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  series = read_csv(os.path.join(workdir, "metrics.csv"))
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for ax, key, ylabel in ((axes[0], loss_key, "train loss"), (axes[1], val_key, "val PSNR-Y (dB)")):
    pts = dict(series.get(key, []))  # a resumed run may log a step twice; keep the last value
    if pts:
      ax.plot(list(pts), list(pts.values()), marker="o" if len(pts) < 30 else None)
    if key == loss_key and pts and min(pts.values()) > 0:
      ax.set_yscale("log")  # the first steps' loss would flatten the rest
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  path = os.path.join(workdir, "curves.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


class _LibraryInfoFilter(pylogging.Filter):
  """Drops INFO chatter of Orbax and Grain (one line per file written); keeps their warnings."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or not any(
        s in record.pathname for s in ("/orbax/", "/grain/"))


def quiet_libraries():
  pylogging.getLogger("absl").addFilter(_LibraryInfoFilter())
