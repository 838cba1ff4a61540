"""Published weights: what exists, where to get it, and a checked import into a params directory.

  python -m csr_jax.zoo list
  python -m csr_jax.zoo import NAME FILE --out DIR [--key params]

`import` reads FILE strictly (`weights_only=True`: pickled code is refused, never run; a
'module.' prefix and a nested `--key` dict are accepted), checks it against the release's layout
(tensor count, then every name and shape through the family's conversion table), records its
sha256, and writes an Orbax params directory whose `csr_jax.json` names the family, variant,
release, source file, sha256 and task-id table, so that `restore`, `benchmark` and `convert
export` build the model from it with no --config. Nothing here downloads: the links are for a
person (Google Drive asks for a browser). Errors are one line, exit status 2.
"""

import argparse
import dataclasses
import sys
from typing import Mapping

from csr_jax import cli

# The paper's order of listing (UCIP section 4.1); the official srdata.py that fixes the order
# the released weights were trained with is not released (csr_jax/models/ucip.py: TASK_IDS).
_UCIP_NOTE = ("task ids: the paper's order of listing (JPEG, HM, VTM, C_PSNR, C_SSIM, HiFiC); "
              "the official order is not released (its srdata.py is missing), so a prompt may "
              "differ from the one the weights learnt for a codec")


@dataclasses.dataclass(frozen=True)
class Release:
  """One published checkpoint: its model, where it is, and what the file must hold."""
  family: str
  variant: str
  file: str | None  # the published file name (None: the source does not name it)
  url: str
  licence: str
  tensors: int  # state_dict entries (parameters and buffers)
  params: int  # scalars in the parameters
  task_ids: Mapping[str, int] | None
  notes: str = ""


# What the two PromptCIR NTIRE 2024 checkpoints share (one Drive folder, one layout).
_PROMPTCIR_NTIRE24 = dict(
    url="https://drive.google.com/drive/folders/1oxOVDK845rikuwWiMICHUv5nFGJjA7pV "
        "(README of github.com/lbc12345/PromptCIR-NTIRE24)",
    licence="Apache-2.0 (the repository's LICENSE; the weights have no separate terms)",
    tensors=870, params=34_754_927, task_ids=None)

RELEASES = {
    "ucip-middle": Release(
        family="ucip", variant="middle", file=None,
        url="https://drive.google.com/file/d/1X1632j5F8r0DZjzjurBA_gpliW7Aod8Z/view "
            "(README of github.com/lixinustc/UCIP_MLP_source_code)",
        licence="none stated (the repository has no LICENSE file; ask the authors)",
        tensors=1066, params=11_424_291,
        task_ids={"jpeg": 0, "hevc": 1, "vvc": 2, "cheng2020-*-mse": 3,
                  "cheng2020-*-ms-ssim": 4, "external:hific": 5},
        notes="UCIP_MLP (UCIP_Middle) of model_ucip.py, x4; the README does not name the file "
              "(train_middle.py saves model_<step>.pt and model_E_<step>.pt, the EMA); "
              + _UCIP_NOTE),
    "promptcir-ntire24-1": Release(
        family="promptcir", variant="official", file="model_best.pth",
        **_PROMPTCIR_NTIRE24,
        notes="MyModel(decoder=True), x1, blind; 868 parameters + 2 relative position index "
              "buffers; first of the two NTIRE 2024 checkpoints (restore --preset "
              "promptcir-ntire24 averages both)"),
    "promptcir-ntire24-2": Release(
        family="promptcir", variant="official", file="model_best2.pth",
        **_PROMPTCIR_NTIRE24,
        notes="second NTIRE 2024 checkpoint (test_model.py --ckpt_path2)"),
}


def release(name: str) -> Release:
  if name not in RELEASES:
    raise KeyError(f"unknown release {name!r}; known: {', '.join(RELEASES)} "
                   "(python -m csr_jax.zoo list)")
  return RELEASES[name]


