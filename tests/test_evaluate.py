"""Whole-image inference (padding, tiling, ensembles) and evaluate_pairs on Kodak crops."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image

from csr_jax import evaluate, inference, metrics
from csr_jax.family import Evaluation, Inference
from csr_jax.layers.conv import conv2d
from csr_jax.layers.resize import resize_bicubic, upsample_nearest
from tests.conftest import kodak_crop


def _conv_net(scale: int, ksize: int, seed: int = 0):
  """A random conv net of local ops (two ksize convs, nearest upsampling, a 1x1 conv)."""
  rng = np.random.default_rng(seed)
  w1, w2, w3 = (rng.normal(size=s).astype(np.float32) * 0.2
                for s in [(ksize, ksize, 3, 8), (ksize, ksize, 8, 8), (1, 1, 8, 3)])
  p = ksize // 2

  @jax.jit
  def fn(x):
    h = jax.nn.gelu(conv2d(x, w1, padding=(p, p)))
    h = jax.nn.gelu(conv2d(h, w2, padding=(p, p)))
    return conv2d(upsample_nearest(h, scale) if scale > 1 else h, w3) + 0.5
  return fn, 2 * p  # receptive radius in LR pixels


def test_tiling_pointwise_model_equals_untiled(scale=2):
  x = kodak_crop(37, 53, "kodim03", top=200, left=300)
  fn, _ = _conv_net(scale, 1)
  full = inference.infer(fn, x)["image"]
  for tile_batch in (1, 3):
    tiled = inference.infer(fn, x, Inference(tile=16, tile_overlap=5),
                            tile_batch=tile_batch)["image"]
    np.testing.assert_allclose(tiled, full, atol=1e-6)
  assert full.shape == (1, 37 * scale, 53 * scale, 3)


def _interior_mask(h, w, tile, overlap, radius, scale):
  """Output pixels at >= radius from the inner edges of every tile that covers them."""
  bad = np.zeros((h, w), bool)
  for i in inference.tile_starts(h, tile, overlap):
    for j in inference.tile_starts(w, tile, overlap):
      box = np.zeros((h, w), bool)
      box[i:i + tile, j:j + tile] = True
      core = np.zeros((h, w), bool)
      core[i + (radius if i > 0 else 0):i + tile - (radius if i + tile < h else 0),
           j + (radius if j > 0 else 0):j + tile - (radius if j + tile < w else 0)] = True
      bad |= box & ~core
  return np.repeat(np.repeat(~bad, scale, 0), scale, 1)


def test_tiling_local_model_equals_untiled_in_interior():
  x = kodak_crop(44, 57, "kodim05", top=120, left=200)
  fn, radius = _conv_net(2, 3)
  full = inference.infer(fn, x)["image"]
  tiled = inference.infer(fn, x, Inference(tile=20, tile_overlap=10))["image"]
  mask = _interior_mask(44, 57, 20, 10, radius, 2)
  assert mask.mean() > 0.5
  np.testing.assert_allclose(tiled[0][mask], full[0][mask], atol=1e-6)
  assert np.abs(tiled - full).max() > 1e-4  # tile edges do differ: the mask is not vacuous


def test_tiles_share_one_compiled_shape():
  fn, _ = _conv_net(2, 3)
  shapes = []

  def spy(v):
    shapes.append(v.shape)
    return fn(v)

  for h, w in [(45, 61), (33, 77)]:
    out = inference.infer(spy, kodak_crop(h, w, "kodim07"), Inference(
        multiple=8, tile=32, tile_overlap=8), tile_batch=2)["image"]
    assert out.shape == (1, 2 * h, 2 * w, 3)
  assert set(shapes) == {(2, 32, 32, 3)}
  assert fn._cache_size() == 1
  # Smaller than a tile: one tile of the padded image, as the official tile_eval does.
  inference.infer(spy, kodak_crop(31, 20, "kodim07"), Inference(multiple=8, tile=32,
                                                                 tile_overlap=8))
  assert shapes[-1] == (1, 24, 24, 3)


def test_tile_starts_cover_the_axis():
  assert inference.tile_starts(10, 16, 4) == [0]
  assert inference.tile_starts(40, 16, 4) == [0, 12, 24]
  assert inference.tile_starts(41, 16, 4) == [0, 12, 24, 25]


@pytest.mark.parametrize("hw", [(13, 17), (16, 16), (9, 30)])
def test_padding_to_multiple_handles_odd_sizes(hw):
  h, w = hw
  x = kodak_crop(h, w, "kodim09", top=50, left=70)
  seen = []

  def model(v):  # needs a multiple of 8, like a windowed model
    assert v.shape[1] % 8 == 0 and v.shape[2] % 8 == 0, v.shape
    seen.append(v.shape)
    return upsample_nearest(jnp.asarray(v), 4)

  for mode in ("reflect", "flip"):
    for always in (False, True):
      y = inference.infer(model, x, Inference(multiple=8, pad_mode=mode, pad_always=always))
      np.testing.assert_array_equal(y["image"], np.asarray(upsample_nearest(x, 4)))
  assert seen[0][1:3] == (-(-h // 8) * 8, -(-w // 8) * 8)
  assert seen[1][1:3] == ((h // 8 + 1) * 8, (w // 8 + 1) * 8)  # official: at least one pixel


def test_pad_modes_match_torch_reflect_and_promptcir_flip():
  x = kodak_crop(13, 17, "kodim10", top=30, left=40)
  xt = torch.from_numpy(x).permute(0, 3, 1, 2)
  ref = torch.nn.functional.pad(xt, (0, 7, 0, 3), mode="reflect").permute(0, 2, 3, 1).numpy()
  np.testing.assert_array_equal(inference.pad_to(x, 16, 24, "reflect"), ref)
  flip = torch.cat([xt, torch.flip(xt, [2])], 2)[:, :, :16]  # PromptCIR test_model.py
  flip = torch.cat([flip, torch.flip(flip, [3])], 3)[:, :, :, :24].permute(0, 2, 3, 1).numpy()
  np.testing.assert_array_equal(inference.pad_to(x, 16, 24, "flip"), flip)
  with pytest.raises(ValueError, match="pad_mode must be one of"):
    inference.pad_to(x, 16, 24, "edge")


@jax.jit
def _blur_x2(v):
  """A dihedral-equivariant op: symmetric 3x3 blur per channel, then nearest x2."""
  k = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16
  kernel = jnp.asarray(np.tile(k[:, :, None, None], (1, 1, 1, 3)), jnp.float32)
  return upsample_nearest(conv2d(jnp.asarray(v), kernel, padding=(1, 1), groups=3), 2)


def test_self_ensemble_of_equivariant_op_is_the_op():
  x = kodak_crop(21, 30, "kodim11", top=100, left=100)
  plain = inference.infer(_blur_x2, x)["image"]
  for ensemble in ("x8", "transpose"):
    ens = inference.infer(_blur_x2, x, Inference(ensemble=ensemble))["image"]
    np.testing.assert_allclose(ens, plain, atol=1e-6)


def test_self_ensemble_averages_the_eight_transforms():
  x = kodak_crop(12, 20, "kodim12", top=10, left=10)
  fn = lambda v: np.roll(np.asarray(v), 1, axis=2) * np.linspace(0.5, 1, v.shape[1])[:, None,
                                                                                       None]
  want = 0
  for k in range(4):
    for flip in (False, True):
      v = np.rot90(x, k, axes=(1, 2))
      v = v[:, :, ::-1] if flip else v
      y = fn(np.ascontiguousarray(v))
      y = y[:, :, ::-1] if flip else y
      want = want + np.rot90(y, -k, axes=(1, 2))
  got = inference.infer(fn, x, Inference(ensemble="x8"))["image"]
  np.testing.assert_allclose(got, want / 8, atol=1e-6)
  assert np.abs(got - fn(x)).max() > 1e-3
  two = inference.infer([fn, lambda v: fn(v) * 0.5], x)["image"]  # a checkpoint ensemble
  np.testing.assert_allclose(two, fn(x) * 0.75, atol=1e-6)


def _pairs(scale, names=("kodim01", "kodim04"), quality=20, hw=(64, 48)):
  out = []
  for n, name in enumerate(names):
    hr = (kodak_crop(*hw, name, top=160, left=240)[0] * 255).round().astype(np.uint8)
    lr = hr if scale == 1 else np.asarray(
        Image.fromarray(hr).resize((hw[1] // scale, hw[0] // scale), Image.Resampling.BICUBIC))
    buf = io.BytesIO()
    Image.fromarray(lr).save(buf, format="JPEG", quality=quality)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
      lq = np.asarray(im.convert("RGB"))
    out.append({"lr": lq, "hr": hr, "lr_clean": lr, "codec": "jpeg", "quality": quality,
                "task_id": n, "scale": scale, "source": f"{name}.png"})
  return out


def test_evaluate_pairs_rows_and_baseline():
  pairs = _pairs(2)
  tasks, seen = [], []

  up = jax.jit(lambda x: resize_bicubic(x, (x.shape[1] * 2, x.shape[2] * 2)))

  def apply_fn(x, task_id):
    tasks.append(np.asarray(task_id).tolist())
    return up(x)

  rows, means, skipped = evaluate.evaluate_pairs(
      apply_fn, pairs, scale=2, protocol=Inference(multiple=4),
      on_image=lambda ex, sr, bic: seen.append((sr, bic)))
  assert not skipped
  assert tasks == [0, 1]
  assert [(r["source"], r["method"]) for r in rows] == [
      ("kodim01.png", "model"), ("kodim01.png", "bicubic"),
      ("kodim04.png", "model"), ("kodim04.png", "bicubic")]
  for (sr, bic), ex, (rm, rb) in zip(seen, pairs, [rows[0:2], rows[2:4]]):
    assert sr.dtype == np.uint8 and sr.shape == ex["hr"].shape
    assert rm["psnr_y"] == metrics.psnr(sr, ex["hr"], 2, y_channel=True)
    assert rb["ssim"] == metrics.ssim(bic, ex["hr"], 2)
    assert rm["codec"] == "jpeg" and rm["quality"] == 20
    assert 20 < rm["psnr_y"] < 40 and abs(rm["psnr_y"] - rb["psnr_y"]) < 1.0
  assert means["model"]["psnr"] == pytest.approx((rows[0]["psnr"] + rows[2]["psnr"]) / 2)
  assert set(means) == {"model", "bicubic"}
  assert set(means["model"]) == {"psnr", "ssim", "psnr_y", "ssim_y"}


def test_evaluate_pairs_restoration_rgb_with_psnr_b():
  pairs = _pairs(1, quality=10)
  ev = Evaluation(channel="rgb", crop_border=0, psnr_b=True, best_metric="psnr")
  rows, means, _ = evaluate.evaluate_pairs(lambda x, t: x, pairs, scale=1, ev=ev,
                                           protocol=Inference(tile=32, tile_overlap=8))
  assert means["model"] == pytest.approx(means["bicubic"])  # identity == the degraded input
  want = metrics.psnr_b(pairs[0]["lr"], pairs[0]["hr"], 0)  # x1: no crop; RGB as PromptCIR
  assert rows[0]["psnr_b"] == pytest.approx(want) and "psnr_b_y" not in rows[0]
  assert means["model"]["psnr_b"] < means["model"]["psnr"]
  assert evaluate.table_metrics(ev) == ["psnr", "ssim", "psnr_b"]


def test_extra_outputs_are_scored_against_their_reference():
  pairs = _pairs(2)
  up = jax.jit(lambda x: resize_bicubic(x, (x.shape[1] * 2, x.shape[2] * 2)))
  predict = lambda x, t: {"image": up(x), "x1": up(x), "y1": x}
  rows, _, _ = evaluate.evaluate_pairs(
      predict, pairs, scale=2, extra_target=lambda n: "hr" if n[0] == "x" else "lr_clean")
  r = rows[0]
  assert r["psnr_y_x1"] == r["psnr_y"]
  want = metrics.psnr(pairs[0]["lr"], pairs[0]["lr_clean"], 1, y_channel=True)  # border 2 // 2
  assert r["psnr_y_y1"] == pytest.approx(want)


def test_evaluate_pairs_skips_what_it_cannot_score():
  good, bad = _pairs(2)
  bad["hr"] = bad["hr"][:-2]
  tiny = dict(good, lr=good["lr"][:1, :], hr=good["hr"][:2, :], source="thin.png")
  rows, _, skipped = evaluate.evaluate_pairs(lambda x, t: x.repeat(2, 1).repeat(2, 2),
                                             [bad, good, tiny], scale=2)
  assert [r["source"] for r in rows] == ["kodim01.png", "kodim01.png"]
  assert [s for s, _ in skipped] == ["kodim04.png", "thin.png"]
  assert "hr shape" in skipped[0][1] and "too small" in skipped[1][1]
