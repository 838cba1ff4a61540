"""Guided non-local mean over the whole image, computed in query chunks.

u(m) = sum_n w(m, n) z(n), w(m, n) = keep(n) exp(-d_g(m, n) / h(m)^2) / sum over kept n,
where d_g is the mean squared difference of `patch` x `patch` patches of the guide g (edge
padded), h a per-pixel bandwidth and keep(n) = 0 for candidates dropped by the blocking-edge
detector. Queries are processed `chunk` at a time under `jax.checkpoint`, so forward and
backward memory are O(HW x chunk) instead of O(HW^2); rows of the weight matrix do not
depend on the chunking, so any chunk size gives the unchunked result. Distances, softmax and
the weighted sum run in float32 at full matmul precision whatever the input dtype (a bfloat16
d = |a|^2 + |b|^2 - 2ab cancels to noise); the result has z's dtype.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from csr_jax.layers.conv import Conv2d

_MASKED = -1e30


def guide_patches(g, patch: int):
  """[B, H, W, C] -> [B, H, W, C * patch^2]: the edge-padded patch around every pixel."""
  if patch == 1:
    return g
  r = patch // 2
  h, w = g.shape[1:3]
  gp = jnp.pad(g, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
  return jnp.concatenate([gp[:, i:i + h, j:j + w] for i in range(patch) for j in range(patch)],
                         axis=-1)


def non_local_mean(z, g, h, keep, chunk: int = 1024, patch: int = 3):
  """z: values [B, H, W, C]; g: guide [B, H, W, Cg]; h: bandwidth [B, H, W] (> 0);
  keep: {0, 1} candidate mask [B, H, W] (all kept where it keeps nothing)."""
  out_dtype, f32 = z.dtype, jnp.float32
  z, g, h = z.astype(f32), g.astype(f32), h.astype(f32)
  hp = jax.lax.Precision.HIGHEST
  b, hh, ww, c = z.shape
  n = hh * ww
  f = guide_patches(g, patch).reshape(b, n, -1)
  dim = f.shape[-1]
  sq = jnp.sum(f * f, axis=-1) / dim
  vals = z.reshape(b, n, c)
  keep = keep.reshape(b, n) > 0
  keep = jnp.where(jnp.any(keep, axis=1, keepdims=True), keep, True)
  inv_h2 = 1.0 / jnp.square(h.reshape(b, n))

  def rows(args):
    fq, sqq, ihq = args                                           # [B, c, D], [B, c], [B, c]
    cross = jnp.einsum("bqd,bnd->bqn", fq, f, precision=hp)
    d = sqq[:, :, None] + sq[:, None, :] - 2.0 * cross / dim
    logits = jnp.where(keep[:, None, :], -jnp.maximum(d, 0.0) * ihq[:, :, None], _MASKED)
    logits = logits - jnp.max(logits, axis=-1, keepdims=True)
    e = jnp.where(keep[:, None, :], jnp.exp(logits), 0.0)
    wgt = e / jnp.sum(e, axis=-1, keepdims=True)
    return jnp.einsum("bqn,bnc->bqc", wgt, vals, precision=hp)

  chunk = max(1, min(chunk, n))
  n_chunks = -(-n // chunk)
  pad = n_chunks * chunk - n

  def split(a):
    a = jnp.pad(a, ((0, 0), (0, pad)) + ((0, 0),) * (a.ndim - 2))
    return jnp.moveaxis(a.reshape((b, n_chunks, chunk) + a.shape[2:]), 1, 0)

  out = jax.lax.map(jax.checkpoint(rows), (split(f), split(sq), split(inv_h2)))
  out = jnp.moveaxis(out, 0, 1).reshape(b, n_chunks * chunk, c)[:, :n]
  return out.reshape(b, hh, ww, c).astype(out_dtype)


class NonLocal(nnx.Module):
  """Non-local mean of z guided by g, bandwidth h = softplus(conv1x1(relu(conv3x3(g)))) + h_min:
  CISR "employ[s] a simple convolutional neural network to adaptively estimate h from g" (two
  convs, ReLU between; softplus + h_min, ours, keep h > 0). h is float32."""

  def __init__(self, in_channels: int = 3, hidden: int = 64, chunk: int = 1024,
               patch: int = 3, h_min: float = 1e-3, *, rngs: nnx.Rngs):
    self.chunk, self.patch, self.h_min = chunk, patch, h_min
    self.conv1 = Conv2d(in_channels, hidden, 3, padding=1, rngs=rngs)
    self.conv2 = Conv2d(hidden, 1, 1, rngs=rngs)

  def bandwidth(self, g):
    h = self.conv2(jax.nn.relu(self.conv1(g)))[..., 0].astype(jnp.float32)
    return jax.nn.softplus(h) + self.h_min

  def __call__(self, z, g, keep, chunk: int | None = None):
    return non_local_mean(z, g, self.bandwidth(g), keep,
                          self.chunk if chunk is None else chunk, self.patch)