def table_text() -> str:
  """The releases and the presets that use them, as `list` prints them."""
  from csr_jax import models
  lines = ["| name | model | file | tensors | params | task ids | licence |",
           "|---|---|---|---|---|---|---|"]
  for name, r in RELEASES.items():
    tasks = ", ".join(f"{k}={v}" for k, v in r.task_ids.items()) if r.task_ids else "blind"
    lines.append(f"| {name} | {r.family} {r.variant} | {r.file or '(not named)'} | "
                 f"{r.tensors} | {r.params:,} | {tasks} | {r.licence} |")
  lines.append("")
  for name, r in RELEASES.items():
    lines += [f"{name}: {r.url}", f"  {r.notes}"]
  presets = [(n, f, p) for f in models.FAMILIES for n, p in models.spec(f).presets.items()]
  if presets:
    lines += ["", "presets (python -m csr_jax.restore --preset NAME):"]
    lines += [f"  {n} ({f} {p.variant}, {p.checkpoints} checkpoint(s)): {p.about}"
              for n, f, p in presets]
  return "\n".join(lines)


def _summary(exc) -> str:
  """The strict loader's findings, three examples of each."""
  parts = []
  for what, items in (("missing", exc.missing), ("unexpected", exc.unexpected),
                      ("mis-shaped", exc.misshaped)):
    if items:
      more = f", +{len(items) - 3} more" if len(items) > 3 else ""
      parts.append(f"{len(items)} {what} ({'; '.join(map(str, items[:3]))}{more})")
  return ", ".join(parts)


def import_(name: str, file, out, *, key: str | None = None) -> dict:
  """Checks `file` against release `name` and writes the params directory `out`; returns its
  meta (what `csr_jax.json` records)."""
  from csr_jax import checkpoint, convert, paths, weights
  from csr_jax import conversion as core
  from csr_jax.tree import flatten
  rel = release(name)
  where = paths.resolve(file)
  source = paths.display(where)
  sd = convert.strip_module_prefix(core.load_torch_file(where, key))
  r = weights.ref(rel.family, rel.variant, task_ids=rel.task_ids)
  graphdef, rest, target = weights.abstract(r)
  table = r.spec.torch_table(weights.merge(graphdef, rest, target))
  count = f"{rel.tensors} tensors expected, the file has {len(sd)}"
  try:
    flat = core.flat_from_torch(table, {k: tuple(v.shape) for k, v in flatten(target).items()},
                                sd, source)
  except core.ConversionError as exc:
    raise core.ConversionError(f"{source}: not the {name} layout ({rel.family} {rel.variant}; "
                               f"{count}): {_summary(exc)}") from None
  if len(sd) != rel.tensors:  # the table and the release disagree: a bug here, not in the file
    raise ValueError(f"{source}: matches the {rel.family} {rel.variant} table but {count}")
  params = core.load_flat_params(target, flat, source)
  meta = r.meta(source=source, release=name, file=rel.file, url=rel.url, licence=rel.licence,
                sha256=paths.sha256(where), notes=rel.notes)
  checkpoint.write_params(out, params, meta)
  return meta


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m csr_jax.zoo",
                              description="Published weights: list them, import a download.")
  sub = p.add_subparsers(dest="command", required=True)
  sub.add_parser("list", help="print the published checkpoints and presets")
  i = sub.add_parser("import", help="check a downloaded file and write a params directory")
  i.add_argument("name", help="release name (see list)")
  i.add_argument("file", help="the downloaded .pth / .pt")
  i.add_argument("--out", required=True, help="output directory (must not exist)")
  i.add_argument("--key", default=None, help="nested dict holding the state_dict (e.g. params)")
  for s in sub.choices.values():
    s.add_argument("--verbose", action="store_true", help="print tracebacks")
  return p


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  from csr_jax import logging_utils
  logging_utils.quiet_libraries()
  def body():
    if args.command == "list":
      print(table_text())
    else:
      meta = import_(args.name, args.file, args.out, key=args.key)
      print(f"wrote {args.out}: {args.name} ({meta['name']} {meta['variant']}), "
            f"{RELEASES[args.name].tensors} tensors, sha256 {meta['sha256']}")

  return cli.guarded(body, args.verbose)

if __name__ == "__main__":
  sys.exit(main())
