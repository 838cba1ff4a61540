"""CISR <-> PyTorch twin (`csr_jax/torch_twins/cisr.py`): project-defined layout.

Twin keys are the NNX paths with `kernel` -> `weight`. NNX keeps attributes sorted, so the
twin's registration order (its state_dict order) is spelled out per class in `ORDER`.
"""

from flax import nnx

from csr_jax.convert.core import Entry, auto_entry
from csr_jax.layers.conv import Conv2d
from csr_jax.layers.non_local import NonLocal
from csr_jax.models import cisr

ORDER = {
    cisr.CISR: ("arm", "rem"),
    cisr.CISRModule: ("non_local", "head", "body", "body_conv", "tail", "mix"),
    cisr.ResidualGroup: ("blocks", "conv"),
    cisr.RCAB: ("conv1", "conv2", "ca"),
    cisr.CALayer: ("down", "up"),
    cisr.Mix: ("conv1", "conv2"),
    NonLocal: ("conv1", "conv2"),
    Conv2d: ("kernel", "bias"),
}


def _walk(node, prefix: str):
  """(path, ndim) of every nnx.Param below `node`, in the twin's registration order."""
  join = lambda name: f"{prefix}.{name}" if prefix else str(name)
  if isinstance(node, nnx.Param):
    yield prefix, len(node.get_value().shape)
  elif isinstance(node, nnx.List):
    for i, child in enumerate(node):
      yield from _walk(child, join(i))
  elif node is not None:
    if type(node) not in ORDER:
      raise TypeError(f"convert.cisr: no registration order for {type(node).__name__} "
                      f"at {prefix!r}")
    for name in ORDER[type(node)]:
      yield from _walk(getattr(node, name), join(name))


def table(model) -> list[Entry]:
  """Entries in the twin's state_dict() order."""
  return [auto_entry(path, ndim) for path, ndim in _walk(model, "")]
