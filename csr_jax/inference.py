"""Whole-image inference: the one jitted forward and the one pad / tile / ensemble procedure.

`make_forward` jits a family's forward once per model structure: (params, x, task_id) ->
{'image': the scored output, **named extras}, float32. `infer` runs any such function (or a
list of them: a checkpoint ensemble) on an image of any size as the family's
`csr_jax.family.Inference` protocol says: pad bottom/right to the model's multiple ('reflect'
or PromptCIR's 'flip', optionally always by at least one pixel), run overlapping tiles of one
compiled shape and average their overlaps (or, with `tile_blend='stitch'`, keep each tile's
central part), average flips/transposes, crop back. Every output
keeps its own scale (CISR's y_j are LR-sized), derived from its shape. Each view is clipped to
[0, 1] before views and models are averaged, as the official PromptCIR script does.
`stream` is the same procedure yielding bands of finished rows, holding about a tile's height
of the output at a time (`restore` writes them as they come: a 12000x16000 output never exists
whole in memory).
"""

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


def _cuts(starts: list[int], tile: int, size: int) -> list[int]:
  """'stitch' boundaries: tile k owns [cuts[k], cuts[k + 1]), cut in the middle of each overlap."""
  mids = [s + (prev + tile - s) // 2 for prev, s in zip(starts, starts[1:])]
  return [0, *mids, size]


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


class _View:
  """One ensemble member (a function on one flip/transpose of the image): its padded image, its
  tiles, and where each tile's kept part lands in the image's coordinates, which extend past
  the image where the view was padded (negative for padding that a flip puts above or left)."""

  def __init__(self, fn, fn_index: int, k: int, x, p: Inference):
    self.fn, self.fn_index, self.k = fn, fn_index, k
    self.h, self.w = x.shape[1:3]
    v = _dihedral(x, k)
    hp = _ceil_to(v.shape[1], p.multiple, p.pad_always)
    wp = _ceil_to(v.shape[2], p.multiple, p.pad_always)
    self.xp = pad_to(v, hp, wp, p.pad_mode)
    if p.tile:
      t = min(p.tile, hp, wp)  # as the official tile_eval: one tile when the image is smaller
      overlap = min(p.tile_overlap, t - 1)
      self.tile, rows, cols = (t, t), tile_starts(hp, t, overlap), tile_starts(wp, t, overlap)
    else:
      self.tile, rows, cols = (hp, wp), [0], [0]
    rcut, ccut = _cuts(rows, self.tile[0], hp), _cuts(cols, self.tile[1], wp)
    self.items = []  # (kept part in image coords, tile origin, kept part in view coords)
    for a, i in enumerate(rows):
      for b, j in enumerate(cols):
        keep = ((rcut[a], rcut[a + 1], ccut[b], ccut[b + 1]) if p.tile_blend == "stitch"
                else (i, i + self.tile[0], j, j + self.tile[1]))
        self.items.append((self.to_image(keep), (i, j), keep))
    _, _, self.col0, self.col1 = self.to_image((0, hp, 0, wp))

  def to_image(self, box):
    """A view rectangle (r0, r1, c0, c1) in the image's coordinates (input pixels)."""
    r0, r1, c0, c1 = box
    if self.k & 4:
      r0, r1, c0, c1 = c0, c1, r0, r1
    if self.k & 2:
      r0, r1 = self.h - r1, self.h - r0
    if self.k & 1:
      c0, c1 = self.w - c1, self.w - c0
    return r0, r1, c0, c1


class _Band:
  """A view's running tile sum and count (one output) over the rows not yet emitted."""

  def __init__(self, b: int, c: int, col0: int, width: int):
    self.b, self.c, self.col0, self.width = b, c, col0, width
    self.row0 = None
    self.acc = self.cnt = None

  def add(self, r0: int, c0: int, out):
    n, w = out.shape[1:3]
    if self.row0 is None:
      self.row0 = r0
      self.acc = np.zeros((self.b, 0, self.width, self.c), np.float32)
      self.cnt = np.zeros((1, 0, self.width, 1), np.float32)
    grow = r0 + n - self.row0 - self.acc.shape[1]
    if grow > 0:
      self.acc = np.concatenate(
          [self.acc, np.zeros((self.b, grow, self.width, self.c), np.float32)], axis=1)
      self.cnt = np.concatenate([self.cnt, np.zeros((1, grow, self.width, 1), np.float32)],
                                axis=1)
    r, c = r0 - self.row0, c0 - self.col0
    self.acc[:, r:r + n, c:c + w] += out
    self.cnt[:, r:r + n, c:c + w] += 1.0

  def take(self, row0: int, row1: int):
    """(sum, count) of rows row0..row1, dropping every row before row1 from the band."""
    k = row1 - self.row0
    out = self.acc[:, row0 - self.row0:k], self.cnt[:, row0 - self.row0:k]
    self.acc, self.cnt, self.row0 = self.acc[:, k:], self.cnt[:, k:], row1
    return out


def check_protocol(p: Inference) -> Inference:
  if p.multiple < 1 or p.tile < 0 or p.tile_overlap < 0:
    raise ValueError(f"inference protocol {p}: multiple must be >= 1, tile and tile_overlap "
                     ">= 0")
  if p.tile and (p.tile % p.multiple or p.tile_overlap >= p.tile):
    raise ValueError(f"tile={p.tile} must be a multiple of {p.multiple} and exceed "
                     f"tile_overlap={p.tile_overlap}")
  if p.ensemble not in ENSEMBLES:
    raise ValueError(f"ensemble must be one of {sorted(ENSEMBLES)}, got {p.ensemble!r}")
  if p.tile_blend not in ("mean", "stitch"):
    raise ValueError(f"tile_blend must be 'mean' or 'stitch', got {p.tile_blend!r}")
  return p


def stream(apply, x, protocol: Inference = Inference(), *, tile_batch: int = 1):
  """`infer`, yielding the output in bands of image rows as soon as every tile covering them
  has run: (row0, row1, {name: float32 [B, (row1 - row0) * f, W * f, C]}) for input rows row0
  to row1, at each output's own scale f, top to bottom. The tiles of all views run in order of
  the image row where their kept part starts, so each view holds only about one tile's height
  of rows: memory is bounded by the tile, not the image."""
  x = np.asarray(x, np.float32)
  if x.ndim != 4:
    raise ValueError(f"infer expects an NHWC batch, got shape {x.shape}")
  if tile_batch < 1:
    raise ValueError(f"tile_batch must be >= 1, got {tile_batch}")
  p = check_protocol(protocol)
  b, h, w, _ = x.shape
  fns = list(apply) if isinstance(apply, (list, tuple)) else [apply]
  views = [_View(fn, m, e, x, p) for m, fn in enumerate(fns) for e in ENSEMBLES[p.ensemble]]
  order = sorted((item[0][0], n, t) for n, v in enumerate(views) for t, item in enumerate(v.items))
  batch = tile_batch if p.tile else 1  # whole views differ in shape (transposes): one at a time
  bands = [{} for _ in views]
  factors, pending, done = {}, {}, 0  # pending: fn index -> [(view, tile)] filling a batch

  def run(group):
    crops = []
    for n, t in group:
      (i, j), (th, tw) = views[n].items[t][1], views[n].tile
      crops.append(views[n].xp[:, i:i + th, j:j + tw])
    crops += [crops[-1]] * (batch - len(crops))  # a fixed batch keeps one compiled shape
    inp = np.concatenate(crops, axis=0)
    for name, out in _as_dict(views[group[0][0]].fn(inp)).items():
      f = _factor(out, inp.shape, name)
      if factors.setdefault(name, f) != f:
        raise ValueError(f"output {name!r} changes its scale between tiles")
      for m, (n, t) in enumerate(group):
        v = views[n]
        (r0, _, c0, _), (i, j), (a0, a1, b0, b1) = v.items[t]
        part = out[m * b:(m + 1) * b, (a0 - i) * f:(a1 - i) * f, (b0 - j) * f:(b1 - j) * f]
        if name not in bands[n]:
          bands[n][name] = _Band(b, out.shape[-1], v.col0 * f, (v.col1 - v.col0) * f)
        bands[n][name].add(r0 * f, c0 * f, _dihedral(part, v.k, inverse=True))

  def emit(row1):
    res = {}
    for name, f in factors.items():
      total = None
      for n, v in enumerate(views):
        acc, cnt = bands[n][name].take(done * f, row1 * f)
        c = -v.col0 * f
        val = acc[:, :, c:c + w * f] / cnt[:, :, c:c + w * f]
        np.clip(val, 0.0, 1.0, out=val)
        if total is None:
          total = val
        else:
          total += val  # np.mean's order over the views: bit-equal to it
      if len(views) > 1:
        total /= np.float32(len(views))
      res[name] = total
    return res

  for k, (_, n, t) in enumerate(order):
    group = pending.setdefault(views[n].fn_index, [])
    group.append((n, t))
    if len(group) == batch:
      run(pending.pop(views[n].fn_index))
    if k + 1 == len(order):
      for key in list(pending):
        run(pending.pop(key))
    waiting = [views[m].items[s][0][0] for g in pending.values() for m, s in g]
    row1 = min([h] + waiting + ([order[k + 1][0]] if k + 1 < len(order) else []))
    if row1 > done:
      yield done, row1, emit(row1)
      done = row1


def infer(apply, x, protocol: Inference = Inference(), *, tile_batch: int = 1):
  """Runs `apply` (NHWC float [0, 1] -> an array or a dict of arrays, each an integer
  upscaling of the input) on a batch of any size under `protocol`; `apply` may be a list of
  functions whose outputs are averaged (a checkpoint ensemble). Returns {name: float32 numpy
  clipped to [0, 1]}; a bare array output is named 'image'."""
  out = {}
  h = np.shape(x)[1]
  for row0, row1, part in stream(apply, x, protocol, tile_batch=tile_batch):
    for name, v in part.items():
      if name not in out:
        f = v.shape[1] // (row1 - row0)
        out[name] = np.empty((v.shape[0], h * f, *v.shape[2:]), np.float32)
      f = out[name].shape[1] // h
      out[name][:, row0 * f:row1 * f] = v
  return out


class Predictor:
  """A model's forward bound to its params and task id: predictor(x NHWC) -> output dict."""

  def __init__(self, forward: Callable, params, task_id: int = 0):
    self.forward, self.params, self.task_id = forward, params, int(task_id)

  def __call__(self, x):
    tid = np.full((x.shape[0],), self.task_id, np.int32)
    return jax.device_get(self.forward(self.params, jnp.asarray(x), tid))
