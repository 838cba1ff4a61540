"""UCIP conversion: layout equal to the official state_dict, exact round trips, strict errors,
the CLI through Orbax and .pth, and numerical parity of the JAX model with the PyTorch twin on
Kodak crops.

Parity tolerance: max |JAX - twin| <= 1e-5 * max |output| in float32. The offset_layer
weights are scaled up (x10 middle: mean |offset| ~2 px; x50 small) so the ATM samples pixels
away and off the image edges, as a trained model does; the official init keeps them ~0.2 px.
Measured relative errors (max |diff| / max |out|, Kodak crops 48x64; scripts run once):
  middle, x10 offsets: JAX f32 vs twin f32 7.1e-6; twin f32 vs twin f64 7.7e-6 (so the f32
    gap is the float32 rounding of 36 random-init blocks, not a layout difference).
  middle, x50 offsets: JAX f64 vs twin f64 1.4e-13 (f32: 7.1e-5, twin f32 vs f64 6.7e-5:
    larger offsets amplify f32 rounding, hence x10 in the test).
  small, x50 offsets: JAX f32 vs twin 3.1e-6; JAX f64 vs twin f64 4.5e-15 (float64 noise
    floor, asserted below at 1e-12).
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
import jax
import jax.numpy as jnp
from flax import nnx

from csr_jax import convert, models
from csr_jax import checkpoint
from csr_jax.convert.__main__ import main as cli
from csr_jax.conversion import ConversionError
from csr_jax.models import ucip as jax_ucip
from csr_jax.torch_twins import ucip as twin
from tests.conftest import REPO, kodak_crop

MIDDLE_PARAMS = 11_424_291
MIDDLE_TENSORS = 1066
TASKS = [0, 3]


def crops() -> np.ndarray:
  """Two 48x64 Kodak crops, [2, 48, 64, 3] in [0, 1]."""
  return np.concatenate([kodak_crop(48, 64, "kodim03", 200, 300),
                         kodak_crop(48, 64, "kodim05", 100, 100)])


def spread_offsets(tw: torch.nn.Module, factor: float = 50.0) -> torch.nn.Module:
  with torch.no_grad():
    for name, p in tw.named_parameters():
      if "offset_layer.1." in name:
        p.mul_(factor)
  return tw.eval()


def run_twin(tw, x: np.ndarray, task_id) -> np.ndarray:
  with torch.no_grad():
    t = torch.from_numpy(x).permute(0, 3, 1, 2).to(next(tw.parameters()).dtype)
    return tw(t, task_id).permute(0, 2, 3, 1).numpy()


def run_jax(model, x: np.ndarray, task_id) -> np.ndarray:
  fwd = nnx.jit(lambda m, a, t: m(a, t))
  tid = None if task_id is None else jnp.asarray(task_id)
  return np.asarray(fwd(model, jnp.asarray(x), tid))


def rel_err(got, want) -> float:
  return float(np.abs(got - want).max() / np.abs(want).max())


def torch_sd(sd: dict) -> dict:
  return {k: torch.tensor(v) for k, v in sd.items()}


def flat_numpy(model) -> dict:
  return {k: np.asarray(v) for k, v in convert.flat_params(model).items()}


# ---------------------------------------------------------------- twin layout (torch only)

def test_twin_variants_equal_jax_variants():
  assert twin.VARIANTS == jax_ucip.VARIANTS


def test_twin_middle_has_official_layout():
  sd = twin.create("middle").state_dict()
  assert len(sd) == MIDDLE_TENSORS
  assert sum(v.numel() for v in sd.values()) == MIDDLE_PARAMS
  keys = list(sd)
  assert keys[:6] == ["patch_embed.proj.weight", "patch_embed.proj.bias",
                      "blocks.0.0.norm1.weight", "blocks.0.0.norm1.bias",
                      "blocks.0.0.atm.atm_h.weight", "blocks.0.0.atm.atm_h.bias"]
  assert keys[-4:] == ["conv_hr.weight", "conv_hr.bias", "conv_last.weight", "conv_last.bias"]
  # A module's own parameter precedes its children's.
  assert keys.index("prompts.0.prompt") + 1 == keys.index("prompts.0.basis_mlp.fc1.weight")
  assert tuple(sd["prompts.5.prompt"].shape) == (6, 8, 1, 1, 64)
  assert tuple(sd["blocks.2.3.atm.atm_w.weight"].shape) == (128, 128, 1, 1)
  assert tuple(sd["blocks.0.4.offset_layer.1.weight"].shape) == (128, 192)
  assert {k.split(".")[2] for k in keys if ".offset_layer." in k} == {"0", "2", "4"}
  assert "conv_before_up.0.weight" in sd and "pos_blocks.5.proj.weight" in sd


def test_twin_sampling_is_torchvision_bilinear():
  """shift_sample against a per-element transcription of torchvision's bilinear_interpolate
  (zero when p <= -1 or p >= n, else the in-range neighbours), including exact boundaries."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 2, 3, 5))
  off = rng.uniform(-7, 7, size=x.shape)
  off[0, 0, 0, :] = [-1.0, 0.0, 2.5, 3.0, -4.0]  # p = -1, 1, 4.5, 6, 0
  for axis in (2, 3):
    got = twin.shift_sample(torch.from_numpy(x), torch.from_numpy(off), axis).numpy()
    want = np.zeros_like(x)
    n = x.shape[axis]
    for idx in np.ndindex(*x.shape):
      p = idx[axis] + off[idx]
      if p <= -1 or p >= n:
        continue
      lo = int(np.floor(p))
      for i, w in ((lo, 1 - (p - lo)), (lo + 1, p - lo)):
        if 0 <= i < n:
          src = list(idx)
          src[axis] = i
          want[idx] += w * x[tuple(src)]
    np.testing.assert_allclose(got, want, atol=1e-12, rtol=0)


