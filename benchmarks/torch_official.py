"""The unmodified official UCIP or PromptCIR train step on the first CUDA device (CPU without
one), timed with torch; run by `benchmarks/device_check.py --official PYTHON` under an
interpreter where torch (and, for UCIP, torchvision) import, with `../shared/oracle` on
PYTHONPATH. Prints one JSON line.

  python benchmarks/torch_official.py ucip|promptcir --batch 16 --patch 64 [--repeats 5]
"""

import argparse
import json
import statistics
import time

import torch

import official  # ../shared/oracle/official.py: builds the models from the official repositories


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("model", choices=["ucip", "promptcir"])
  ap.add_argument("--batch", type=int, required=True)
  ap.add_argument("--patch", type=int, required=True)
  ap.add_argument("--repeats", type=int, default=5)
  a = ap.parse_args()
  dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  torch.manual_seed(0)
  if a.model == "ucip":
    m, scale, extra = official.build_ucip(), 4, ([i % 6 for i in range(a.batch)],)
  else:
    m, scale, extra = official.build_promptcir(), 1, ()
  m = m.to(dev).train()
  opt = torch.optim.Adam(m.parameters(), lr=2e-4)
  x = torch.rand(a.batch, 3, a.patch, a.patch, device=dev)
  y = torch.rand(a.batch, 3, a.patch * scale, a.patch * scale, device=dev)

  def step():
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.l1_loss(m(x, *extra), y).backward()
    opt.step()
    if dev.type == "cuda":
      torch.cuda.synchronize()

  step()
  runs = []
  for _ in range(a.repeats):
    t0 = time.perf_counter()
    step()
    runs.append(time.perf_counter() - t0)
  s = statistics.median(runs)
  peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else None
  print(json.dumps({"family": a.model, "variant": "official PyTorch", "device": str(dev),
                    "torch": torch.__version__, "batch": a.batch, "step_s": s,
                    "images_per_s": a.batch / s, "peak_bytes": peak}))


if __name__ == "__main__":
  main()
