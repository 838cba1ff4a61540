"""Chunked guided non-local mean on a real crop: chunk-invariance, masking, h from the guide,
torch parity."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from csr_jax.layers.blocking import blocking_edges
from csr_jax.layers.non_local import NonLocal, non_local_mean
from tests.conftest import kodak_crop


@pytest.fixture(scope="module")
def pair():
  """(z: JPEG q10 of the crop, g: the uncompressed crop, keep: 1 - blocking mask of z)."""
  g = kodak_crop(40, 48, "kodim05", 120, 200)
  buf = io.BytesIO()
  Image.fromarray((g[0] * 255).round().astype(np.uint8)).save(buf, format="JPEG", quality=10)
  buf.seek(0)
  with Image.open(buf) as im:
    z = (np.asarray(im.convert("RGB"), np.float32) / 255.0)[None]
  return z, g, 1.0 - np.asarray(jax.jit(blocking_edges)(z))


def test_chunked_equals_unchunked(pair):
  z, g, keep = pair
  model = NonLocal(rngs=nnx.Rngs(0))
  h = model.bandwidth(jnp.asarray(z))
  full = np.asarray(non_local_mean(z, g, h, keep, chunk=40 * 48))
  for chunk in (64, 100, 517):  # divisors and non-divisors of HW = 1920
    np.testing.assert_allclose(np.asarray(non_local_mean(z, g, h, keep, chunk=chunk)), full,
                               atol=1e-6, rtol=0)
  assert 0.0 <= full.min() and full.max() <= 1.0  # convex combination of pixels of z


def test_masked_candidates_get_no_weight(pair):
  """A small bandwidth makes u(m) the value of the best-matching kept candidate: u never
  equals a masked pixel's value exactly where no kept pixel has the same colour."""
  z, g, keep = pair
  zs = jnp.asarray(z)
  u_all = np.asarray(non_local_mean(zs, g, jnp.full(z.shape[:3], 1e-4), np.ones_like(keep)))
  np.testing.assert_allclose(u_all, z, atol=1e-5)  # each pixel is its own best match
  u = np.asarray(non_local_mean(zs, g, jnp.full(z.shape[:3], 1e-4), keep))
  dropped = keep[0] == 0
  assert dropped.sum() > 50
  assert np.abs(u - z)[0][dropped].max(axis=-1).mean() > 1e-3
  np.testing.assert_allclose(u[0][~dropped], z[0][~dropped], atol=1e-5)


def test_bandwidth_comes_from_the_guide(pair):
  """CISR: "estimate h from g". z (JPEG q10) and g (clean) differ, so h(z) would not do."""
  z, g, keep = pair
  model = NonLocal(hidden=8, rngs=nnx.Rngs(0))
  out = np.asarray(model(jnp.asarray(z), jnp.asarray(g), keep))
  want = non_local_mean(z, g, model.bandwidth(jnp.asarray(g)), keep, model.chunk)
  np.testing.assert_allclose(out, np.asarray(want), atol=1e-6, rtol=0)
  from_z = non_local_mean(z, g, model.bandwidth(jnp.asarray(z)), keep, model.chunk)
  assert np.abs(out - np.asarray(from_z)).max() > 1e-3


def test_gradient_is_finite(pair):
  z, g, keep = pair
  model = NonLocal(hidden=8, chunk=256, rngs=nnx.Rngs(0))
  grads = nnx.grad(lambda m: jnp.mean(m(jnp.asarray(z), jnp.asarray(g), keep)))(model)
  leaves = jax.tree.leaves(nnx.state(grads, nnx.Param))
  assert all(np.isfinite(np.asarray(x)).all() for x in leaves)
  assert any(np.abs(np.asarray(x)).max() > 0 for x in leaves)


def test_matches_torch(pair):
  torch = pytest.importorskip("torch")
  from csr_jax.torch_twins.cisr import non_local_mean as torch_nl
  z, g, keep = pair
  h = np.linspace(0.02, 0.2, z.shape[1] * z.shape[2], dtype=np.float32).reshape(keep.shape)
  ours = np.asarray(non_local_mean(z, g, h, keep, chunk=300))
  nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)
  ref = torch_nl(nchw(z), nchw(g), torch.from_numpy(h), torch.from_numpy(keep), 300)
  np.testing.assert_allclose(ours, ref.permute(0, 2, 3, 1).numpy(), atol=1e-5, rtol=0)
