"""csr_jax.hostenv: entry points re-run themselves once with glibc's huge-page malloc tunable."""

import os
import subprocess
import sys

import pytest

from csr_jax import hostenv
from tests.conftest import REPO

SCRIPT = ("import os, sys; from csr_jax import hostenv; hostenv.reexec_with_hugepages(); "
          "print(os.environ.get('GLIBC_TUNABLES', ''), sys.argv[1:])")


def run(env_update):
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "CSR_JAX_HUGEPAGES")}
  env.update(env_update)
  out = subprocess.run([sys.executable, "-c", SCRIPT, "a b", "--flag=1"], env=env, cwd=REPO,
                       capture_output=True, text=True, check=True, timeout=120)
  return out.stdout.strip()


@pytest.mark.skipif(not hostenv._glibc_supports_hugetlb(), reason="needs glibc >= 2.35")
def test_reexec_sets_the_tunable_and_keeps_argv():
  assert run({}) == f"{hostenv.TUNABLE} ['a b', '--flag=1']"
  # Other tunables are kept; an explicit setting or CSR_JAX_HUGEPAGES=0 is left alone.
  assert run({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}).startswith(
      f"glibc.malloc.arena_max=2:{hostenv.TUNABLE} ")
  assert run({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}).startswith("glibc.malloc.hugetlb=0 ")
  assert run({"CSR_JAX_HUGEPAGES": "0"}) == "['a b', '--flag=1']"
