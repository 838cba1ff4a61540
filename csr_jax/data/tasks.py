"""Codec names, quality ranges and the papers' codec grids, shared by prep and reader (no torch).

Codec names as stored in the `codec` feature: `jpeg`, `webp`, `hevc`, `vvc`,
`cheng2020-{anchor,attn}-{mse,ms-ssim}`, `external:<name>` (e.g. `external:hific`) and `none`
(the clean bicubic LR). Which prompt a codec gets is not a property of the data: each family's
spec maps codec names to its own task ids (`csr_jax/models/<family>.py: SPEC.task_ids`).
"""

LEARNED = tuple(f"cheng2020-{a}-{m}" for a in ("anchor", "attn") for m in ("mse", "ms-ssim"))
BUILTIN = ("jpeg", "webp", "hevc", "vvc", "none") + LEARNED

# Codecs whose quality number grows with fidelity (JPEG/WebP quality, compressai level, HiFiC
# low=1/med=2/high=3); for HEVC/VVC the number is a QP and grows as fidelity drops.
_QP_CODECS = ("hevc", "vvc")

# Inclusive quality ranges per codec family. JPEG starts at 1 because libjpeg treats 0 as 1
# (two labels for one setting); WebP takes Pillow's 0-100; HEVC/VVC QPs are 0-51 at 8 bits;
# compressai's zoo has levels 1-6; HiFiC's released models are low/med/high = 1/2/3; `none`
# has the single quality 0. Other external commands take any integer (their own scale).
QUALITY_RANGES = {"jpeg": (1, 100), "webp": (0, 100), "hevc": (0, 51), "vvc": (0, 51),
                  "cheng2020": (1, 6), "external:hific": (1, 3), "none": (0, 0)}



def family(codec: str) -> str:
  """The codec's family: cheng2020 variants share one, external commands another."""
  if codec.startswith("external:"):
    return "external"
  if codec.startswith("cheng2020-"):
    if codec not in LEARNED:
      raise ValueError(f"codec {codec!r}: unknown learned codec; known: {', '.join(LEARNED)}")
    return "cheng2020"
  if codec not in BUILTIN:
    raise ValueError(f"codec {codec!r}: unknown; known: {', '.join(BUILTIN)}, external:<name>")
  return codec


def quality_range(codec: str) -> tuple[int, int] | None:
  """(lowest, highest) quality accepted for `codec`; None when any integer goes."""
  return QUALITY_RANGES.get(codec) or QUALITY_RANGES.get(family(codec))


def check_qualities(codec: str, qualities, what: str = "--codec") -> None:
  """ValueError (one line, naming the codec) for a quality outside the codec's range."""
  rng = quality_range(codec)
  bad = [q for q in qualities if rng and not rng[0] <= q <= rng[1]]
  if bad:
    lo, hi = rng
    want = f"{lo}" if lo == hi else f"{lo}-{hi}"
    raise ValueError(f"{what} {codec}: quality {bad[0]} out of range (accepted: {want})")


def higher_is_better(codec: str) -> bool:
  """Whether a larger quality number means a higher-fidelity (and larger) bitstream."""
  return family(codec) not in _QP_CODECS


def _name(arg: str, name: str, what: str) -> str:
  if not name:
    raise ValueError(f"{what} {arg!r}: expected NAME:Q1,Q2,... (e.g. jpeg:10,20)")
  if name.startswith("external:") and not name[len("external:"):]:
    raise ValueError(f"{what} {arg!r}: external codecs need a name (external:<name>:Q,...)")
  family(name)
  return name


def parse_codec_arg(arg: str) -> tuple[str, tuple[int, ...]]:
  """'jpeg:10,20' -> ('jpeg', (10, 20)); 'external:hific:1,2,3' -> ('external:hific', (1, 2, 3));
  'none' (or 'none:0') -> ('none', (0,))."""
  if arg == "none":
    return "none", (0,)
  name, sep, qs = arg.rpartition(":")
  if not sep:
    name = ""
  name = _name(arg, name, "--codec")
  try:
    qualities = tuple(int(q) for q in qs.split(","))
  except ValueError:
    raise ValueError(f"--codec {arg!r}: qualities must be integers") from None
  if len(set(qualities)) != len(qualities):
    raise ValueError(f"--codec {arg!r}: repeated quality")
  check_qualities(name, qualities)
  return name, qualities


def parse_random_arg(arg: str) -> tuple[str, int, int]:
  """'jpeg:10-70' -> ('jpeg', 10, 70): one quality per image drawn from 10..70 inclusive."""
  name, sep, span = arg.rpartition(":")
  name = _name(arg, name if sep else "", "--random_quality")
  lo, dash, hi = span.partition("-")
  try:
    lo, hi = int(lo), int(hi)
  except ValueError:
    raise ValueError(f"--random_quality {arg!r}: expected NAME:LOW-HIGH (e.g. jpeg:10-70)"
                     ) from None
  if not dash or lo > hi:
    raise ValueError(f"--random_quality {arg!r}: expected NAME:LOW-HIGH with LOW <= HIGH")
  check_qualities(name, (lo, hi), "--random_quality")
  return name, lo, hi


def worse_order(codec: str, qualities) -> list[int]:
  """Qualities sorted from best to worst fidelity."""
  return sorted(qualities, reverse=higher_is_better(codec))
