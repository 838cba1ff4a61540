"""The generic conversion core (csr_jax/conversion.py, csr_jax/convert/) and the weight reader
(csr_jax/checkpoint.py) on a tiny two-sided model and on the trainer's own checkpoints: auto
rules, explicit torch order, buffers, strict errors, safe loading, Orbax."""

import os
import pickle

import numpy as np
import pytest
import torch
import jax.numpy as jnp
from flax import nnx

from csr_jax import convert
from csr_jax import checkpoint
from csr_jax import conversion as core
from csr_jax.conversion import ConversionError, Entry
from csr_jax.layers.conv import Conv2d, Linear
from csr_jax.layers.norm import LayerNorm
from csr_jax.layers.window import relative_position_index
from tests.conftest import kodak_crop


class Tiny(nnx.Module):
  """conv -> LayerNorm -> two Linears -> per-channel gain (NHWC)."""

  def __init__(self, rngs):
    self.conv = Conv2d(3, 4, 3, padding=1, rngs=rngs)
    self.norm = LayerNorm(4)
    self.layers = nnx.List([Linear(4, 5, rngs=rngs), Linear(5, 3, bias=False, rngs=rngs)])
    self.gain = nnx.Param(jnp.linspace(0.5, 1.5, 3))

  def __call__(self, x):
    x = self.norm(self.conv(x))
    return self.layers[1](self.layers[0](x)) * self.gain[...]


class TorchTiny(torch.nn.Module):
  """The same network in torch; its own parameter and buffer come first in its state_dict."""

  def __init__(self):
    super().__init__()
    self.gain = torch.nn.Parameter(torch.ones(3))
    self.register_buffer("rpi", torch.from_numpy(relative_position_index(2)))
    self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    self.norm = torch.nn.LayerNorm(4)
    self.layers = torch.nn.ModuleList([torch.nn.Linear(4, 5), torch.nn.Linear(5, 3, bias=False)])

  def forward(self, x):  # NCHW in, NHWC out
    x = self.norm(self.conv(x).permute(0, 2, 3, 1))
    return self.layers[1](self.layers[0](x)) * self.gain


def tiny_table(model):
  """Torch registration order: own params/buffers, then children; NNX sorts its paths."""
  auto = {e.jax_path: e for e in core.auto_table(model)}
  order = ["gain", "conv.kernel", "conv.bias", "norm.scale", "norm.bias", "layers.0.kernel",
           "layers.0.bias", "layers.1.kernel"]
  return ([auto["gain"], Entry("rpi", None, buffer=relative_position_index(2))]
          + [auto[p] for p in order[1:]])


@pytest.fixture
def tiny():
  return Tiny(nnx.Rngs(0))


def test_auto_entry_rules():
  assert core.auto_entry("a.0.kernel", 4) == Entry("a.0.weight", "a.0.kernel", "conv")
  assert core.auto_entry("fc.kernel", 2) == Entry("fc.weight", "fc.kernel", "linear")
  assert core.auto_entry("norm.scale", 1) == Entry("norm.weight", "norm.scale")
  assert core.auto_entry("fc.bias", 1) == Entry("fc.bias", "fc.bias")
  assert core.auto_entry("prompt", 5) == Entry("prompt", "prompt")
  assert core.auto_entry("kernel", 4) == Entry("weight", "kernel", "conv")


def test_auto_table_follows_nnx_order_and_overrides(tiny):
  t = core.auto_table(tiny, {"gain": Entry("scale_vec", "gain")})
  assert [e.jax_path for e in t] == list(core.flat_params(tiny))
  assert [e.torch_key for e in t] == ["conv.bias", "conv.weight", "scale_vec", "layers.0.bias",
                                      "layers.0.weight", "layers.1.weight", "norm.bias",
                                      "norm.weight"]


def test_export_loads_strict_in_torch_and_matches_on_kodak(tiny):
  sd = core.to_torch(tiny_table(tiny), tiny)
  ref = TorchTiny()
  assert list(sd) == list(ref.state_dict())
  assert sd["rpi"].dtype == np.int64
  ref.load_state_dict({k: torch.tensor(v) for k, v in sd.items()}, strict=True)
  x = kodak_crop(16, 24, "kodim05")
  with torch.no_grad():
    want = ref(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  got = np.asarray(tiny(jnp.asarray(x)))
  np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)


def test_round_trip_is_exact(tiny):
  sd = core.to_torch(tiny_table(tiny), tiny)
  other = Tiny(nnx.Rngs(7))
  core.from_torch(tiny_table(other), other, sd)
  for k, v in core.flat_params(tiny).items():
    np.testing.assert_array_equal(np.asarray(core.flat_params(other)[k]), np.asarray(v))


def test_strict_load_lists_every_problem(tiny):
  sd = core.to_torch(tiny_table(tiny), tiny)
  del sd["norm.bias"], sd["layers.0.weight"]
  sd["extra.weight"] = np.zeros(3, np.float32)
  sd["conv.weight"] = np.zeros((4, 3, 5, 5), np.float32)
  sd["rpi"] = sd["rpi"] + 1
  with pytest.raises(ConversionError) as err:
    core.from_torch(tiny_table(tiny), tiny, sd, source="bad.pth")
  msg = str(err.value)
  assert msg.startswith("bad.pth: does not match the model layout")
  for s in ("missing keys (2): ['norm.bias', 'layers.0.weight']",
            "unexpected keys (1): ['extra.weight']",
            "conv.weight: got (4, 3, 5, 5), expected (4, 3, 3, 3)", "rpi: buffer differs"):
    assert s in msg
  assert "\n" not in msg


