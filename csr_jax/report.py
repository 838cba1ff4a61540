"""Paper-style tables, CSVs, image grids and report.md from evaluation rows.

`run_benchmark` evaluates a predictor over every dataset of a prepared folder (the shards
listed by each `manifest.json`) and writes `table.md` / `table.csv` (rows codec x quality,
plus each dataset's overall average as CISR's Table I has it; columns datasets; cells the
family's metrics on its channel), `per_image.csv`, `grids/*.png` (bicubic | model | HR) and
`report.md`. Examples that cannot be evaluated are skipped and listed, never fatal.
"""

import csv
import io
import re

import numpy as np
from PIL import Image, ImageDraw

from csr_jax import evaluate
from csr_jax import metrics
from csr_jax import paths
from csr_jax.family import Evaluation, Inference

_STEP_RE = re.compile(r"^psnr(_y)?_(?P<kind>[a-z]+)(?P<j>\d+)$")
OVERALL = "all"


def group_means(rows: list[dict]) -> list[dict]:
  """Mean metrics per (dataset, codec, quality, method) with the image count, then per
  (dataset, method) over every codec and quality (codec 'all')."""
  groups = {}
  for r in rows:
    groups.setdefault((r["dataset"], r["codec"], r["quality"], r["method"]), []).append(r)
    groups.setdefault((r["dataset"], OVERALL, "", r["method"]), []).append(r)
  order = lambda kv: (kv[0][1] == OVERALL, kv[0][1], str(kv[0][2]), kv[0][0],
                      kv[0][3] != "bicubic")
  out = []
  for (ds, codec, q, method), sel in sorted(groups.items(), key=order):
    out.append({"dataset": ds, "codec": codec, "quality": q, "method": method,
                "images": len(sel), **evaluate.mean_rows(sel)[method]})
  return out


def format_table(groups: list[dict], ev: Evaluation, crop_border: int) -> str:
  """Markdown: rows codec x quality x method, columns dataset, cells the family's metrics."""
  keys = evaluate.table_metrics(ev)
  datasets = list(dict.fromkeys(g["dataset"] for g in groups))
  cells = {(g["codec"], g["quality"], g["method"], g["dataset"]): g for g in groups}
  rows = list(dict.fromkeys((g["codec"], g["quality"], g["method"]) for g in groups))
  unit = " / ".join({"psnr": "PSNR (dB)", "ssim": "SSIM", "psnr_b": "PSNR-B (dB)"}[
      k.removesuffix("_y")] for k in keys)
  chan = "Y (BT.601)" if ev.channel == "y" else "RGB"
  lines = [f"{unit} on {chan}, border crop {crop_border}; bicubic = degraded LR upscaled with "
           f"Pillow BICUBIC; '{OVERALL}' = every image of the dataset.", "",
           "| Codec | Quality | Method | " + " | ".join(datasets) + " |",
           "|---|---|---|" + "---|" * len(datasets)]
  for codec, q, method in rows:
    vals = []
    for ds in datasets:
      g = cells.get((codec, q, method, ds))
      vals.append("-" if g is None or any(k not in g for k in keys) else " / ".join(
          f"{g[k]:.4f}" if k.startswith("ssim") else f"{g[k]:.2f}" for k in keys))
    lines.append(f"| {codec} | {q} | {method} | " + " | ".join(vals) + " |")
  return "\n".join(lines) + "\n"


def format_step_table(groups: list[dict]) -> str:
  """Markdown of the extra-output columns ('psnr_y_x1', 'psnr_y_y1', ...); '' when none."""
  rows = [g for g in groups if g["method"] == "model" and any(_STEP_RE.match(k) for k in g)]
  if not rows:
    return ""
  cols = sorted({k for g in rows for k in g if _STEP_RE.match(k)},
                key=lambda k: (_STEP_RE.match(k)["kind"], int(_STEP_RE.match(k)["j"])))
  lines = ["PSNR (dB) of the extra outputs, each against its reference (x_j: HR, y_j: clean LR).",
           "", "| Dataset | Codec | Quality | " + " | ".join(
               c.rsplit("_", 1)[-1] for c in cols) + " |", "|---|---|---|" + "---|" * len(cols)]
  for g in rows:
    lines.append(f"| {g['dataset']} | {g['codec']} | {g['quality']} | "
                 + " | ".join(f"{g[c]:.2f}" if c in g else "-" for c in cols) + " |")
  return "\n".join(lines) + "\n"


def _cell(v):
  """CSV cell; text that a spreadsheet would run as a formula gets a leading quote."""
  if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
    return "'" + v
  return v


def write_csv(path, rows: list[dict]) -> None:
  if not rows:
    raise ValueError(f"{paths.display(path)}: nothing to write")
  fields = list(dict.fromkeys(k for r in rows for k in r))  # methods may differ in columns
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=fields)
  w.writeheader()
  w.writerows({k: _cell(v) for k, v in r.items()} for r in rows)
  paths.write_text(path, buf.getvalue())


