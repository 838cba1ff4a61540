"""Whole-image inference: the one jitted forward and the one pad / tile / ensemble procedure.

`make_forward` jits a family's forward once per model structure: (params, x, task_id) ->
{'image': the scored output, **named extras}, float32. `infer` runs any such function (or a
list of them: a checkpoint ensemble) on an image of any size as the family's
`csr_jax.family.Inference` protocol says: pad bottom/right to the model's multiple ('reflect'
or PromptCIR's 'flip', optionally always by at least one pixel), run overlapping tiles of one
compiled shape and average their overlaps, average flips/transposes, crop back. Every output
keeps its own scale (CISR's y_j are LR-sized), derived from its shape. Each view is clipped to
[0, 1] before views and models are averaged, as the official PromptCIR script does.
"""

import itertools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from csr_jax.family import Inference

_PAD_MODES = {"reflect": "reflect", "flip": "symmetric"}
ENSEMBLES = {"none": (0,), "transpose": (0, 4), "x8": tuple(range(8))}


def make_forward(spec, graphdef, rest, *, dtype: str | None = None, extras: bool = False):
  """Jitted fn(params, x float32 NHWC, task_id int32 [B]) -> {'image', **extras} (float32).

  `dtype` 'bfloat16' runs the forward on bf16 copies of the float params and input (float32
  master weights, as in training)."""
  from csr_jax import weights
  from csr_jax.layers.precision import cast_floats

  @jax.jit
  def forward(params, x, task_id):
    if dtype and dtype != "float32":
      params, x = cast_floats(params, dtype), x.astype(dtype)
    out = spec.apply(weights.merge(graphdef, rest, params), x, task_id)
    res = {"image": spec.predict(out)}
    if extras and spec.extras is not None:
      res.update(spec.extras(out))
    return {k: v.astype(jnp.float32) for k, v in res.items()}

  return forward


def _ceil_to(n: int, m: int, always: bool) -> int:
  return (n // m + 1) * m if always else -(-n // m) * m


def pad_to(x: np.ndarray, height: int, width: int, mode: str = "reflect") -> np.ndarray:
  """Pads NHWC `x` at the bottom/right to (height, width): 'reflect' mirrors without repeating
  the edge (torch F.pad 'reflect'), 'flip' with it (PromptCIR's cat([x, flip(x)]))."""
  if mode not in _PAD_MODES:
    raise ValueError(f"pad_mode must be one of {sorted(_PAD_MODES)}, got {mode!r}")
  ph, pw = height - x.shape[1], width - x.shape[2]
  if ph < 0 or pw < 0:
    raise ValueError(f"cannot pad shape {x.shape} down to {(height, width)}")
  if (ph and ph >= x.shape[1] + (mode == "flip")) or (pw and pw >= x.shape[2] + (mode == "flip")):
    raise ValueError(f"image {x.shape[1]}x{x.shape[2]} is too small to {mode}-pad to "
                     f"{height}x{width}")
  return np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=_PAD_MODES[mode])


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
  """Tile origins along one axis: stride tile - overlap, the last tile flush with the end."""
  if size <= tile:
    return [0]
  return list(range(0, size - tile, tile - overlap)) + [size - tile]


def _as_dict(out) -> dict:
  return {k: np.asarray(v, np.float32) for k, v in out.items()} if isinstance(out, dict) else {
      "image": np.asarray(out, np.float32)}


def _factor(out, x_shape, name) -> int:
  f, r = divmod(out.shape[1], x_shape[1])
  if r or f < 1 or out.shape[2] != x_shape[2] * f or out.shape[0] != x_shape[0]:
    raise ValueError(f"output {name!r} has shape {out.shape} for input {x_shape}: not an "
                     "integer upscaling")
  return f


