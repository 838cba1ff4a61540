"""Whole-image inference (pad, tile, self-ensemble) and per-image evaluation of LR/HR pairs.

`infer` keeps compiled shapes few: an image is padded to the model's multiple (and to at least
one tile), and every tile has the same size, so one compilation serves all tiles of all images
tiled with the same settings. Overlaps are blended by count-weighted averaging, as the
PromptCIR/HAT tile code does.
"""

import itertools
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from csr_jax import metrics

_PAD_MODES = {"reflect": "reflect", "flip": "symmetric"}


def _ceil_to(n: int, m: int) -> int:
  return -(-n // m) * m


def pad_to(x: np.ndarray, height: int, width: int, mode: str = "reflect") -> np.ndarray:
  """Pads NHWC `x` at the bottom/right to (height, width).

  'reflect' mirrors without repeating the edge (torch F.pad 'reflect', HAT/UCIP test code);
  'flip' mirrors with the edge (PromptCIR's cat([x, flip(x)]) padding).
  """
  if mode not in _PAD_MODES:
    raise ValueError(f"pad_mode must be one of {sorted(_PAD_MODES)}, got {mode!r}")
  ph, pw = height - x.shape[1], width - x.shape[2]
  if ph < 0 or pw < 0:
    raise ValueError(f"cannot pad shape {x.shape} down to {(height, width)}")
  if mode == "reflect" and min(x.shape[1:3]) < 2 and (ph or pw):
    raise ValueError(f"reflect padding needs at least 2x2 pixels, got shape {x.shape}")
  return np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=_PAD_MODES[mode])


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
  """Tile origins along one axis: stride tile - overlap, the last tile flush with the end."""
  if size <= tile:
    return [0]
  return list(range(0, size - tile, tile - overlap)) + [size - tile]


def _check_out(y, x_shape, scale: int):
  y = np.asarray(y, np.float32)
  want = (x_shape[0], x_shape[1] * scale, x_shape[2] * scale)
  if y.ndim != 4 or y.shape[:3] != want:
    raise ValueError(f"apply_fn returned shape {y.shape} for input {x_shape} with scale "
                     f"{scale}; expected {want + (y.shape[-1] if y.ndim == 4 else 3,)}")
  return y


def _run_tiled(apply_fn, x, scale: int, tile: int, overlap: int, tile_batch: int):
  b, h, w, _ = x.shape
  boxes = list(itertools.product(tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)))
  acc = cnt = None
  for k in range(0, len(boxes), tile_batch):
    group = boxes[k:k + tile_batch]
    crops = [x[:, i:i + tile, j:j + tile] for i, j in group]
    crops += [crops[-1]] * (tile_batch - len(group))  # a fixed batch keeps one compiled shape
    inp = np.concatenate(crops, axis=0)
    out = _check_out(apply_fn(inp), inp.shape, scale)
    if acc is None:
      acc = np.zeros((b, h * scale, w * scale, out.shape[-1]), np.float32)
      cnt = np.zeros((1, h * scale, w * scale, 1), np.float32)
    t = tile * scale
    for n, (i, j) in enumerate(group):
      acc[:, i * scale:i * scale + t, j * scale:j * scale + t] += out[n * b:(n + 1) * b]
      cnt[:, i * scale:i * scale + t, j * scale:j * scale + t] += 1.0
  return acc / cnt


def _infer_once(apply_fn, x, scale, multiple, tile, tile_overlap, pad_mode, tile_batch):
  h, w = x.shape[1:3]
  if tile is None:
    xp = pad_to(x, _ceil_to(h, multiple), _ceil_to(w, multiple), pad_mode)
    y = _check_out(apply_fn(xp), xp.shape, scale)
  else:
    xp = pad_to(x, max(_ceil_to(h, multiple), tile), max(_ceil_to(w, multiple), tile), pad_mode)
    y = _run_tiled(apply_fn, xp, scale, tile, tile_overlap, tile_batch)
  return y[:, :h * scale, :w * scale]


def _dihedral(x, k: int, inverse: bool = False):
  """The k-th of the 8 flips/transposes of NHWC `x` (or its inverse)."""
  transpose, flip_h, flip_w = k & 4, k & 2, k & 1
  if inverse and transpose:
    x = np.swapaxes(x, 1, 2)
  if flip_h:
    x = x[:, ::-1]
  if flip_w:
    x = x[:, :, ::-1]
  if not inverse and transpose:
    x = np.swapaxes(x, 1, 2)
  return np.ascontiguousarray(x)