def comparison_grid(bicubic: np.ndarray, sr: np.ndarray, hr: np.ndarray, *, crop: int = 256,
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


def save_png(img: Image.Image, path) -> None:
  path = paths.resolve(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  buf = io.BytesIO()
  img.save(buf, format="PNG")
  path.write_bytes(buf.getvalue())


def write_report(out_dir, *, table_md: str, title: str = "csr_jax report",
                 curves_png=None, grid_pngs=(), skipped=(), extra_md: str = "") -> object:
  """Writes `out_dir/report.md` (table, curves, grids, skipped items, free text); image links
  are relative, so the folder can move."""
  out_dir = paths.resolve(out_dir)
  parts = [f"# {title}", "", "## Results", "", table_md.rstrip(), ""]
  if curves_png:
    parts += ["## Training curves", "", f"![training curves]({paths.relpath(curves_png, out_dir)})",
              ""]
  if grid_pngs:
    parts += ["## Comparisons (bicubic | model | HR)", ""]
    parts += [f"![{paths.resolve(p).name}]({paths.relpath(p, out_dir)})" for p in grid_pngs]
    parts += [""]
  if skipped:
    parts += [f"## Skipped ({len(skipped)})", ""] + [f"- `{s}`: {why}" for s, why in skipped]
    parts += [""]
  if extra_md:
    parts += [extra_md.rstrip(), ""]
  return paths.write_text(out_dir / "report.md", "\n".join(parts))


def find_datasets(data_dir, name: str | None = None, split: str | None = None) -> dict:
  """{dataset name: shard paths} under a prepared folder (its manifest, or those one folder
  down)."""
  from csr_jax.data import source
  return source.find_shards(str(paths.resolve(data_dir)), name, split)


def dataset_scale(datasets: dict) -> int:
  """The scale every dataset was prepared at (from its first record); mixed scales are an
  error naming them."""
  from csr_jax.data import source
  scales = {}
  for name, shards in datasets.items():
    src = source.TFRecordSource(shards)
    if not len(src):
      raise ValueError(f"{paths.display(shards[0])}: dataset {name!r} has no records")
    scales[name] = int(source.decode(src[0], keys=())["scale"])
    src.close()
  if len(set(scales.values())) > 1:
    raise ValueError(f"datasets mix scales {scales}; pass --split or separate folders")
  return next(iter(scales.values()))


def encoder_note(datasets: dict) -> str:
  """A table footer naming the codec implementations the prep step recorded (x265 standing in
  for HM, for instance)."""
  from csr_jax.data import source
  seen = {}
  for shards in datasets.values():
    manifest = paths.resolve(shards[0]).parent / source.MANIFEST
    if manifest.exists():
      for g in source.read_manifest(str(manifest)).get("grid", ()):
        seen.setdefault(g["codec"], g.get("implementation", ""))
  if not any(seen.values()):
    return ""
  return "Codecs: " + "; ".join(f"{c}: {e}" for c, e in sorted(seen.items()) if e) + "."


def _safe(s) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", str(s))


def run_benchmark(predict, datasets: dict, out_dir, *, scale: int, ev: Evaluation,
                  protocol: Inference, crop_border: int | None = None, limit: int | None = None,
                  grid_images: int = 4, grid_crop: int = 256, title: str = "Benchmark",
                  extra_target=None, task_ids=None, footer: str = "",
                  tile_batch: int = 1) -> dict:
  """Evaluates `predict(x, task_id)` on every dataset ({name: shard paths}) and writes the
  files under `out_dir`. Returns {'rows', 'groups', 'skipped', 'table_md', 'files'}."""
  from csr_jax.data import pipeline
  out_dir = paths.resolve(out_dir)
  border = evaluate.default_border(ev, scale) if crop_border is None else crop_border
  keys = ("hr", "lr", "lr_clean") if extra_target is not None else ("hr", "lr")
  rows, grids, skipped = [], [], []
  for ds, shards in datasets.items():

    def keep(ex, sr, bic, ds=ds):
      if len(grids) < grid_images:
        stem = str(ex["source"]).rsplit(".", 1)[0]
        path = out_dir / "grids" / (_safe(f"{ds}_{ex['codec']}_q{ex['quality']}_{stem}") + ".png")
        db = [metrics.psnr(v, ex["hr"], border, y_channel=ev.channel == "y") for v in (bic, sr)]
        save_png(comparison_grid(bic, sr, ex["hr"], crop=grid_crop, labels=(
            f"bicubic {db[0]:.2f} dB", f"model {db[1]:.2f} dB", "HR")), path)
        grids.append(path)

    examples = pipeline.eval_dataset(shards, limit, keys=keys, task_ids=task_ids)
    ds_rows, _, ds_skipped = evaluate.evaluate_pairs(
        predict, examples, scale=scale, ev=ev, protocol=protocol, crop_border=border,
        on_image=keep, extra_target=extra_target, tile_batch=tile_batch)
    rows += [{"dataset": ds, **r} for r in ds_rows]
    skipped += [(f"{ds}/{s}", why) for s, why in ds_skipped]
  if not rows:
    raise ValueError(f"{paths.display(out_dir)}: no image could be evaluated"
                     + (f" ({len(skipped)} skipped; first: {skipped[0][0]}: {skipped[0][1]})"
                        if skipped else ""))
  groups = group_means(rows)
  table_md = format_table(groups, ev, border)
  for part in (format_step_table(groups), footer):
    if part:
      table_md += "\n" + part.rstrip() + "\n"
  files = {"table_md": paths.write_text(out_dir / "table.md", table_md),
           "table_csv": out_dir / "table.csv", "per_image_csv": out_dir / "per_image.csv"}
  write_csv(files["table_csv"], groups)
  write_csv(files["per_image_csv"], rows + [
      {"dataset": s.split("/", 1)[0], "source": s.split("/", 1)[-1], "method": "skipped",
       "reason": why} for s, why in skipped])
  files["report"] = write_report(out_dir, table_md=table_md, title=title, grid_pngs=grids,
                                 skipped=skipped)
  files["grids"] = grids
  return {"rows": rows, "groups": groups, "skipped": skipped, "table_md": table_md,
          "files": files}
