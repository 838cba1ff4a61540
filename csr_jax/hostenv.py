"""Host memory setting for XLA:CPU: huge pages for malloc, and freed blocks kept for the next step.

XLA:CPU mallocs each step's temporaries afresh (7.9 GB for a UCIP `middle` step at batch 2), and
glibc maps them freshly: 8.6 M page faults and 45 s of system time in 5 steps. Huge pages
(`glibc.malloc.hugetlb=1`) cut that to 0.39 M (step 12-14 s -> 9 s); one arena, no mmaps and no
trimming keep the freed blocks in the heap (a PromptCIR step: 10-20k faults -> 0, 10.2 -> 9.0 s,
compile 52 -> 59 s; means of 3 rounds). glibc >= 2.35 reads it at process start, so it is opt-in:
`launch/local_cpu.sh` and `make demo` export it, the speed benchmarks re-execute themselves once
with it, and `CSR_JAX_HUGEPAGES=0` turns both off. Tunables the caller set come last and win.
"""

import os
import sys

TUNABLE = ("glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
           "glibc.malloc.trim_threshold=68719476736")


def _glibc_supports_hugetlb() -> bool:
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
  except (AttributeError, ValueError, OSError):
    return False
  major, minor = (int(v) for v in version.split(".")[:2])
  return name == "glibc" and (major, minor) >= (2, 35)


def reexec_with_hugepages() -> None:
  """Re-runs the current command (same argv, `python -m` included) with the tunable set.

  No-op when it is already set, off Linux/glibc < 2.35, or with CSR_JAX_HUGEPAGES=0. Call it
  first thing in a benchmark's `main()`, before any work whose result would be lost.
  """
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  if ("glibc.malloc.hugetlb" in tunables or os.environ.get("CSR_JAX_HUGEPAGES") == "0"
      or not sys.platform.startswith("linux") or not _glibc_supports_hugetlb()):
    return
  env = dict(os.environ, GLIBC_TUNABLES=":".join(t for t in (TUNABLE, tunables) if t))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, list(sys.orig_argv), env)
