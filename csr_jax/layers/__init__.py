"""PyTorch-matching primitives, each with a parity test in tests/layers/."""

from csr_jax.layers.act import gelu, leaky_relu, relu
from csr_jax.layers.conv import Conv2d, Linear, conv2d, depthwise_conv2d
from csr_jax.layers.norm import LayerNorm, instance_norm, layer_norm
from csr_jax.layers.resize import (pixel_shuffle, pixel_unshuffle, resize_bicubic,
                                   resize_bilinear, upsample_nearest)
from csr_jax.layers.window import (WindowAttention, relative_position_index,
                                   shift_attention_mask, window_partition, window_reverse)
