"""Benchmark CLI: a checkpoint over prepared eval shards -> the paper-style table.

  python -m csr_jax.benchmark --checkpoint RUN --data DATA_DIR [--config configs/ucip.py:small]
      [--out DIR] [--ema] [--tile 256] [--ensemble x8] [--limit N] [--config.x=y]

`--checkpoint` is a training workdir, its checkpoints or a step directory, a params-only
directory (`convert import`, `zoo import`), or a .pth file (with --config). The model comes
from --config when given, else from what the checkpoint records. The family's spec sets the
protocol (padding, tiles, channel, border, PSNR-B); the flags override it. Writes `table.md`,
`table.csv`, `per_image.csv`, `grids/*.png` and `report.md` to --out (default
<workdir>/benchmark, or <dir>-benchmark).
"""

import dataclasses
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from csr_jax import cli

config_flags.DEFINE_config_file("config", None, "configs/<family>.py[:variant] (optional when "
                                "the checkpoint records its model).", lock_config=True)
flags.DEFINE_string("checkpoint", None, "Workdir, checkpoints/step dir, params dir or .pth.")
flags.DEFINE_string("data", None, "Folder of prepared eval shards (one or more manifests).")
flags.DEFINE_string("out", None, "Output folder.")
flags.DEFINE_bool("ema", False, "Evaluate the EMA parameters.")
flags.DEFINE_integer("tile", None, "Tile size (0: whole image); default: the family's.")
flags.DEFINE_integer("tile_overlap", None, "Tile overlap; default: the family's.")
flags.DEFINE_integer("tile_batch", 1, "Tiles per forward call.")
flags.DEFINE_enum("ensemble", None, ["none", "transpose", "x8"], "Test-time ensemble.")
flags.DEFINE_bool("self_ensemble", False, "Same as --ensemble=x8.")
flags.DEFINE_string("split", None, "Only shards of this split.")
flags.DEFINE_integer("limit", None, "Images per dataset.")
flags.DEFINE_integer("crop_border", None, "Border crop; default: the family's (scale, 0 at x1).")
flags.DEFINE_integer("grid_images", 4, "How many comparison grids to write.")
flags.mark_flags_as_required(["checkpoint", "data"])
FLAGS = flags.FLAGS


def default_out(checkpoint) -> object:
  """`<workdir>/benchmark` for a training run, `<dir>-benchmark` for a params directory."""
  from csr_jax import paths
  p = paths.resolve(checkpoint)
  if p.is_file() or not ((p / "checkpoints").is_dir() or p.name == "checkpoints"
                         or p.name.isdigit()):
    return p.parent / f"{p.name.rsplit('.', 1)[0]}-benchmark"
  while p.name.isdigit() or p.name == "checkpoints":
    p = p.parent
  return p / "benchmark"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from csr_jax import inference, logging_utils, paths, report, train, weights
  logging_utils.quiet_libraries()
  config = FLAGS.config
  r = weights.ref_from_config(config) if config is not None else None
  r, model = weights.model_from(FLAGS.checkpoint, r, item="ema" if FLAGS.ema else "params")
  spec = r.spec
  if config is not None:
    protocol, ev = train.protocols(config, spec)
  else:
    protocol, ev = spec.inference, spec.evaluation
  ensemble = "x8" if FLAGS.self_ensemble else (FLAGS.ensemble or protocol.ensemble)
  protocol = inference.check_protocol(dataclasses.replace(
      protocol, tile=protocol.tile if FLAGS.tile is None else FLAGS.tile,
      tile_overlap=protocol.tile_overlap if FLAGS.tile_overlap is None else FLAGS.tile_overlap,
      ensemble=ensemble))
  datasets = report.find_datasets(FLAGS.data, None, FLAGS.split)
  scale = report.dataset_scale(datasets)
  from flax import nnx
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  forward = inference.make_forward(spec, graphdef, rest, extras=spec.extras is not None,
                                   dtype=config.model.get("dtype") if config else None)
  params = nnx.to_pure_dict(params)
  predict = lambda x, tid: inference.Predictor(forward, params, tid)(x)
  out = paths.resolve(FLAGS.out) if FLAGS.out else default_out(FLAGS.checkpoint)
  res = report.run_benchmark(
      predict, datasets, out, scale=scale, ev=ev, protocol=protocol,
      crop_border=FLAGS.crop_border, limit=FLAGS.limit, grid_images=FLAGS.grid_images,
      title=f"Benchmark: {r.name} {r.variant}{' (EMA)' if FLAGS.ema else ''}",
      extra_target=spec.extra_target if spec.extras is not None else None,
      task_ids=r.task_ids, footer=report.encoder_note(datasets), tile_batch=FLAGS.tile_batch)
  print(res["table_md"])
  print(f"wrote {paths.display(out)}: table.md, table.csv, per_image.csv, report.md, "
        f"{len(res['files']['grids'])} grids; {len(res['skipped'])} image(s) skipped",
        file=sys.stderr)
  return 0


if __name__ == "__main__":
  app.run(cli.run(main))
