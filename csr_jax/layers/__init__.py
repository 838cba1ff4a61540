"""PyTorch-matching primitives, each with a parity test in tests/layers/."""

from csr_jax.layers.act import gelu, leaky_relu, relu
from csr_jax.layers.blocks import ChannelAttention, Mlp, OverlapPatchEmbed
from csr_jax.layers.conv import Conv2d, Linear, conv2d, depthwise_conv2d
from csr_jax.layers.init import KeyStream
from csr_jax.layers.norm import LayerNorm, instance_norm, layer_norm
from csr_jax.layers.resize import (pixel_shuffle, pixel_unshuffle, resize_bicubic,
                                   resize_bilinear, upsample_nearest)
from csr_jax.layers.window import (WindowAttention, relative_position_index,
                                   shift_attention_mask, window_partition, window_reverse)
from csr_jax.layers.axial import axial_sample
from csr_jax.layers.blocking import blocking_edges
from csr_jax.layers.category_attention import category_attention
from csr_jax.layers.non_local import NonLocal, non_local_mean
from csr_jax.layers.ocab import overlap_cross_attention, overlapping_windows
from csr_jax.layers.remat import sequenced_checkpoint
from csr_jax.layers.restormer import GDFN, MDTA
