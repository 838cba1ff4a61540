"""Category self-attention (ATD's AC-MSA, reused by PromptSR's local prompting layers).

Tokens are sorted by an integer category (stable, so ties keep raster order), the sorted
sequence is cut into sub-groups of `group_size` tokens, each sub-group attends within itself,
and the result is scattered back to the original order. Shapes are static (the sort is an
argsort, padding depends only on N), so it jits; memory is O(N * group_size), never O(N^2).

Unlike ATD, which pads the last sub-group with flipped copies of real tokens (so those tokens
count twice as keys), padding keys are masked out: every token attends exactly to the real
tokens of its own sub-group, which is what the dense reference in the tests computes.
"""

import jax
import jax.numpy as jnp


def category_order(category):
  """[B, N] int -> (order, inverse): stable sort indices and the permutation that undoes them."""
  order = jnp.argsort(category, axis=-1, stable=True)
  inverse = jnp.argsort(order, axis=-1)
  return order, inverse


def category_attention(q, k, v, category, group_size: int, scale):
  """Attention of q over k/v restricted to same-sub-group tokens after sorting by `category`.

  q, k, v: [B, N, heads, dh]; category: [B, N] integer; scale: scalar (or broadcastable)
  multiplier of the logits. Returns [B, N, heads, dh] in the original token order. Logits and
  softmax are float32 for any input dtype (bf16 training); the output has v's dtype.
  """
  b, n, h, dh = q.shape
  gs = min(n, group_size)
  ng = -(-n // gs)
  pad = ng * gs - n
  order, inverse = category_order(category)

  def sort_pad(t):
    t = jnp.take_along_axis(t, order[:, :, None, None], axis=1)
    t = jnp.pad(t, ((0, 0), (0, pad), (0, 0), (0, 0)))
    return t.reshape(b, ng, gs, h, dh).transpose(0, 1, 3, 2, 4)  # b, ng, h, gs, dh

  qs, ks, vs = sort_pad(q), sort_pad(k), sort_pad(v)
  logits = jnp.einsum("bghid,bghjd->bghij", qs, ks, preferred_element_type=jnp.float32) * scale
  if pad:
    valid = (jnp.arange(ng * gs) < n).reshape(ng, gs)
    logits = jnp.where(valid[None, :, None, None, :], logits, -jnp.inf)
  attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.einsum("bghij,bghjd->bghid", attn, vs)
  out = out.transpose(0, 1, 3, 2, 4).reshape(b, ng * gs, h, dh)[:, :n]
  return jnp.take_along_axis(out, inverse[:, :, None, None], axis=1)


def category_attention_dense(q, k, v, category, group_size: int, scale):
  """O(N^2) reference: full attention masked to tokens in the same sorted sub-group."""
  n = q.shape[1]
  order, inverse = category_order(category)
  group = inverse // min(n, group_size)  # sub-group of each token (its rank // gs)
  same = group[:, :, None] == group[:, None, :]  # b, n, n
  logits = jnp.einsum("bihd,bjhd->bhij", q, k) * scale
  logits = jnp.where(same[:, None], logits, -jnp.inf)
  attn = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum("bhij,bjhd->bihd", attn, v)
