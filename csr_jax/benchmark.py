"""Benchmark runner: a checkpoint over eval shards (datasets x codecs x qualities) -> paper table.

  python -m csr_jax.benchmark --config configs/ucip.py:small --checkpoint WORKDIR/checkpoints \
      --data DATA_DIR [--out DIR] [--ema] [--tile 256] [--self_ensemble] [--config.x=y]

Writes to --out: `table.md` and `table.csv` (rows codec x quality, columns dataset, cells
PSNR/SSIM on Y, plus PSNR-B for restoration), `per_image.csv`, `grids/*.png` (bicubic | model |
HR crops) and `report.md`. The config needs `model.name` and `model.variant` (optional
`model.overrides`, `model.use_task_id`); `model.name` may also be 'package.module:factory' for
models outside the registry. `eval.{multiple, tile, tile_overlap, self_ensemble}` give the
defaults of the matching flags.
"""

import argparse
import ast
import csv
import glob
import importlib
import importlib.util
import os
import re
import sys
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw

from csr_jax import evaluate, metrics

# Pad multiples of the official test scripts (UCIP 8, PromptCIR 32) and window sizes.
DEFAULT_MULTIPLE = {"ucip": 8, "promptcir": 32, "promptsr": 16, "cisr": 1}
# Families whose model returns {'y': [...], 'x': [...]} per unfolded step (final image x_J).
UNFOLDED = ("cisr",)
_STEP_RE = re.compile(r"^psnr(_y)?_(?P<kind>[xy])(?P<j>\d+)$")
_SHARD_RE = re.compile(r"^(?P<name>.+)-(?P<split>[^-]+)\.tfrecord-\d+-of-\d+$")


# ---- configs and checkpoints ----

