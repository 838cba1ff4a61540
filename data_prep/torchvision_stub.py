"""A stand-in `torchvision` so that `import compressai` works with the CPU torch build.

compressai only imports torchvision to list transform classes for its registry; the CPU torch
wheel has no working torchvision (its _C.so needs CUDA libraries). `install()` registers empty
modules, and only when no torchvision is importable.
"""

import importlib.util
import sys
import types


def install() -> bool:
  """Registers the stand-in if torchvision is absent; True when it did."""
  if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
    return False
  tv = types.ModuleType("torchvision")
  tv.transforms = types.ModuleType("torchvision.transforms")
  sys.modules["torchvision"] = tv
  sys.modules["torchvision.transforms"] = tv.transforms
  return True


def import_compressai():
  install()
  import compressai  # pylint: disable=g-import-not-at-top
  return compressai