# ---------------------------------------------------------------- middle: layout and parity

@pytest.fixture(scope="module")
def middle_pair():
  """A randomly initialised official-layout twin and the JAX model imported from it."""
  torch.manual_seed(0)
  tw = spread_offsets(twin.create("middle"), 10.0)
  return tw, convert.from_torch("ucip", "middle", tw.state_dict())


def test_middle_export_equals_twin_state_dict(middle_pair):
  tw, model = middle_pair
  assert models.count_params(model) == MIDDLE_PARAMS
  sd = convert.to_torch("ucip", model)
  ref = tw.state_dict()
  assert len(sd) == MIDDLE_TENSORS
  assert list(sd) == list(ref)
  for k, v in ref.items():  # torch -> JAX -> torch is exact
    assert sd[k].dtype == np.float32
    np.testing.assert_array_equal(sd[k], v.numpy(), err_msg=k)
  fresh = twin.create("middle")
  fresh.load_state_dict(torch_sd(sd), strict=True)


def test_middle_parity_with_twin(middle_pair):
  """One crop with task 3 (a middle forward at 48x64 costs seconds; `small` covers batches)."""
  tw, model = middle_pair
  x = crops()[1:]
  want = run_twin(tw, x, [3])
  got = run_jax(model, x, [3])
  assert got.shape == want.shape == (1, 192, 256, 3)
  assert rel_err(got, want) <= 1e-5


# ---------------------------------------------------------------- small: files, CLI, float64

@pytest.fixture(scope="module")
def small():
  """The JAX `small` model, randomly initialised by JAX, with spread offsets."""
  model = models.create("ucip", "small", rngs=nnx.Rngs(1))
  for blk in model.blocks[0]:
    if blk.offset_layer is not None:
      blk.offset_layer[1].kernel[...] = blk.offset_layer[1].kernel[...] * 50
  return model


@pytest.fixture(scope="module")
def small_pth(small, tmp_path_factory):
  path = tmp_path_factory.mktemp("ucip") / "small.pth"
  convert.save_torch_file(convert.to_torch("ucip", small), path)
  return path


def test_small_file_round_trip_is_exact(small, small_pth):
  back = convert.from_torch("ucip", "small", small_pth)
  want = flat_numpy(small)
  got = flat_numpy(back)
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_small_parity_float32_and_float64_noise_floor(small, small_pth):
  tw = twin.create("small").eval()
  tw.load_state_dict(torch.load(small_pth, weights_only=True), strict=True)
  x = crops()
  want = run_twin(tw, x, TASKS)
  assert rel_err(run_jax(small, x, TASKS), want) <= 1e-5
  # Per-sample task ids matter: swapping them changes the output clearly.
  assert rel_err(run_twin(tw, x, TASKS[::-1]), want) > 1e-3

  tw.double()
  want64 = run_twin(tw, x.astype(np.float64), TASKS)
  with jax.enable_x64():
    graphdef, state = nnx.split(small)
    m64 = nnx.merge(graphdef, jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), state))
    got64 = np.asarray(nnx.jit(lambda m, a, t: m(a, t))(
        m64, jnp.asarray(x, jnp.float64), jnp.asarray(TASKS)))
  assert got64.dtype == np.float64
  assert rel_err(got64, want64) <= 1e-12  # measured 4.5e-15: the two compute the same function


def test_blind_mode_exports_and_matches_twin():
  model = models.create("ucip", "small", rngs=nnx.Rngs(2), blind=True)
  sd = convert.to_torch("ucip", model)
  keys = list(sd)
  assert keys[keys.index("prompts.0.basis_mlp.fc2.bias") + 1] == "prompts.0.task_head.weight"
  tw = twin.create("small", blind=True).eval()
  tw.load_state_dict(torch_sd(sd), strict=True)
  x = crops()
  assert rel_err(run_jax(model, x, None), run_twin(tw, x, None)) <= 1e-5