def test_to_torch_rejects_incomplete_or_wrong_tables(tiny):
  with pytest.raises(ConversionError, match=r"not in the table: \['layers.1.kernel'\]"):
    core.to_torch(tiny_table(tiny)[:-1], tiny)
  with pytest.raises(ConversionError, match="'nope.kernel' that the model lacks"):
    core.to_torch(tiny_table(tiny) + [Entry("nope.weight", "nope.kernel")], tiny)


def test_load_torch_file_is_safe_and_explains(tmp_path, tiny):
  good = tmp_path / "good.pth"
  convert.save_torch_file(core.to_torch(tiny_table(tiny), tiny), good)
  assert list(core.load_torch_file(good)) == list(TorchTiny().state_dict())
  assert not any(p.name.startswith("good.pth.tmp") for p in tmp_path.iterdir())

  with pytest.raises(FileNotFoundError, match="missing.pth: no such state_dict file"):
    core.load_torch_file(tmp_path / "missing.pth")
  trunc = tmp_path / "trunc.pth"
  trunc.write_bytes(good.read_bytes()[:200])
  with pytest.raises(ConversionError, match="trunc.pth: not a readable state_dict, truncated"):
    core.load_torch_file(trunc)
  empty = tmp_path / "empty.pth"
  empty.write_bytes(b"")
  with pytest.raises(ConversionError, match=r"empty.pth: empty file \(0 bytes\)"):
    core.load_torch_file(empty)

  marker = tmp_path / "pwned"

  class Evil:
    def __reduce__(self):
      return (os.makedirs, (str(marker),))

  evil = tmp_path / "evil.pth"
  with open(evil, "wb") as f:
    pickle.dump({"w": Evil()}, f)
  for path in (evil, tmp_path / "evil_zip.pth"):
    if path != evil:
      torch.save({"w": Evil()}, path)
    with pytest.raises(ConversionError) as err:
      core.load_torch_file(path)
    msg = str(err.value)
    assert "pickled Python objects other than tensors (they were not run)" in msg, msg
    assert "only plain state_dicts of tensors are accepted" in msg and "weights_only" not in msg
  assert not marker.exists()

  nested = tmp_path / "nested.pth"
  torch.save({"params_ema": {"a": torch.ones(2)}}, nested)
  assert list(core.load_torch_file(nested, "params_ema")) == ["a"]
  with pytest.raises(ConversionError,
                     match=r"nested.pth: has no key 'params' \(top-level keys: \['params_ema'\]\)"):
    core.load_torch_file(nested, "params")
  tensor = tmp_path / "tensor.pth"
  torch.save(torch.ones(2), tensor)
  with pytest.raises(ConversionError, match="expected a state_dict"):
    core.load_torch_file(tensor)


def test_unknown_family_is_a_clear_error(tiny):
  with pytest.raises(KeyError, match="unknown model family 'nosuch'"):
    convert.to_torch("nosuch", tiny)


def test_load_flat_params_is_strict(tiny):
  flat = {k: np.asarray(v) for k, v in core.flat_params(tiny).items()}
  other = Tiny(nnx.Rngs(3))
  convert.load_flat_params(other, flat)
  np.testing.assert_array_equal(np.asarray(other.conv.kernel[...]), flat["conv.kernel"])
  bad = dict(flat, **{"extra": np.zeros(1)})
  del bad["gain"]
  bad["norm.scale"] = np.zeros(5, np.float32)
  with pytest.raises(ConversionError) as err:
    convert.load_flat_params(other, bad, source="ckpt")
  assert str(err.value) == ("ckpt: parameters do not match the model; missing (1): ['gain']; "
                            "unexpected (1): ['extra']; mis-shaped (1): ['norm.scale: got (5,), "
                            "expected (4,)']")


def test_module_prefix_is_stripped_only_when_uniform():
  assert list(convert.strip_module_prefix({"module.a": 1, "module.b": 2})) == ["a", "b"]
  assert list(convert.strip_module_prefix({"module.a": 1, "b": 2})) == ["module.a", "b"]


def test_orbax_params_dir_round_trip(tmp_path, tiny):
  pure = nnx.to_pure_dict(nnx.state(tiny, nnx.Param))
  checkpoint.write_params(tmp_path / "p", pure, {"name": "tiny", "variant": "x"})
  flat, meta = checkpoint.read_params(tmp_path / "p")
  assert meta == {"name": "tiny", "variant": "x"}
  want = {k: np.asarray(v) for k, v in core.flat_params(tiny).items()}
  assert sorted(flat) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(flat[k], want[k])
  with pytest.raises(FileExistsError, match="already exists"):
    checkpoint.write_params(tmp_path / "p", pure, {})
  with pytest.raises(KeyError, match="has no 'ema' parameter tree"):
    checkpoint.read_params(tmp_path / "p", "ema")
  with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
    checkpoint.read_params(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="neither a params directory nor a training"):
    checkpoint.read_params(tmp_path)


def test_the_trainers_checkpoints_latest_step_step_dirs_and_ema(trained_run):
  run = trained_run / "run"
  latest, meta = checkpoint.read_params(run)
  assert meta["name"] == "ucip" and meta["variant"] == "small"
  for path in (run / "checkpoints", run / "checkpoints" / "3", run / "checkpoints" / "3" / "state"):
    flat, _ = checkpoint.read_params(path)
    assert all(np.array_equal(flat[k], latest[k]) for k in latest)
  step2, _ = checkpoint.read_params(run / "checkpoints" / "2")
  ema, _ = checkpoint.read_params(run, "ema")
  assert sorted(ema) == sorted(latest) == sorted(step2)
  assert not all(np.array_equal(step2[k], latest[k]) for k in latest)
  assert not all(np.array_equal(ema[k], latest[k]) for k in latest)
