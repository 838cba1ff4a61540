"""One ('data',) mesh over every device of every process; batch split, everything else replicated."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def local_batch_size(global_batch: int, mesh: Mesh) -> int:
  """This process's share; the global batch must split evenly over devices and processes."""
  n = mesh.devices.size
  if global_batch % n:
    raise ValueError(f"config.data.batch_size {global_batch} is not a multiple of {n} devices")
  return global_batch // jax.process_count()


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Host numpy batch (this process's rows) -> global jax.Arrays sharded over 'data'."""
  sh = data_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sh, np.asarray(v)) for k, v in local.items()}


def abstract_like(tree, sharding):
  """ShapeDtypeStructs carrying `sharding`: restore targets valid on any device count."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
