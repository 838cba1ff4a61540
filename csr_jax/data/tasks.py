"""Codec names, UCIP task ids and the papers' codec grids: one torch-free table for prep and reader.

Codec names as stored in the `codec` feature: `jpeg`, `webp`, `hevc`, `vvc`,
`cheng2020-{anchor,attn}-{mse,ms-ssim}` and `external:<name>` (e.g. `external:hific`).
"""

TASK_IDS = {"jpeg": 0, "hevc": 1, "vvc": 2, "cheng2020": 3, "external": 4, "webp": 5}

LEARNED = tuple(f"cheng2020-{a}-{m}" for a in ("anchor", "attn") for m in ("mse", "ms-ssim"))
BUILTIN = ("jpeg", "webp", "hevc", "vvc") + LEARNED

# Codecs whose quality number grows with fidelity (JPEG/WebP quality, compressai level, HiFiC
# low=1/med=2/high=3); for HEVC/VVC the number is a QP and grows as fidelity drops.
_QP_CODECS = ("hevc", "vvc")

GRIDS = {
    "ucip": {"jpeg": (10, 20, 30, 40), "hevc": (32, 37, 42, 47), "vvc": (32, 37, 42, 47),
             "cheng2020-anchor-mse": (1, 2, 3, 4), "external:hific": (1, 2, 3)},
    "promptcir": {"jpeg": (10, 20, 30, 40, 50, 60, 70)},
    "cisr": {"jpeg": (10, 20, 30, 40, 50), "webp": (5, 10, 20, 30, 40)},
}


def family(codec: str) -> str:
  """The task family of a codec name: cheng2020 variants share one, externals another."""
  if codec.startswith("external:"):
    return "external"
  if codec.startswith("cheng2020-"):
    if codec not in LEARNED:
      raise ValueError(f"codec {codec!r}: unknown learned codec; known: {', '.join(LEARNED)}")
    return "cheng2020"
  if codec not in BUILTIN:
    raise ValueError(f"codec {codec!r}: unknown; known: {', '.join(BUILTIN)}, external:<name>")
  return codec


def task_id(codec: str) -> int:
  return TASK_IDS[family(codec)]


def higher_is_better(codec: str) -> bool:
  """Whether a larger quality number means a higher-fidelity (and larger) bitstream."""
  return family(codec) not in _QP_CODECS


def parse_codec_arg(arg: str) -> tuple[str, tuple[int, ...]]:
  """'jpeg:10,20' -> ('jpeg', (10, 20)); 'external:hific:1,2,3' -> ('external:hific', (1, 2, 3))."""
  name, sep, qs = arg.rpartition(":")
  if not sep or not name:
    raise ValueError(f"--codec {arg!r}: expected NAME:Q1,Q2,... (e.g. jpeg:10,20)")
  try:
    qualities = tuple(int(q) for q in qs.split(","))
  except ValueError:
    raise ValueError(f"--codec {arg!r}: qualities must be integers") from None
  if len(set(qualities)) != len(qualities):
    raise ValueError(f"--codec {arg!r}: repeated quality")
  if name.startswith("external:") and not name[len("external:"):]:
    raise ValueError(f"--codec {arg!r}: external codecs need a name (external:<name>:Q,...)")
  family(name)
  return name, qualities


def worse_order(codec: str, qualities) -> list[int]:
  """Qualities sorted from best to worst fidelity."""
  return sorted(qualities, reverse=higher_is_better(codec))
