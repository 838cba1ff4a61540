"""Checkpoint conversion CLI.

  python -m csr_jax.convert export --checkpoint RUN --out model.pth [--ema]
      [--model ucip --variant middle]
  python -m csr_jax.convert import --model ucip --variant middle --pth model.pth --out DIR
      [--key params] [--tasks model.tasks.json]

`export` reads `params` (or `ema`) of the newest committed step of a training workdir (or a
params-only directory), builds the model the checkpoint records (or --model/--variant), and
writes the official PyTorch state_dict, plus `<out>.tasks.json` with the codec -> prompt table
for task-id families. `import` reads a .pth strictly (weights_only=True; `--key` picks a nested
dict such as BasicSR's 'params') and writes a params-only Orbax directory that records the
model and its task table (`--tasks`, else `<pth>.tasks.json` beside it, else the family's).
Errors are one line on stderr, exit status 2.
"""

import argparse
import json
import sys

from csr_jax import cli
from csr_jax.cli import one_line


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m csr_jax.convert",
                              description="Convert checkpoints between JAX (Orbax) and PyTorch.")
  sub = p.add_subparsers(dest="command", required=True)
  e = sub.add_parser("export", help="Orbax params -> PyTorch .pth (official state_dict)")
  e.add_argument("--checkpoint", required=True,
                 help="training workdir, checkpoints dir, step dir or params-only dir")
  e.add_argument("--out", required=True, help="output .pth file")
  e.add_argument("--ema", action="store_true", help="export the EMA params instead of params")
  e.add_argument("--model", default=None, help="model family (default: what the checkpoint "
                 "records)")
  e.add_argument("--variant", default=None)
  i = sub.add_parser("import", help="PyTorch .pth -> params-only Orbax directory")
  i.add_argument("--pth", required=True, help="input state_dict file")
  i.add_argument("--out", required=True, help="output directory (must not exist)")
  i.add_argument("--key", default=None,
                 help="nested dict in the .pth holding the state_dict (e.g. params, params_ema)")
  i.add_argument("--tasks", default=None, help="codec -> prompt id table (JSON) of the weights")
  i.add_argument("--model", required=True, help="model family, e.g. ucip")
  i.add_argument("--variant", required=True, help="variant, e.g. middle")
  for s in (e, i):
    s.add_argument("--verbose", action="store_true", help="print tracebacks")
  return p


def tasks_path(pth) -> object:
  from csr_jax import paths
  p = paths.resolve(pth)
  return p.parent / (p.name.rsplit(".", 1)[0] + ".tasks.json")


def export(checkpoint: str, out: str, *, ema: bool = False, model: str | None = None,
           variant: str | None = None) -> int:
  """Writes the .pth (and its task table); returns the number of tensors."""
  from csr_jax import convert, paths, weights
  r = weights.ref(model, variant) if model and variant else None
  if bool(model) != bool(variant):
    raise ValueError("--model and --variant go together")
  r, m = weights.model_from(checkpoint, r, item="ema" if ema else "params")
  sd = convert.to_torch(r.name, m)
  convert.save_torch_file(sd, out)
  if r.task_ids is not None:
    paths.write_text(tasks_path(out), json.dumps(dict(r.task_ids), indent=1))
  return len(sd)


def import_(model: str, variant: str, pth: str, out: str, key: str | None = None,
            tasks: str | None = None) -> int:
  """Writes the params-only Orbax directory; returns the number of parameter arrays."""
  from flax import nnx
  from csr_jax import checkpoint, convert, paths, weights
  from csr_jax.tree import flatten
  table_file = paths.resolve(tasks) if tasks else tasks_path(pth)
  table = None
  if tasks or table_file.exists():
    try:
      table = json.loads(table_file.read_text())
    except (OSError, ValueError) as exc:
      raise ValueError(f"{paths.display(table_file)}: not a JSON task table ({one_line(exc)})")
  r = weights.ref(model, variant, task_ids=table)
  m = convert.from_torch(model, variant, pth, container_key=key)
  params = nnx.to_pure_dict(nnx.state(m, nnx.Param))
  checkpoint.write_params(out, params, r.meta(source=paths.display(paths.resolve(pth))))
  return len(flatten(params))


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  from csr_jax import logging_utils
  logging_utils.quiet_libraries()
  def body():
    if args.command == "export":
      n = export(args.checkpoint, args.out, ema=args.ema, model=args.model, variant=args.variant)
      print(f"wrote {args.out}: {n} tensors{' (ema)' if args.ema else ''}")
    else:
      n = import_(args.model, args.variant, args.pth, args.out, args.key, args.tasks)
      print(f"wrote {args.out}: {n} parameter arrays ({args.model}/{args.variant})")

  return cli.guarded(body, args.verbose)

if __name__ == "__main__":
  sys.exit(main())
