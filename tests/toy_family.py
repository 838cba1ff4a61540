"""A fifth model family defined outside csr_jax/ (issue: adding a family edits nothing there).

The spec, the NNX model, its PyTorch twin, its conversion table and its config live in this one
file; the config names the family as 'tests.toy_family:SPEC', which every tool resolves.
"""

import jax
import numpy as np
import torch
from flax import nnx

from csr_jax import config_lib
from csr_jax.conversion import Entry, ordered_table
from csr_jax.family import Evaluation, FamilySpec, Inference
from csr_jax.layers import init
from csr_jax.layers.conv import Conv2d
from csr_jax.layers.resize import pixel_shuffle, upsample_nearest


class Toy(nnx.Module):
  """conv-GELU-conv-pixel shuffle on a nearest skip, plus a per-task colour bias."""

  def __init__(self, scale: int = 2, width: int = 8, num_task: int = 2, *, rngs):
    self.scale = scale
    self.body = nnx.List([Conv2d(3, width, 3, padding=1, rngs=rngs),
                          Conv2d(width, 3 * scale * scale, 3, padding=1, rngs=rngs)])
    self.task_bias = nnx.Param(init.zeros(None, (num_task, 3)))

  def __call__(self, x, task_id):
    y = pixel_shuffle(self.body[1](jax.nn.gelu(self.body[0](x), approximate=False)), self.scale)
    return y + upsample_nearest(x, self.scale) + self.task_bias[...][task_id][:, None, None, :]


def torch_table(model) -> list[Entry]:
  return ordered_table(model, {Toy: (("task_bias",), ("body",))}, family="toy")


SPEC = FamilySpec(name="toy", variants={"tiny": dict(scale=2)}, build=Toy,
                  torch_table=torch_table, task_ids={"jpeg": 0, "webp": 1},
                  inference=Inference(multiple=4, pad_mode="reflect"),
                  evaluation=Evaluation(channel="y", best_metric="psnr_y"))


class TorchToy(torch.nn.Module):
  """The twin: the same network with torch module names (NCHW)."""

  def __init__(self, scale: int = 2, width: int = 8, num_task: int = 2):
    super().__init__()
    self.scale = scale
    self.task_bias = torch.nn.Parameter(torch.zeros(num_task, 3))
    self.body = torch.nn.ModuleList([torch.nn.Conv2d(3, width, 3, padding=1),
                                     torch.nn.Conv2d(width, 3 * scale * scale, 3, padding=1)])

  def forward(self, x, task_id):
    y = torch.nn.functional.pixel_shuffle(self.body[1](torch.nn.functional.gelu(
        self.body[0](x))), self.scale)
    skip = torch.nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")
    return y + skip + self.task_bias[task_id][:, :, None, None]


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="tiny", **config_lib.COMMON_ARGS)
  c = config_lib.base_config()
  c.model.name, c.model.variant = "tests.toy_family:SPEC", a.variant
  c.data.scale, c.data.patch_size, c.data.batch_size = 2, 8, 4
  c.optim.lr = 1e-3
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 2, 1, 2, 1
  return config_lib.apply_args(c, a)


del np