def infer(apply_fn: Callable, lr_nhwc, *, scale: int, multiple: int = 1, tile: int | None = None,
          tile_overlap: int = 0, self_ensemble: bool = False, pad_mode: str = "reflect",
          tile_batch: int = 1) -> np.ndarray:
  """Runs `apply_fn` (NHWC [0, 1] -> NHWC `scale` times larger) on an image of any size.

  Pads bottom/right to a multiple of `multiple` (`pad_mode` 'reflect' or 'flip') and crops the
  output back; with `tile`, runs tile x tile crops (tile a multiple of `multiple`) overlapping
  by `tile_overlap` and averages the overlaps, `tile_batch` tiles per call; `self_ensemble`
  averages the 8 flips/transposes. Returns float32 NHWC, not clipped.
  """
  x = np.asarray(lr_nhwc, np.float32)
  if x.ndim != 4:
    raise ValueError(f"infer expects an NHWC batch, got shape {x.shape}")
  if scale < 1 or multiple < 1 or tile_batch < 1:
    raise ValueError(f"scale, multiple and tile_batch must be >= 1, got {scale}, {multiple}, "
                     f"{tile_batch}")
  if tile is not None and (tile % multiple or not 0 <= tile_overlap < tile):
    raise ValueError(f"tile={tile} must be a multiple of {multiple} and exceed "
                     f"tile_overlap={tile_overlap} >= 0")
  run = lambda v: _infer_once(apply_fn, v, scale, multiple, tile, tile_overlap, pad_mode,
                              tile_batch)
  if not self_ensemble:
    return run(x)
  return sum(_dihedral(run(_dihedral(x, k)), k, inverse=True) for k in range(8)) / 8.0


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


def image_metrics(out_u8, hr_u8, *, crop_border: int, y_channel: bool = True,
                  psnr_b: bool = False) -> dict:
  """PSNR/SSIM on RGB (and Y), PSNR-B on Y (or RGB) when asked, for one uint8 pair."""
  m = {"psnr": metrics.psnr(out_u8, hr_u8, crop_border),
       "ssim": metrics.ssim(out_u8, hr_u8, crop_border)}
  if y_channel:
    m["psnr_y"] = metrics.psnr(out_u8, hr_u8, crop_border, y_channel=True)
    m["ssim_y"] = metrics.ssim(out_u8, hr_u8, crop_border, y_channel=True)
  if psnr_b:
    key = "psnr_b_y" if y_channel else "psnr_b"
    m[key] = metrics.psnr_b(out_u8, hr_u8, crop_border, y_channel=y_channel)
  return m


def evaluate_pairs(apply_fn: Callable, examples: Iterable[dict], *, scale: int,
                   crop_border: int | None = None, y_channel: bool = True, psnr_b: bool = False,
                   baseline: bool = True, on_image: Callable | None = None,
                   extra_metrics: Callable | None = None, **infer_kw) -> tuple[list[dict], dict]:
  """Metrics of the model (and of the bicubic baseline) on whole images.

  `examples` yield dicts with uint8 HWC `lr` and `hr` (plus `codec`, `quality`, `task_id`,
  `source`, as the eval pipeline gives them). `apply_fn(x_nhwc, task_id)` gets the int32 task
  ids [N]; `infer_kw` go to `infer`. The output is quantised to uint8 before measuring.
  `crop_border` defaults to `scale` (0 for scale 1, keeping PSNR-B's 8x8 grid aligned).
  `on_image(example, sr_uint8, bicubic_uint8)` sees every output (for image grids).
  `apply_fn` may return more than 3 channels: the first 3 are the image, and
  `extra_metrics(example, output float HWC, crop_border)` adds columns to the model's row from
  all of them (e.g. `unfolded_step_metrics`).
  Returns (rows, means): one row per image and method ('model', 'bicubic') with the metrics,
  and {method: {metric: mean}}.
  """
  if crop_border is None:  # SR papers crop `scale` pixels; restoration (x1) papers crop none
    crop_border = scale if scale > 1 else 0
  rows = []
  for n, ex in enumerate(examples):
    src = _text(ex.get("source", f"#{n}"))
    lr, hr = np.asarray(ex["lr"]), np.asarray(ex["hr"])
    if lr.dtype != np.uint8 or hr.dtype != np.uint8 or lr.ndim != 3 or hr.ndim != 3:
      raise ValueError(f"{src}: lr/hr must be uint8 HWC, got {lr.dtype}{lr.shape} and "
                       f"{hr.dtype}{hr.shape}")
    if int(_first(ex.get("scale", scale))) != scale:
      raise ValueError(f"{src}: example scale {_first(ex['scale'])} != evaluation scale {scale}")
    if hr.shape != (lr.shape[0] * scale, lr.shape[1] * scale, lr.shape[2]):
      raise ValueError(f"{src}: hr shape {hr.shape} is not lr shape {lr.shape} x{scale}")
    tid = int(_first(ex.get("task_id", 0)))
    sr = infer(lambda x: apply_fn(x, np.full((x.shape[0],), tid, np.int32)),
               lr[None].astype(np.float32) / 255.0, scale=scale, **infer_kw)
    sr_u8 = to_uint8(sr[0, ..., :3])
    meta = {"source": src, "codec": _text(ex.get("codec", "")),
            "quality": int(_first(ex.get("quality", -1)))}
    rows.append({**meta, "method": "model",
                 **image_metrics(sr_u8, hr, crop_border=crop_border, y_channel=y_channel,
                                 psnr_b=psnr_b),
                 **(extra_metrics(ex, sr[0], crop_border) if extra_metrics else {})})
    bic = bicubic_upscale(lr, scale) if baseline or on_image else None
    if baseline:
      rows.append({**meta, "method": "bicubic",
                   **image_metrics(bic, hr, crop_border=crop_border, y_channel=y_channel,
                                   psnr_b=psnr_b)})
    if on_image is not None:
      on_image(ex, sr_u8, bic)
  return rows, mean_rows(rows)


