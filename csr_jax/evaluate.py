"""Scoring restored images against their references, as each family's paper scores them.

`evaluate_pairs` runs a predictor over whole-image examples through `inference.infer` (the
family's pad / tile / ensemble protocol), quantises to uint8 as the official test scripts do,
and measures PSNR/SSIM on RGB and on Y (BT.601), PSNR-B when the family's `Evaluation` asks
(on its channel), the bicubic baseline, and every named extra output (e.g. the per-step
estimates of an unfolded model) against the example image its family names. An example that cannot be evaluated
(too small, mismatched shapes, a codec without a prompt) is skipped with a one-line reason.
"""

from typing import Callable, Iterable

import numpy as np
from PIL import Image

from csr_jax import inference
from csr_jax import metrics
from csr_jax.family import Evaluation, Inference


def to_uint8(x) -> np.ndarray:
  """[0, 1] float -> uint8 with clipping and rounding (the official test scripts' order)."""
  return np.clip(np.round(np.asarray(x, np.float64) * 255.0), 0, 255).astype(np.uint8)


def bicubic_upscale(lr_uint8: np.ndarray, scale: int) -> np.ndarray:
  """The 'bicubic' baseline: Pillow BICUBIC (Keys a = -0.5, as MATLAB imresize) upscaling."""
  if scale == 1:
    return np.asarray(lr_uint8)
  h, w = lr_uint8.shape[:2]
  img = Image.fromarray(np.asarray(lr_uint8))
  return np.asarray(img.resize((w * scale, h * scale), Image.Resampling.BICUBIC))


def table_metrics(ev: Evaluation) -> list[str]:
  """The columns a family's paper reports, on its channel."""
  suffix = "_y" if ev.channel == "y" else ""
  return [f"psnr{suffix}", f"ssim{suffix}"] + ([f"psnr_b{suffix}"] if ev.psnr_b else [])


def image_metrics(out_u8, hr_u8, *, crop_border: int, ev: Evaluation = Evaluation()) -> dict:
  """PSNR/SSIM on RGB and Y, and PSNR-B on the family's channel when it asks, for a uint8 pair."""
  m = {"psnr": metrics.psnr(out_u8, hr_u8, crop_border),
       "ssim": metrics.ssim(out_u8, hr_u8, crop_border),
       "psnr_y": metrics.psnr(out_u8, hr_u8, crop_border, y_channel=True),
       "ssim_y": metrics.ssim(out_u8, hr_u8, crop_border, y_channel=True)}
  if ev.psnr_b:
    key = "psnr_b_y" if ev.channel == "y" else "psnr_b"
    m[key] = metrics.psnr_b(out_u8, hr_u8, crop_border, y_channel=ev.channel == "y")
  return m


def default_border(ev: Evaluation, scale: int) -> int:
  """The family's border, else the scale (SR papers), 0 at x1 (restoration keeps its 8x8
  grid)."""
  if ev.crop_border is not None:
    return ev.crop_border
  return scale if scale > 1 else 0


def evaluate_example(predict: Callable, ex: dict, *, scale: int, ev: Evaluation,
                     protocol: Inference, crop_border: int, baseline: bool = True,
                     extra_target: Callable | None = None, tile_batch: int = 1):
  """(rows, model uint8 image, bicubic uint8 image or None) of one example; raises ValueError
  (with the reason) when the example cannot be evaluated."""
  lr, hr = np.asarray(ex["lr"]), np.asarray(ex["hr"])
  if lr.dtype != np.uint8 or hr.dtype != np.uint8 or lr.ndim != 3 or hr.ndim != 3:
    raise ValueError(f"lr/hr must be uint8 HWC, got {lr.dtype}{lr.shape} and {hr.dtype}{hr.shape}")
  if int(ex.get("scale", scale)) != scale:
    raise ValueError(f"example scale {ex['scale']} != evaluation scale {scale}")
  if hr.shape != (lr.shape[0] * scale, lr.shape[1] * scale, lr.shape[2]):
    raise ValueError(f"hr shape {hr.shape} is not lr shape {lr.shape} x{scale}")
  if min(hr.shape[:2]) - 2 * crop_border < 11:
    raise ValueError(f"{hr.shape[1]}x{hr.shape[0]} is too small to score (SSIM needs 11x11 "
                     f"pixels inside the {crop_border}-pixel border)")
  tid = ex.get("task_id", 0)
  if isinstance(tid, str):  # the pipeline found no prompt for this codec
    raise ValueError(tid)
  tid = int(tid)
  outs = inference.infer(lambda x: predict(x, tid), lr[None].astype(np.float32) / 255.0,
                         protocol, tile_batch=tile_batch)
  sr_u8 = to_uint8(outs.pop("image")[0])
  meta = {"source": str(ex.get("source", "")), "codec": str(ex.get("codec", "")),
          "quality": int(ex.get("quality", -1))}
  row = {**meta, "method": "model", **image_metrics(sr_u8, hr, crop_border=crop_border, ev=ev)}
  for name, out in outs.items():  # extras, scored against the image their family names
    ref = np.asarray(ex[extra_target(name)])
    border = crop_border * ref.shape[0] // hr.shape[0]
    row[f"psnr{'_y' if ev.channel == 'y' else ''}_{name}"] = metrics.psnr(
        to_uint8(out[0]), ref, border, y_channel=ev.channel == "y")
  rows = [row]
  bic = bicubic_upscale(lr, scale) if baseline else None
  if baseline:
    rows.append({**meta, "method": "bicubic",
                 **image_metrics(bic, hr, crop_border=crop_border, ev=ev)})
  return rows, sr_u8, bic


def evaluate_pairs(predict: Callable, examples: Iterable[dict], *, scale: int,
                   ev: Evaluation = Evaluation(), protocol: Inference = Inference(),
                   crop_border: int | None = None, baseline: bool = True,
                   on_image: Callable | None = None, extra_target: Callable | None = None,
                   tile_batch: int = 1) -> tuple[list[dict], dict, list[tuple[str, str]]]:
  """(rows, {method: {metric: mean}}, skipped [(source, reason)]) over whole-image examples.

  `predict(x_nhwc, task_id)` returns {'image', **extras} for an NHWC float batch; examples are
  dicts with uint8 HWC `lr`, `hr` (and `lr_clean` for extras scored against it), `codec`,
  `quality`, `task_id`, `source`. `on_image(example, sr_uint8, bicubic_uint8)` sees every
  output (for image grids)."""
  border = default_border(ev, scale) if crop_border is None else crop_border
  rows, skipped = [], []
  for n, ex in enumerate(examples):
    src = str(ex.get("source") or f"#{n}")
    try:
      ex_rows, sr, bic = evaluate_example(predict, ex, scale=scale, ev=ev, protocol=protocol,
                                          crop_border=border, baseline=baseline or bool(on_image),
                                          extra_target=extra_target, tile_batch=tile_batch)
    except (ValueError, KeyError) as exc:
      skipped.append((src, str(exc.args[0]) if exc.args else type(exc).__name__))
      continue
    rows += [r for r in ex_rows if baseline or r["method"] == "model"]
    if on_image is not None:
      on_image(ex, sr, bic)
  return rows, mean_rows(rows), skipped


def mean_rows(rows: list[dict]) -> dict:
  """{method: {metric: mean over rows}} for the float (metric) columns of `rows`."""
  out = {}
  for method in dict.fromkeys(r["method"] for r in rows):
    sel = [r for r in rows if r["method"] == method]
    keys = [k for k, v in sel[0].items() if isinstance(v, float)]
    out[method] = {k: float(np.mean([r[k] for r in sel])) for k in keys}
  return out
