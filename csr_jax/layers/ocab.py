"""HAT's overlapping cross-attention (OCA) primitives on NHWC: each ws x ws query window attends
to the keys/values of an enlarged ows x ows window centred on it (torch: `nn.Unfold` with
kernel ows, stride ws, zero padding (ows-ws)/2), with a relative position bias."""

import numpy as np
import jax
import jax.numpy as jnp

from csr_jax.layers.window import add_bias


def overlap_window_size(ws: int, overlap_ratio: float) -> int:
  return int(ws * overlap_ratio) + ws


def overlapping_windows(x, ws: int, ows: int):
  """[B, H, W, C] -> [B * nW, ows * ows, C] in window_partition's window order.

  Equals `nn.Unfold(ows, stride=ws, padding=(ows-ws)//2)` + HAT's rearrange, built from
  reshapes and slices (no gather): window i spans block i plus the first ows-ws rows of
  block i+1 of the padded image.
  """
  b, h, w, c = x.shape
  p, extra = (ows - ws) // 2, ows - ws
  if extra % 2 or extra > ws or h % ws or w % ws:
    raise ValueError(f"overlapping_windows: need even ows-ws <= ws and H, W multiples of ws; "
                     f"got ws={ws}, ows={ows}, shape {x.shape}")
  nh, nw = h // ws, w // ws
  xp = jnp.pad(x, ((0, 0), (p, ws - p), (p, ws - p), (0, 0)))  # [B, (nh+1)ws, (nw+1)ws, C]
  xp = xp.reshape(b, nh + 1, ws, (nw + 1) * ws, c)
  rows = jnp.concatenate([xp[:, :nh], xp[:, 1:, :extra]], axis=2)  # [B, nh, ows, W', C]
  rows = rows.reshape(b, nh, ows, nw + 1, ws, c)
  win = jnp.concatenate([rows[:, :, :, :nw], rows[:, :, :, 1:, :extra]], axis=4)
  return win.transpose(0, 1, 3, 2, 4, 5).reshape(b * nh * nw, ows * ows, c)


def relative_position_index_oca(ws: int, ows: int) -> np.ndarray:
  """HAT `calculate_rpi_oca`: int64 [ws*ws, ows*ows], exactly as torch stores the buffer.

  The values can be negative (torch's indexing wraps them); index the (ws+ows-1)^2 table with
  `rpi % table_size`, which is a bijection onto the table.
  """
  ori = np.stack(np.meshgrid(np.arange(ws), np.arange(ws), indexing="ij")).reshape(2, -1)
  ext = np.stack(np.meshgrid(np.arange(ows), np.arange(ows), indexing="ij")).reshape(2, -1)
  rel = (ext[:, None, :] - ori[:, :, None]).transpose(1, 2, 0) + (ws - ows + 1)
  return (rel[..., 0] * (ws + ows - 1) + rel[..., 1]).astype(np.int64)


def overlap_cross_attention(q, k, v, table, rpi, num_heads: int, scale: float):
  """Attention of query windows q [B', ws*ws, C] to keys k and values v [B', ows*ows, C].

  table: [(ws+ows-1)^2, heads] bias table; rpi: relative_position_index_oca. Returns
  [B', ws*ws, C]; heads split channels as '(head d)'.
  """
  bw, nq, c = q.shape
  n = k.shape[1]
  d = c // num_heads
  qh = q.reshape(bw, nq, num_heads, d) * scale
  k, v = k.reshape(bw, n, num_heads, d), v.reshape(bw, n, num_heads, d)
  attn = jnp.einsum("bqhd,bkhd->bhqk", qh, k, preferred_element_type=jnp.float32)
  idx = np.asarray(rpi).reshape(-1) % table.shape[0]
  attn = add_bias(attn, table[idx].reshape(nq, n, num_heads).transpose(2, 0, 1))
  attn = jax.nn.softmax(attn, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(bw, nq, c)