def stack_unfolded(out: dict, scale: int):
  """CISR's {'y': [y_1..y_J], 'x': [x_1..x_J]} -> one [B, sH, sW, 3 + 6J] array for `infer`:
  x_J (the image), x_1..x_J, then y_1..y_J upscaled by pixel repetition (which padding, tiling
  and self-ensemble all preserve, so y_j is its every `scale`-th pixel). jnp or numpy inputs."""
  import jax.numpy as jnp
  rep = lambda y: jnp.repeat(jnp.repeat(y, scale, axis=1), scale, axis=2)
  return jnp.concatenate([out["x"][-1], *out["x"], *map(rep, out["y"])], axis=-1)


def unfolded_step_metrics(scale: int, y_channel: bool = True) -> Callable:
  """`extra_metrics` for `stack_unfolded` outputs: PSNR of every x_j vs the HR (the image's
  border crop) and of every y_j vs the clean LR (`lr_clean`; border crop // scale), as
  'psnr_y_x1'.., 'psnr_y_y1'.. (uint8-quantised like the main metric, so x_J's is `psnr_y`)."""
  name = "psnr_y" if y_channel else "psnr"

  def fn(ex, out, crop_border: int) -> dict:
    steps, rem = divmod(out.shape[-1] - 3, 6)
    if rem or steps < 1:
      raise ValueError(f"unfolded output has {out.shape[-1]} channels; expected 3 + 6J")
    if "lr_clean" not in ex:
      raise KeyError(f"{_text(ex.get('source', '?'))}: per-step metrics need 'lr_clean' "
                     "(decode it in the eval pipeline)")
    hr, clean = np.asarray(ex["hr"]), np.asarray(ex["lr_clean"])
    res = {}
    for j in range(steps):
      x = to_uint8(out[..., 3 + 3 * j:6 + 3 * j])
      res[f"{name}_x{j + 1}"] = metrics.psnr(x, hr, crop_border, y_channel=y_channel)
    for j in range(steps):
      c = 3 + 3 * steps + 3 * j
      y = to_uint8(out[::scale, ::scale, c:c + 3])
      res[f"{name}_y{j + 1}"] = metrics.psnr(y, clean, crop_border // scale, y_channel=y_channel)
    return res

  return fn


def mean_rows(rows: list[dict]) -> dict:
  """{method: {metric: mean over rows}} for the float (metric) columns of `rows`."""
  out = {}
  for method in dict.fromkeys(r["method"] for r in rows):
    sel = [r for r in rows if r["method"] == method]
    keys = [k for k, v in sel[0].items() if isinstance(v, float)]
    out[method] = {k: float(np.mean([r[k] for r in sel])) for k in keys}
  return out


def _first(v):
  """A scalar feature, whether given bare or as decode_example's one-element list."""
  if isinstance(v, (list, tuple, np.ndarray)) and np.size(v) == 1:
    return v[0] if isinstance(v, (list, tuple)) else v.reshape(()).item()
  return v


def _text(v) -> str:
  v = _first(v)
  return v.decode() if isinstance(v, bytes) else str(v)