def _run_tiled(apply, x, tile: int, overlap: int, tile_batch: int) -> dict:
  b, h, w, _ = x.shape
  boxes = list(itertools.product(tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)))
  acc, cnt = {}, {}
  for k in range(0, len(boxes), tile_batch):
    group = boxes[k:k + tile_batch]
    crops = [x[:, i:i + tile, j:j + tile] for i, j in group]
    crops += [crops[-1]] * (tile_batch - len(group))  # a fixed batch keeps one compiled shape
    inp = np.concatenate(crops, axis=0)
    for name, out in _as_dict(apply(inp)).items():
      f = _factor(out, inp.shape, name)
      if name not in acc:
        acc[name] = np.zeros((b, h * f, w * f, out.shape[-1]), np.float32)
        cnt[name] = np.zeros((1, h * f, w * f, 1), np.float32)
      t = tile * f
      for n, (i, j) in enumerate(group):
        acc[name][:, i * f:i * f + t, j * f:j * f + t] += out[n * b:(n + 1) * b]
        cnt[name][:, i * f:i * f + t, j * f:j * f + t] += 1.0
  return {k: acc[k] / cnt[k] for k in acc}


def _dihedral(x, k: int, inverse: bool = False):
  """The k-th of the 8 flips/transposes of NHWC `x` (or its inverse); k = 4 is the transpose."""
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


def _view(apply, x, p: Inference, tile_batch: int) -> dict:
  h, w = x.shape[1:3]
  hp, wp = _ceil_to(h, p.multiple, p.pad_always), _ceil_to(w, p.multiple, p.pad_always)
  xp = pad_to(x, hp, wp, p.pad_mode)
  if p.tile:
    tile = min(p.tile, hp, wp)  # as the official tile_eval: one tile when the image is smaller
    out = _run_tiled(apply, xp, tile, min(p.tile_overlap, tile - 1), tile_batch)
  else:
    out = _as_dict(apply(xp))
  res = {}
  for name, v in out.items():
    f = _factor(v, xp.shape, name)
    res[name] = np.clip(v[:, :h * f, :w * f], 0.0, 1.0)
  return res


def check_protocol(p: Inference) -> Inference:
  if p.multiple < 1 or p.tile < 0 or p.tile_overlap < 0:
    raise ValueError(f"inference protocol {p}: multiple must be >= 1, tile and tile_overlap "
                     ">= 0")
  if p.tile and (p.tile % p.multiple or p.tile_overlap >= p.tile):
    raise ValueError(f"tile={p.tile} must be a multiple of {p.multiple} and exceed "
                     f"tile_overlap={p.tile_overlap}")
  if p.ensemble not in ENSEMBLES:
    raise ValueError(f"ensemble must be one of {sorted(ENSEMBLES)}, got {p.ensemble!r}")
  return p


def infer(apply, x, protocol: Inference = Inference(), *, tile_batch: int = 1):
  """Runs `apply` (NHWC float [0, 1] -> an array or a dict of arrays, each an integer
  upscaling of the input) on a batch of any size under `protocol`; `apply` may be a list of
  functions whose outputs are averaged (a checkpoint ensemble). Returns {name: float32 numpy
  clipped to [0, 1]}; a bare array output is named 'image'."""
  x = np.asarray(x, np.float32)
  if x.ndim != 4:
    raise ValueError(f"infer expects an NHWC batch, got shape {x.shape}")
  if tile_batch < 1:
    raise ValueError(f"tile_batch must be >= 1, got {tile_batch}")
  p = check_protocol(protocol)
  fns = list(apply) if isinstance(apply, (list, tuple)) else [apply]
  views = [{k: _dihedral(v, e, inverse=True) for k, v in
            _view(fn, _dihedral(x, e), p, tile_batch).items()}
           for fn in fns for e in ENSEMBLES[p.ensemble]]
  return {k: np.mean([v[k] for v in views], axis=0) for k in views[0]}


class Predictor:
  """A model's forward bound to its params and task id: predictor(x NHWC) -> output dict."""

  def __init__(self, forward: Callable, params, task_id: int = 0):
    self.forward, self.params, self.task_id = forward, params, int(task_id)

  def __call__(self, x):
    tid = np.full((x.shape[0],), self.task_id, np.int32)
    return jax.device_get(self.forward(self.params, jnp.asarray(x), tid))
