"""Checkpoint conversion CLI.

  python -m csr_jax.convert export --model ucip --variant middle --checkpoint WORKDIR \
      --out model.pth [--ema]
  python -m csr_jax.convert import --model ucip --variant middle --pth model.pth --out DIR \
      [--key params]

`export` reads `params` (or `ema`) of the latest step of a training workdir, or a params-only
directory written by `import`, and writes the official PyTorch state_dict. `import` reads a
.pth strictly (weights_only=True; `--key` picks a nested dict such as BasicSR's 'params') and
writes a params-only Orbax directory. Errors are one line on stderr, exit status 2.
"""

import argparse
import sys

from csr_jax.convert.core import ConversionError


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m csr_jax.convert",
                              description="Convert checkpoints between JAX (Orbax) and PyTorch.")
  sub = p.add_subparsers(dest="command", required=True)
  e = sub.add_parser("export", help="Orbax params -> PyTorch .pth (official state_dict)")
  e.add_argument("--checkpoint", required=True,
                 help="training workdir, checkpoints dir, step dir or params-only dir")
  e.add_argument("--out", required=True, help="output .pth file")
  e.add_argument("--ema", action="store_true", help="export the EMA params instead of params")
  i = sub.add_parser("import", help="PyTorch .pth -> params-only Orbax directory")
  i.add_argument("--pth", required=True, help="input state_dict file")
  i.add_argument("--out", required=True, help="output directory (must not exist)")
  i.add_argument("--key", default=None,
                 help="nested dict in the .pth holding the state_dict (e.g. params, params_ema)")
  for s in (e, i):
    s.add_argument("--model", required=True, help="model family, e.g. ucip")
    s.add_argument("--variant", required=True, help="variant, e.g. middle")
  return p


def export(model_name: str, variant: str, checkpoint: str, out: str, ema: bool = False) -> int:
  """Writes the .pth; returns the number of tensors."""
  from flax import nnx
  from csr_jax import convert, models
  from csr_jax.convert import orbax_io

  key = "ema" if ema else "params"
  flat = orbax_io.read_params(checkpoint, key)
  model = models.create(model_name, variant, rngs=nnx.Rngs(0))
  convert.load_flat_params(model, flat, source=f"{checkpoint} ({key})")
  sd = convert.to_torch(model_name, model)
  convert.save_torch_file(sd, out)
  return len(sd)


def import_(model_name: str, variant: str, pth: str, out: str, key: str | None = None) -> int:
  """Writes the params-only Orbax directory; returns the number of parameter arrays."""
  from flax import nnx
  from csr_jax import convert
  from csr_jax.convert import orbax_io

  model = convert.from_torch(model_name, variant, pth, container_key=key)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  orbax_io.write_params(out, params)
  return len(orbax_io.flatten(params))


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  try:
    if args.command == "export":
      n = export(args.model, args.variant, args.checkpoint, args.out, args.ema)
      print(f"wrote {args.out}: {n} tensors ({args.model}/{args.variant}"
            f"{', ema' if args.ema else ''})")
    else:
      n = import_(args.model, args.variant, args.pth, args.out, args.key)
      print(f"wrote {args.out}: {n} parameter arrays ({args.model}/{args.variant})")
  except (ConversionError, FileNotFoundError, FileExistsError, KeyError) as exc:
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    print(f"error: {msg}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