def load_config(spec: str, overrides: list[str] = ()):
  """`path.py[:arg]` -> get_config(arg), then `--config.a.b=value` overrides applied."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: config file not found")
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  if root not in sys.path:  # configs import their siblings as `configs.common`
    sys.path.append(root)
  mod_spec = importlib.util.spec_from_file_location(f"_csr_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise AttributeError(f"{path}: defines no get_config(arg)")
  config = module.get_config(arg) if arg else module.get_config()
  flat = {}
  for item in overrides:
    key, eq, value = item.removeprefix("--config.").partition("=")
    if not eq:
      raise ValueError(f"config override {item!r} is not --config.key=value")
    try:
      flat[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      flat[key] = value
  if flat:
    config.update_from_flattened_dict(flat)
  return config


def create_model(config, seed: int = 0):
  """The model named by `config.model` (registry name or 'module:factory'), with
  `config.model.overrides` as keywords."""
  from flax import nnx
  from csr_jax import models
  m = config.model
  kwargs = dict(m.get("overrides", None) or {})
  if ":" in m.name:
    mod, _, fn = m.name.partition(":")
    return getattr(importlib.import_module(mod), fn)(m.variant, rngs=nnx.Rngs(seed), **kwargs)
  return models.create(m.name, m.variant, rngs=nnx.Rngs(seed), **kwargs)


def load_params(checkpoint: str, target: dict, *, ema: bool = False) -> dict:
  """`params` (or `ema`) of a checkpoint, shaped like the pure dict `target`.

  `checkpoint` is a workdir, a checkpoints dir (latest step), a step dir or a params-only
  directory (read by `csr_jax.convert.orbax_io`). Strict: a key or shape mismatch raises one
  error that lists every difference.
  """
  from csr_jax.convert import core, orbax_io
  item = "ema" if ema else "params"
  where = orbax_io.state_dir(checkpoint)
  try:
    return core.load_flat_params(target, orbax_io.read_params(checkpoint, item), source=str(where))
  except core.ConversionError as e:
    problems = ([f"missing {k}" for k in e.missing] + [f"unexpected {k}" for k in e.unexpected]
                + [f"shape {k}: checkpoint {g} vs model {w}" for k, g, w in e.misshaped])
    raise ValueError(f"{where}: {item} do not match the model: " + "; ".join(problems)) from None


def model_apply_fn(model, *, use_task_id: bool = True, per_step_scale: int = 0) -> Callable:
  """apply_fn(x_nhwc, task_id) for evaluate_pairs: one jitted pure function of the state.

  An unfolded model's dict output (CISR) gives its final x_J, or with `per_step_scale` (its
  scale) every step stacked on channels (`evaluate.stack_unfolded`)."""
  import jax
  from flax import nnx
  graphdef, state = nnx.split(model)

  @jax.jit
  def forward(state, x, task_id):
    m = nnx.merge(graphdef, state)
    out = m(x, task_id) if use_task_id else m(x)
    if not isinstance(out, dict):
      return out
    return evaluate.stack_unfolded(out, per_step_scale) if per_step_scale else out["x"][-1]

  return lambda x, task_id: forward(state, x, task_id)


def restore_model(config, checkpoint: str, *, ema: bool = False):
  """The config's model with parameters from the checkpoint.

  The model is built abstractly (no random init, no compilation) when all its state is
  nnx.Param; otherwise it is initialised and its parameters overwritten.
  """
  import jax
  from flax import nnx
  abstract = nnx.eval_shape(lambda: create_model(config))
  graphdef, state, rest = nnx.split(abstract, nnx.Param, ...)
  target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), nnx.to_pure_dict(state))
  params = jax.tree.map(jax.numpy.asarray, load_params(checkpoint, target, ema=ema))
  if jax.tree.leaves(rest):
    model = create_model(config)
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(model, state)
    return model
  nnx.replace_by_pure_dict(state, params)
  return nnx.merge(graphdef, state, rest)


# ---- eval shards ----

def find_shards(data_dir: str, split: str | None = None) -> dict[str, list[str]]:
  """{dataset name: sorted shard paths} of `<name>-<split>.tfrecord-*-of-*` under data_dir."""
  out = {}
  for path in sorted(glob.glob(os.path.join(data_dir, "**", "*.tfrecord-*"), recursive=True)):
    m = _SHARD_RE.match(os.path.basename(path))
    if m and (split is None or m["split"] == split):
      out.setdefault(m["name"], []).append(path)
  if not out:
    raise FileNotFoundError(f"{data_dir}: no '<name>-<split>.tfrecord-NNNNN-of-NNNNN' shards"
                            + (f" of split {split!r}" if split else ""))
  return out


def read_examples(shards: list[str], limit: int | None = None,
                  keys=("hr", "lr")) -> Iterator[dict]:
  """Whole-image eval examples (uint8 HWC `keys` images, codec, quality, task_id, scale, source)
  in file order, through the eval pipeline (`csr_jax.data.pipeline.eval_dataset`)."""
  from csr_jax.data import pipeline
  yield from pipeline.eval_dataset(shards, limit, keys=keys)


# ---- tables, grids, report ----

def _metric_keys(psnr_b: bool) -> list[str]:
  return ["psnr_y", "ssim_y"] + (["psnr_b_y"] if psnr_b else [])


def group_means(rows: list[dict]) -> list[dict]:
  """Mean metrics per (dataset, codec, quality, method), with the image count."""
  groups = {}
  for r in rows:
    groups.setdefault((r["dataset"], r["codec"], r["quality"], r["method"]), []).append(r)
  out = []
  for (ds, codec, q, method), sel in sorted(groups.items(), key=lambda kv: (
      kv[0][1], kv[0][2], kv[0][0], kv[0][3] != "bicubic")):
    means = evaluate.mean_rows(sel)[method]
    out.append({"dataset": ds, "codec": codec, "quality": q, "method": method,
                "images": len(sel), **means})
  return out


def format_table(groups: list[dict], *, psnr_b: bool, crop_border: int) -> str:
  """Markdown: rows codec x quality x method, columns dataset, cells PSNR/SSIM(/PSNR-B) on Y."""
  datasets = list(dict.fromkeys(g["dataset"] for g in groups))
  cells = {(g["codec"], g["quality"], g["method"], g["dataset"]): g for g in groups}
  keys = list(dict.fromkeys((g["codec"], g["quality"], g["method"]) for g in groups))
  unit = "PSNR (dB) / SSIM" + (" / PSNR-B (dB)" if psnr_b else "")
  lines = [f"{unit} on Y (BT.601), border crop {crop_border}; bicubic = degraded LR "
           "upscaled with Pillow BICUBIC.", "",
           "| Codec | Quality | Method | " + " | ".join(datasets) + " |",
           "|---|---|---|" + "---|" * len(datasets)]
  for codec, q, method in keys:
    vals = []
    for ds in datasets:
      g = cells.get((codec, q, method, ds))
      vals.append("-" if g is None else " / ".join(
          f"{g[k]:.4f}" if k.startswith("ssim") else f"{g[k]:.2f}" for k in _metric_keys(psnr_b)))
    lines.append(f"| {codec} | {q} | {method} | " + " | ".join(vals) + " |")
  return "\n".join(lines) + "\n"


def format_step_table(groups: list[dict]) -> str:
  """Markdown of the per-step columns ('psnr_y_x1', 'psnr_y_y1', ...) of unfolded models; ''
  when there are none."""
  rows = [g for g in groups if any(_STEP_RE.match(k) for k in g)]
  if not rows:
    return ""
  cols = sorted({k for g in rows for k in g if _STEP_RE.match(k)},
                key=lambda k: (_STEP_RE.match(k)["kind"], int(_STEP_RE.match(k)["j"])))
  lines = ["Per-step PSNR (dB) on Y: x_j against the HR, y_j against the clean LR.", "",
           "| Dataset | Codec | Quality | " + " | ".join(c.split("_")[-1] for c in cols) + " |",
           "|---|---|---|" + "---|" * len(cols)]
  for g in rows:
    lines.append(f"| {g['dataset']} | {g['codec']} | {g['quality']} | "
                 + " | ".join(f"{g[c]:.2f}" if c in g else "-" for c in cols) + " |")
  return "\n".join(lines) + "\n"


def write_csv(path: str, rows: list[dict]) -> None:
  if not rows:
    raise ValueError(f"{path}: nothing to write")
  fields = list(dict.fromkeys(k for r in rows for k in r))  # methods may differ in columns
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)


def comparison_grid(bicubic: np.ndarray, sr: np.ndarray, hr: np.ndarray, *, crop: int = 128,
                    labels: tuple[str, str, str] = ("bicubic", "model", "HR")) -> Image.Image:
  """bicubic | model | HR of the same centre crop (uint8 HWC), labelled above each panel."""
  h, w = hr.shape[:2]
  ch, cw = min(crop, h), min(crop, w)
  top, left = (h - ch) // 2, (w - cw) // 2
  band, gap = 14, 4
  canvas = Image.new("RGB", (3 * cw + 2 * gap, ch + band), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  for k, (img, label) in enumerate(zip((bicubic, sr, hr), labels)):
    x = k * (cw + gap)
    canvas.paste(Image.fromarray(np.ascontiguousarray(img[top:top + ch, left:left + cw])),
                 (x, band))
    draw.text((x + 2, 1), label, fill=(0, 0, 0))
  return canvas


def write_report(workdir: str, *, table_md: str, title: str = "csr_jax report",
                 curves_png: str | None = None, grid_pngs: list[str] = (),
                 extra_md: str = "") -> str:
  """Writes `workdir/report.md` (table, curves, grids, free text); image links are relative."""
  os.makedirs(workdir, exist_ok=True)
  rel = lambda p: os.path.relpath(os.path.abspath(p), os.path.abspath(workdir))
  parts = [f"# {title}", "", "## Results", "", table_md.rstrip(), ""]
  if curves_png:
    parts += ["## Training curves", "", f"![training curves]({rel(curves_png)})", ""]
  if grid_pngs:
    parts += ["## Comparisons (bicubic | model | HR)", ""]
    parts += [f"![{os.path.basename(p)}]({rel(p)})" for p in grid_pngs] + [""]
  if extra_md:
    parts += [extra_md.rstrip(), ""]
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(parts))
  return path


def _safe(s) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", str(s))


def run_benchmark(apply_fn: Callable, data_dir: str, out_dir: str, *, scale: int | None = None,
                  psnr_b: bool | None = None, crop_border: int | None = None,
                  split: str | None = None, limit: int | None = None, grid_images: int = 4,
                  title: str = "Benchmark", extra_metrics: Callable | None = None,
                  **infer_kw) -> dict:
  """Evaluates `apply_fn(x_nhwc, task_id)` on every dataset under `data_dir`; writes the files.

  `scale` defaults to the records' scale; `psnr_b` to scale == 1 (restoration); `crop_border`
  to scale (0 for x1); `limit` caps images per dataset; `infer_kw` go to `evaluate.infer`
  (multiple, tile, self_ensemble, ...); `extra_metrics` (e.g. `evaluate.unfolded_step_metrics`,
  which reads the clean LR, then decoded too) adds per-image columns and a per-step table.
  Returns {'rows', 'groups', 'table_md', 'files'}.
  """
  os.makedirs(os.path.join(out_dir, "grids"), exist_ok=True)
  rows, grids, scales = [], [], set()
  for ds, shards in find_shards(data_dir, split).items():
    examples = list(read_examples(shards, limit, ("hr", "lr", "lr_clean") if extra_metrics
                                  else ("hr", "lr")))
    if not examples:
      raise ValueError(f"{shards[0]}: dataset {ds!r} has no records")
    scales.add(int(scale or examples[0]["scale"]))
    if len(scales) > 1:
      raise ValueError(f"{data_dir}: datasets mix scales {sorted(scales)}; pass --split or "
                       "separate folders")

    (s,) = scales
    border = crop_border if crop_border is not None else (s if s > 1 else 0)

    def keep(ex, sr, bic, ds=ds, border=border):
      if len(grids) < grid_images:
        name = f"{ds}_{ex['codec']}_q{ex['quality']}_{os.path.splitext(ex['source'])[0]}"
        path = os.path.join(out_dir, "grids", _safe(name) + ".png")
        db = [metrics.psnr(v, ex["hr"], border, y_channel=True) for v in (bic, sr)]
        comparison_grid(bic, sr, ex["hr"], labels=(
            f"bicubic {db[0]:.2f} dB", f"model {db[1]:.2f} dB", "HR")).save(path)
        grids.append(path)

    psnr_b = (s == 1) if psnr_b is None else psnr_b
    ds_rows, _ = evaluate.evaluate_pairs(apply_fn, examples, scale=s, psnr_b=psnr_b,
                                         crop_border=border, on_image=keep,
                                         extra_metrics=extra_metrics, **infer_kw)
    rows += [{"dataset": ds, **r} for r in ds_rows]
  groups = group_means(rows)
  table_md = format_table(groups, psnr_b=psnr_b, crop_border=border)
  step_md = format_step_table(groups)
  if step_md:
    table_md += "\n" + step_md
  files = {"table_md": os.path.join(out_dir, "table.md"),
           "table_csv": os.path.join(out_dir, "table.csv"),
           "per_image_csv": os.path.join(out_dir, "per_image.csv")}
  with open(files["table_md"], "w") as f:
    f.write(table_md)
  write_csv(files["table_csv"], groups)
  write_csv(files["per_image_csv"], rows)
  files["report"] = write_report(out_dir, table_md=table_md, title=title, grid_pngs=grids)
  files["grids"] = grids
  return {"rows": rows, "groups": groups, "table_md": table_md, "files": files}


def _default_out(checkpoint: str) -> str:
  """`<workdir>/benchmark` for `<workdir>/checkpoints/<step>/state`; `<dir>-benchmark` for a
  params-only directory."""
  from csr_jax.convert import orbax_io
  d = os.path.abspath(orbax_io.state_dir(checkpoint))
  if os.path.basename(d) != "state":
    return d + "-benchmark"
  root = os.path.dirname(os.path.dirname(d))
  if os.path.basename(root) == "checkpoints":
    root = os.path.dirname(root)
  return os.path.join(root, "benchmark")


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(prog="python -m csr_jax.benchmark", description=__doc__.split(
      "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, help="configs/<model>.py[:variant]")
  p.add_argument("--checkpoint", required=True,
                 help="workdir, checkpoints dir, step dir or params-only Orbax dir")
  p.add_argument("--data", required=True, help="folder holding eval shards")
  p.add_argument("--out", default=None, help="output folder (default: <workdir>/benchmark)")
  p.add_argument("--ema", action="store_true", help="evaluate the EMA parameters")
  p.add_argument("--tile", type=int, default=None)
  p.add_argument("--tile_overlap", type=int, default=None)
  p.add_argument("--tile_batch", type=int, default=1)
  p.add_argument("--self_ensemble", action="store_true")
  p.add_argument("--multiple", type=int, default=None)
  p.add_argument("--pad_mode", choices=["reflect", "flip"], default="reflect")
  p.add_argument("--scale", type=int, default=None, help="default: the records' scale")
  p.add_argument("--crop_border", type=int, default=None, help="default: scale (0 for x1)")
  p.add_argument("--split", default=None, help="only shards of this split")
  p.add_argument("--limit", type=int, default=None, help="images per dataset")
  p.add_argument("--psnr_b", choices=["auto", "yes", "no"], default="auto")
  args, rest = p.parse_known_args(argv)
  bad = [a for a in rest if not a.startswith("--config.")]
  if bad:
    p.error(f"unrecognized arguments: {' '.join(bad)}")
  config = load_config(args.config, rest)
  ev = config.get("eval", None) or {}
  family = config.model.name
  multiple = args.multiple or ev.get("multiple", None) or DEFAULT_MULTIPLE.get(family, 1)
  tile = (args.tile if args.tile is not None else ev.get("tile", None)) or None
  overlap = args.tile_overlap if args.tile_overlap is not None else (
      ev.get("tile_overlap", None) or (tile or 0) // 4)
  use_task_id = config.model.get("use_task_id", ev.get("use_task_id", True))
  model = restore_model(config, args.checkpoint, ema=args.ema)
  per_step = family in UNFOLDED and bool(ev.get("per_step", True))
  apply_fn = model_apply_fn(model, use_task_id=use_task_id,
                            per_step_scale=model.scale if per_step else 0)
  out = args.out or _default_out(args.checkpoint)
  result = run_benchmark(
      apply_fn, args.data, out, scale=args.scale, split=args.split, limit=args.limit,
      psnr_b={"auto": None, "yes": True, "no": False}[args.psnr_b],
      title=f"Benchmark: {family} {config.model.variant}{' (EMA)' if args.ema else ''}",
      multiple=multiple, tile=tile, tile_overlap=overlap if tile else 0,
      tile_batch=args.tile_batch, pad_mode=args.pad_mode,
      crop_border=args.crop_border if args.crop_border is not None else ev.get("crop_border", None),
      extra_metrics=evaluate.unfolded_step_metrics(model.scale) if per_step else None,
      self_ensemble=args.self_ensemble or bool(ev.get("self_ensemble", False)))
  print(result["table_md"])
  print(f"wrote {out}/table.md, table.csv, per_image.csv, report.md, "
        f"{len(result['files']['grids'])} grids", file=sys.stderr)
  return result


if __name__ == "__main__":
  try:
    main()
  except (FileNotFoundError, KeyError, ValueError, AttributeError) as e:
    sys.exit(f"error: {e.args[0] if e.args else e}")