def test_bicubic_residual_mode_matches_twin():
  """The demo's parameter-free bicubic skip: same layout, same output in both frameworks."""
  model = models.create("ucip", "small", rngs=nnx.Rngs(3), residual="bicubic")
  sd = convert.to_torch("ucip", model)
  assert len(sd) == len(convert.to_torch("ucip", models.create("ucip", "small")))
  tw = twin.create("small", residual="bicubic").eval()
  tw.load_state_dict(torch_sd(sd), strict=True)
  x = crops()
  got = run_jax(model, x, TASKS)
  assert rel_err(got, run_twin(tw, x, TASKS)) <= 1e-5
  plain_model = models.create("ucip", "small", rngs=nnx.Rngs(3))
  plain = np.asarray(plain_model(jnp.asarray(x), jnp.asarray(TASKS)))
  assert not np.allclose(got, plain, atol=1e-3)


def test_bad_files_give_clear_errors(small_pth, tmp_path):
  data = small_pth.read_bytes()
  trunc = tmp_path / "trunc.pth"
  trunc.write_bytes(data[: len(data) // 2])
  with pytest.raises(ConversionError, match=r"trunc.pth: not a readable state_dict, truncated"):
    convert.from_torch("ucip", "small", trunc)

  code = tmp_path / "code.pth"
  torch.save({"model": twin.create("tiny")}, code)  # a pickled nn.Module, not a state_dict
  with pytest.raises(ConversionError, match=r"code.pth: refused: the file holds pickled Python "
                     r"objects other than tensors \(they were not run\)"):
    convert.from_torch("ucip", "small", code)

  sd = torch.load(small_pth, weights_only=True)
  sd["blocks.0.0.atm.atm_h.weights"] = sd.pop("blocks.0.0.atm.atm_h.weight")
  sd["conv_last.bias"] = torch.zeros(4)
  wrong = tmp_path / "wrong.pth"
  torch.save(sd, wrong)
  with pytest.raises(ConversionError) as err:
    convert.from_torch("ucip", "small", wrong)
  msg = str(err.value)
  assert "wrong.pth: does not match the model layout" in msg
  assert "missing keys (1): ['blocks.0.0.atm.atm_h.weight']" in msg
  assert "unexpected keys (1): ['blocks.0.0.atm.atm_h.weights']" in msg
  assert "conv_last.bias: got (4,), expected (3,)" in msg

  with pytest.raises(ConversionError, match="does not match"):  # tiny weights into small
    convert.from_torch("ucip", "small", twin.create("tiny").state_dict())


def test_cli_round_trip_through_orbax_and_pth(small, small_pth, tmp_path, capsys):
  out_dir = tmp_path / "params"
  assert cli(["import", "--model", "ucip", "--variant", "small", "--pth", str(small_pth),
              "--out", str(out_dir)]) == 0
  flat, meta = checkpoint.read_params(out_dir)
  assert (meta["name"], meta["variant"]) == ("ucip", "small")
  want = flat_numpy(small)
  assert sorted(flat) == sorted(want)
  np.testing.assert_array_equal(flat["prompts.1.prompt"], want["prompts.1.prompt"])

  pth = tmp_path / "again.pth"
  assert cli(["export", "--model", "ucip", "--variant", "small", "--checkpoint", str(out_dir),
              "--out", str(pth)]) == 0
  a = torch.load(small_pth, weights_only=True)
  b = torch.load(pth, weights_only=True)
  assert list(a) == list(b)
  for k in a:
    assert torch.equal(a[k], b[k]), k
  assert "wrote" in capsys.readouterr().out

  assert cli(["export", "--model", "ucip", "--variant", "small", "--checkpoint", str(out_dir),
              "--out", str(pth), "--ema"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "has no 'ema' parameter tree" in err and "\n" not in err
  sd = torch.load(small_pth, weights_only=True)
  del sd["norm.bias"]
  torch.save(sd, tmp_path / "nobias.pth")
  assert cli(["import", "--model", "ucip", "--variant", "small", "--pth",
              str(tmp_path / "nobias.pth"), "--out", str(tmp_path / "x")]) == 2
  err = capsys.readouterr().err.strip()
  assert "nobias.pth: does not match the model layout; missing keys (1): ['norm.bias']" in err
  assert "\n" not in err and not (tmp_path / "x").exists()


def test_cli_process_reports_one_line_error(tmp_path):
  res = subprocess.run(
      [sys.executable, "-m", "csr_jax.convert", "import", "--model", "ucip", "--variant",
       "small", "--pth", str(tmp_path / "none.pth"), "--out", str(tmp_path / "d")],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert res.returncode == 2
  want = f"error: {tmp_path / 'none.pth'}: no such state_dict file"
  assert res.stderr.strip().splitlines()[-1] == want
