"""What a hostile user found in the tools (issue 11), on the trainer's own workdir: each case
ends in one line that names the file or config key, or in a fallback that keeps the work.
The prep-side cases are in tests/test_prep_hostile.py."""

import logging
import os
import shutil

import numpy as np
import pytest
import torch

from csr_jax import checkpoint
from csr_jax.convert.__main__ import main as convert_cli
from tests.conftest import REPO, run_module


def _copy(trained_run, tmp_path):
  shutil.copytree(trained_run / "run", tmp_path / "run", symlinks=True)
  return tmp_path / "run"


def _error(res) -> str:
  """The last stderr line of a failed command, which must be its one-line error."""
  assert res.returncode == 2, res.stderr[-2000:]
  line = res.stderr.strip().splitlines()[-1]
  assert line.startswith("error: ") and "Traceback" not in res.stderr, res.stderr[-2000:]
  return line


def _config(cwd, arg="small,batch=4,workers=0"):
  return f"{os.path.relpath(REPO / 'configs' / 'ucip.py', cwd)}:{arg}"


def test_uncommitted_and_damaged_steps_fall_back_to_the_newest_intact_one(trained_run, tmp_path):
  run = _copy(trained_run, tmp_path)
  step2, _ = checkpoint.read_params(run / "checkpoints" / "2")
  # A step Orbax never committed (its process died mid-save): ignored by every reader.
  shutil.copytree(run / "checkpoints" / "3", run / "checkpoints" / "900")
  (run / "checkpoints" / "900" / "_CHECKPOINT_METADATA").unlink()
  assert checkpoint.intact_steps(run / "checkpoints") == [2, 3]
  # A damaged file in the newest intact step: readers fall back to step 2 with a warning.
  for f in (run / "checkpoints" / "3" / "state").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(b"\0" * 16)
  res = run_module(["csr_jax.convert", "export", "--checkpoint", "run", "--out", "x.pth"],
                   tmp_path)
  assert "run/checkpoints/3: cannot be read" in res.stderr
  sd = torch.load(tmp_path / "x.pth", weights_only=True)
  np.testing.assert_array_equal(sd["conv_last.weight"].numpy(),
                                np.transpose(step2["conv_last.kernel"], (3, 2, 0, 1)))
  res = run_module(["csr_jax.main", "--config", _config(tmp_path, "small,steps=3,batch=4,"
                                                                  "workers=0"),
                    "--workdir", "run", "--config.data.patch_size=16",
                    "--config.data.train_dir", os.path.relpath(trained_run / "data" / "train",
                                                               tmp_path)], tmp_path)
  assert "run/checkpoints/3: cannot be restored" in res.stderr
  assert "resuming from run/checkpoints step 2" in res.stderr
  assert checkpoint.intact_steps(run / "checkpoints")[-1] == 3


def test_resuming_with_another_variant_says_so_in_one_line(trained_run, tmp_path):
  run = _copy(trained_run, tmp_path)
  res = run_module(["csr_jax.main", "--config", _config(tmp_path, "small,steps=5,batch=4"),
                    "--workdir", "run", "--config.model.variant=tiny",
                    "--config.data.train_dir", os.path.relpath(trained_run / "data" / "train",
                                                               tmp_path)], tmp_path, check=False)
  line = _error(res)
  assert "run/checkpoints/3: holds ucip small parameters, not those of the configured ucip " \
         "tiny" in line
  assert "partial_restore" not in res.stderr and len(line) < 3000
  assert checkpoint.intact_steps(run / "checkpoints") == [2, 3]


@pytest.mark.parametrize("override,key", [
    ("--config.data.batch_size=-1", "config.data.batch_size=-1"),
    ("--config.data.train_dir=no/such/dir", "config.data.train_dir='no/such/dir'"),
    ("--config.model.variant=huge", "unknown variant 'huge' of ucip"),
    ("--config.eval.tile=-3", "config.eval.tile=-3"),
])
def test_bad_config_values_name_the_key_before_any_model_is_built(override, key, tmp_path):
  res = run_module(["csr_jax.main", "--config", _config(tmp_path), "--workdir", "w",
                    "--config.data.train_dir=.", override], tmp_path, check=False)
  assert key in _error(res)
  assert not (tmp_path / "w").exists()


def test_fine_tune_configs_refuse_to_start_without_init_from(tmp_path):
  from csr_jax import config_lib
  c = config_lib.base_config()
  c.model.name, c.model.variant, c.require_init_from = "ucip", "small", True
  c.data.train_dir = str(tmp_path)
  with pytest.raises(ValueError, match="config.init_from is required by this config"):
    config_lib.validate(c)


def test_verbose_shows_the_traceback(tmp_path):
  res = run_module(["csr_jax.main", "--config", _config(tmp_path), "--workdir", "w",
                    "--config.data.train_dir=nope", "--verbose"], tmp_path, check=False)
  assert res.returncode != 0 and "Traceback" in res.stderr


def test_benchmark_with_another_model_lists_twenty_mismatches_and_a_count(trained_run,
                                                                         tmp_path):
  res = run_module(["csr_jax.benchmark", "--config", _config(tmp_path, "middle"),
                    "--checkpoint", os.path.relpath(trained_run / "run", tmp_path), "--data",
                    os.path.relpath(trained_run / "data" / "eval", tmp_path)], tmp_path,
                   check=False)
  line = _error(res)
  assert "does not match" in line or "do not match" in line
  assert "mis-shaped (" in line and len(line) < 8000  # 20 listed of each kind, then counts


def _bad_pth(tmp_path, name, change):
  sd = torch.load(tmp_path.parent / "named.pth", weights_only=True)
  change(sd)
  torch.save(sd, tmp_path / name)
  return tmp_path / name


def test_convert_import_refuses_nan_integer_and_empty_files(trained_run, tmp_path, capsys,
                                                           caplog):
  cwd = tmp_path / "c"
  cwd.mkdir()
  run_module(["csr_jax.convert", "export", "--checkpoint",
              os.path.relpath(trained_run / "run", tmp_path), "--out", "named.pth"], tmp_path)
  base = ["import", "--model", "ucip", "--variant", "small", "--out", str(cwd / "out")]

  def nan(sd):
    sd["norm.weight"][0] = float("nan")
  cases = {
      "nan.pth": (nan, "norm.weight: 1 non-finite values"),
      "int.pth": (lambda sd: sd.update({"norm.bias": sd["norm.bias"].long()}),
                  "norm.bias: dtype int64, expected floating point weights"),
      "empty.pth": (None, "empty.pth: empty file (0 bytes)"),
  }
  for name, (change, want) in cases.items():
    path = _bad_pth(cwd, name, change) if change else cwd / name
    if change is None:
      path.write_bytes(b"")
    assert convert_cli(base + ["--pth", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and want in err and "\n" not in err, err
  assert not (cwd / "out").exists()
  half = _bad_pth(cwd, "half.pth", lambda sd: sd.update({k: v.half() for k, v in sd.items()}))
  with caplog.at_level(logging.WARNING):
    assert convert_cli(base + ["--pth", str(half)]) == 0  # converted, and said so
  assert "142 tensors converted to float32" in caplog.text
