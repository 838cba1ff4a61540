"""Host memory setting for XLA:CPU: back malloc's large blocks with transparent huge pages.

XLA:CPU allocates each execution's temporaries with malloc (7.9 GB for a UCIP `middle` train
step at batch 2). glibc serves such blocks with fresh mmaps, so every step touches millions of
new 4 KiB pages: 5 such steps measured here (`/usr/bin/time`) took 8.6 M minor page faults and
45 s of system time, about a third of the step time. glibc >= 2.35 advises its mmaps for
transparent huge pages when `GLIBC_TUNABLES` has `glibc.malloc.hugetlb=1` (0.39 M faults,
step 12-14 s -> 9 s on the same machine). glibc reads the tunable at process start, so it is
opt-in: `launch/local_cpu.sh` exports it, and the speed benchmarks (which measure) re-execute
themselves once with it. `CSR_JAX_HUGEPAGES=0` turns both off.

Huge pages still fault in (and the kernel zeroes them) every step: a PromptCIR train step took
~20k huge-page faults and 3-4 s of system time of its ~19 CPU-seconds. One arena, no mmaps and
no trimming keep the freed temporaries in the heap for the next step (0 faults, 0.2 s of system
time, step 10.3 -> 8.7 s, median of 8). The process keeps its peak heap, which a training job
needs again every step anyway. Settings already in GLIBC_TUNABLES come last, so they win.
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
