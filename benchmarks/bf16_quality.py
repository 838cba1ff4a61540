"""bfloat16 against float32 compute, in PSNR, on a trained workdir's held-out images.

  python -m benchmarks.bf16_quality --checkpoint runs/demo --data runs/demo/data/eval [--ema]

Evaluates the checkpoint twice with the family's own protocol (padding, tiles, channel, border):
once in float32 and once with `model.dtype='bfloat16'` (bf16 copies of the float32 params and
input for the forward; norms, softmax and attention logits in float32). Prints both mean PSNRs
on the family's channel, their difference, the largest per-image PSNR difference and the largest
output pixel difference (in 8-bit levels).
"""

import argparse

import numpy as np
from flax import nnx

from csr_jax import evaluate, inference, logging_utils, report, weights
from csr_jax.data import pipeline


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--checkpoint", required=True, help="workdir, step dir or params dir")
  ap.add_argument("--data", required=True, help="prepared eval shards")
  ap.add_argument("--ema", action="store_true")
  ap.add_argument("--limit", type=int, default=None, help="images per dataset")
  args = ap.parse_args()
  logging_utils.quiet_libraries()
  r, model = weights.model_from(args.checkpoint, item="ema" if args.ema else "params")
  spec, ev = r.spec, r.spec.evaluation
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params = nnx.to_pure_dict(params)
  datasets = report.find_datasets(args.data)
  scale = report.dataset_scale(datasets)
  metric = "psnr_y" if ev.channel == "y" else "psnr"
  res = {}
  for dtype in ("float32", "bfloat16"):
    fwd = inference.make_forward(spec, graphdef, rest, dtype=dtype)
    outs = []  # every forward's output, in call order, for the pixel comparison

    def predict(x, tid, fwd=fwd, outs=outs):
      outs.append(inference.Predictor(fwd, params, tid)(x))
      return outs[-1]

    rows = []
    for shards in datasets.values():
      examples = pipeline.eval_dataset(shards, args.limit, keys=("hr", "lr"), task_ids=r.task_ids)
      rows += evaluate.evaluate_pairs(predict, examples, scale=scale, ev=ev,
                                      protocol=spec.inference, baseline=False)[0]
    res[dtype] = (np.array([row[metric] for row in rows]), outs)
  (p32, o32), (p16, o16) = res["float32"], res["bfloat16"]
  pix = max(float(np.abs(np.clip(a["image"], 0, 1) - np.clip(b["image"], 0, 1)).max())
            for a, b in zip(o32, o16)) * 255
  print(f"{r.name} {r.variant}{' (EMA)' if args.ema else ''}, {len(p32)} images, {metric}: "
        f"float32 {p32.mean():.4f} dB, bfloat16 {p16.mean():.4f} dB, difference "
        f"{p16.mean() - p32.mean():+.4f} dB; largest per-image |difference| "
        f"{np.abs(p16 - p32).max():.4f} dB; largest pixel difference {pix:.2f} / 255")


if __name__ == "__main__":
  main()
