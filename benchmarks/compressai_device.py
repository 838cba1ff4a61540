"""compressai Cheng2020 on a GPU against the CPU: bitstreams, decoded images, cross-device decode.

  .venv/bin/python -m benchmarks.compressai_device [--device cuda] [--num_images 4]
      [--size 256] [--qualities 1,4] [--weights_dir DIR]

compressai's entropy coder (ANS) runs on CPU; its entropy parameters come from the networks,
and a decoder reproduces the encoder's symbols only when it computes the same parameters
(compressai asks for deterministic inference). For each Kodak crop, codec and quality this
prints: whether the GPU's bitstream equals the CPU's, whether the GPU's bitstream decodes on
CPU to the image the GPU decodes (what `--device cuda` checks at start on a probe image), the
pixels that differ otherwise, and the seconds of each path. Exit status 1 when any GPU
bitstream decodes differently on CPU: `--device cuda` then refuses to run, and prep must use
the CPU. Without weights (`--weights_dir`), untrained nets are used (timing and
determinism only, no meaningful bpp). Needs a CUDA GPU; without one it prints one line and
exits 2.
"""

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

from data_prep import codecs


def timed(fn, *a):
  import torch  # pylint: disable=g-import-not-at-top
  t = time.perf_counter()
  out = fn(*a)
  if torch.cuda.is_initialized():
    torch.cuda.synchronize()
  return out, time.perf_counter() - t


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--kodak_dir", type=Path, default=REPO.parent / "shared" / "datasets" / "kodak")
  p.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run of the script")
  p.add_argument("--num_images", type=int, default=4)
  p.add_argument("--size", type=int, default=256, help="square crop side (LR size)")
  p.add_argument("--codecs", default="cheng2020-anchor-mse,cheng2020-attn-mse")
  p.add_argument("--qualities", default="1,4")
  p.add_argument("--weights_dir", help="compressai weights; untrained nets without it")
  args = p.parse_args()
  try:
    codecs.check_device(args.device)
  except codecs.CodecUnavailable as e:
    print(f"cannot compare: {e}")
    raise SystemExit(2) from None
  import torch  # pylint: disable=g-import-not-at-top
  where = ("the CPU against itself (a dry run of this script)" if args.device == "cpu" else
           f"{torch.cuda.get_device_name()}, CUDA {torch.version.cuda}, cuDNN deterministic")
  print(f"torch {torch.__version__}, {where}; "
        f"{'trained' if args.weights_dir else 'untrained'} weights")
  crops = []
  for f in sorted(args.kodak_dir.glob("*.png"))[:args.num_images]:
    with Image.open(f) as im:
      a = np.asarray(im.convert("RGB"))
    crops.append((f.name, a[:args.size, :args.size]))
  print(f"{'codec':<22}{'q':>3} {'image':<12}{'same bits':>10}{'portable':>9}{'px diff':>8}"
        f"{'max':>5}{'cpu enc':>9}{'cpu dec':>9}{'gpu enc':>9}{'gpu dec':>9}")
  bad = 0
  for name in args.codecs.split(","):
    options = codecs.CodecOptions(weights_dir=args.weights_dir, untrained=not args.weights_dir,
                                  device=args.device)
    codec = codecs.make_codec(name, options)
    for q in (int(x) for x in args.qualities.split(",")):
      codec(crops[0][1][:64, :64], q)
      codec.compress(crops[0][1][:64, :64], q, "cpu")
      for fname, img in crops:
        size = img.shape[:2]
        (cs, shape, pad), t_ce = timed(codec.compress, img, q, "cpu")
        cpu_img, t_cd = timed(codec.decompress, cs, shape, pad, size, q, "cpu")
        (gs, gshape, gpad), t_ge = timed(codec.compress, img, q)
        gpu_img, t_gd = timed(codec.decompress, gs, gshape, gpad, size, q)
        on_cpu = codec.decompress(gs, gshape, gpad, size, q, "cpu")
        diff = np.abs(gpu_img.astype(int) - on_cpu)
        portable = np.array_equal(gpu_img, on_cpu)
        bad += not portable
        print(f"{name:<22}{q:>3} {fname:<12}{str(gs == cs):>10}{str(portable):>9}"
              f"{int(diff.any(-1).sum()):>8}{int(diff.max()):>5}{t_ce:>9.2f}{t_cd:>9.2f}"
              f"{t_ge:>9.2f}{t_gd:>9.2f}")
        if gs == cs and not np.array_equal(gpu_img, cpu_img):
          print("  same bitstream, different decode on the two devices")
  print(f"{bad} GPU bitstream(s) decode differently on CPU" if bad else
        "every GPU bitstream decodes on CPU to the GPU's own decode")
  raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
  main()
