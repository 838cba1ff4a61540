"""Small blocks that several families share, with the official torch module names.

`Mlp` (fc1 -> exact GELU -> fc2: timm's Mlp, used by UCIP, PromptCIR's prompt MLPs and
PromptSR's FFN), `ChannelAttention` (RCAN's squeeze-excite, torch Sequential slots
`attention.1` / `attention.3`: PromptCIR's CAB and CISR's RCAB) and `OverlapPatchEmbed` (one
conv `proj`: UCIP 5x5 with bias, PromptCIR 3x3 without).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from csr_jax.layers.act import gelu, relu
from csr_jax.layers.conv import Conv2d, Linear


class Mlp(nnx.Module):
  """fc1 -> exact GELU -> fc2 (dropout 0). `kernel_init`/`bias_init` go to both Linears."""

  def __init__(self, d_in: int, d_hidden: int, d_out: int | None = None, *, rngs,
               kernel_init=None, bias_init=None):
    kw = dict(rngs=rngs, kernel_init=kernel_init, bias_init=bias_init)
    self.fc1 = Linear(d_in, d_hidden, **kw)
    self.fc2 = Linear(d_hidden, d_in if d_out is None else d_out, **kw)

  def __call__(self, x):
    return self.fc2(gelu(self.fc1(x)))


class ChannelAttention(nnx.Module):
  """RCAN channel attention: x * sigmoid(conv1x1(relu(conv1x1(mean_hw(x))))). The slots mirror
  torch's Sequential(pool, conv, relu, conv, sigmoid), so paths read `attention.1.kernel`."""

  def __init__(self, channels: int, reduction: int, *, rngs, kernel_init=None, bias_init=None):
    kw = dict(rngs=rngs, kernel_init=kernel_init, bias_init=bias_init)
    self.attention = nnx.List([None, Conv2d(channels, channels // reduction, 1, **kw), None,
                               Conv2d(channels // reduction, channels, 1, **kw), None])

  def __call__(self, x):
    y = jnp.mean(x, axis=(1, 2), keepdims=True)
    return x * jax.nn.sigmoid(self.attention[3](relu(self.attention[1](y))))


class OverlapPatchEmbed(nnx.Module):
  """A k x k stride-1 'same' conv `proj` from the image to the embedding."""

  def __init__(self, in_channels: int, embed_dim: int, kernel_size: int = 3, bias: bool = True,
               *, rngs, kernel_init=None, bias_init=None):
    self.proj = Conv2d(in_channels, embed_dim, kernel_size, 1, kernel_size // 2, bias=bias,
                       rngs=rngs, kernel_init=kernel_init, bias_init=bias_init)

  def __call__(self, x):
    return self.proj(x)
