"""The malloc setting is opt-in: launch/local_cpu.sh and make demo export glibc's tunables, and
the benchmarks re-run themselves once with them (csr_jax.hostenv); importing csr_jax changes
nothing."""

import os
import subprocess
import sys

import pytest

from csr_jax import hostenv
from tests.conftest import REPO

SCRIPT = ("import os, sys; from csr_jax import hostenv; hostenv.reexec_with_hugepages(); "
          "print(os.environ.get('GLIBC_TUNABLES', ''), sys.argv[1:])")


def _env(update):
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "CSR_JAX_HUGEPAGES")}
  return {**env, **update}


def run(env_update):
  out = subprocess.run([sys.executable, "-c", SCRIPT, "a b", "--flag=1"], env=_env(env_update),
                       cwd=REPO, capture_output=True, text=True, check=True, timeout=120)
  return out.stdout.strip()


@pytest.mark.skipif(not hostenv._glibc_supports_hugetlb(), reason="needs glibc >= 2.35")
def test_reexec_sets_the_tunable_and_keeps_argv():
  assert run({}) == f"{hostenv.TUNABLE} ['a b', '--flag=1']"
  # Other tunables are kept, after ours so that they win; an explicit setting or
  # CSR_JAX_HUGEPAGES=0 is left alone.
  assert run({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}).startswith(
      f"{hostenv.TUNABLE}:glibc.malloc.arena_max=2 ")
  assert run({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}).startswith("glibc.malloc.hugetlb=0 ")
  assert run({"CSR_JAX_HUGEPAGES": "0"}) == "['a b', '--flag=1']"


LD_SO = "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"


@pytest.mark.skipif(not (hostenv._glibc_supports_hugetlb() and os.path.exists(LD_SO)),
                    reason="needs glibc >= 2.35 on x86-64 Linux")
def test_glibc_takes_ours_and_lets_the_callers_later_value_win():
  tunables = run({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}).split(" ")[0]
  out = subprocess.run([LD_SO, "--list-tunables"], env=_env({"GLIBC_TUNABLES": tunables}),
                       capture_output=True, text=True, check=True, timeout=60).stdout
  seen = dict(line.split(": ")[0:2] for line in out.splitlines() if line.startswith("glibc.malloc"))
  assert {k: seen[f"glibc.malloc.{k}"].split()[0] for k in ("hugetlb", "arena_max", "mmap_max")} \
      == {"hugetlb": "0x1", "arena_max": "0x2", "mmap_max": "0"}


def test_local_cpu_launcher_exports_the_tunable(tmp_path):
  fake = tmp_path / "python"  # stands in for the interpreter: prints what it was given
  fake.write_text('#!/bin/sh\necho "$GLIBC_TUNABLES|$JAX_PLATFORMS|$*"\n')
  fake.chmod(0o755)
  launch = lambda update: subprocess.run(
      ["bash", str(REPO / "launch" / "local_cpu.sh"), "configs/ucip.py:demo", "runs/x"],
      env=_env({"CSR_PYTHON": str(fake), **update}), capture_output=True, text=True,
      check=True, timeout=60).stdout.strip()
  args = "-m csr_jax.main --config configs/ucip.py:demo --workdir runs/x"
  assert launch({}) == f"{hostenv.TUNABLE}|cpu|{args}"
  assert launch({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}).startswith(
      f"{hostenv.TUNABLE}:glibc.malloc.arena_max=2|")
  assert launch({"CSR_JAX_HUGEPAGES": "0"}) == f"|cpu|{args}"


def test_make_demo_exports_the_same_tunable():
  """The Makefile cannot import hostenv (no venv before setup), so its copy is checked here,
  as make itself reads it (`make -pn` prints its database and runs nothing)."""
  db = subprocess.run(["make", "-pn", "demo"], cwd=REPO, capture_output=True, text=True,
                      timeout=60).stdout
  assert f"demo: GLIBC_TUNABLES := {hostenv.TUNABLE}" in db.splitlines()
