"""The zoo: its table against the models, `zoo import` on files the PyTorch twins write in the
official layouts (no network), and restore / benchmark on the imported directory, reached from
another directory by relative paths."""

import hashlib
import os

import numpy as np
import pytest
import torch
from PIL import Image

from csr_jax import checkpoint, convert, models, weights, zoo
from csr_jax.models import ucip
from csr_jax.torch_twins import promptcir as pcir_twin
from csr_jax.torch_twins import ucip as ucip_twin
from tests.conftest import run_module
from tests.shards import kodak_u8


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
  """Official-layout files as the releases would be downloaded: the twins' state_dicts (init
  moved by noise, so that every tensor is distinct)."""
  d = tmp_path_factory.mktemp("zoo") / "downloads"
  d.mkdir()
  for name, net in (("UCIP_Middle.pth", ucip_twin.create("middle")),
                    ("promptcir_small.pth", pcir_twin.create("small")),
                    ("ucip_small.pth", ucip_twin.create("small"))):
    torch.manual_seed(len(name))
    with torch.no_grad():
      for p in net.parameters():
        p.add_(0.01 * torch.randn(p.shape))
    torch.save(net.state_dict(), d / name)
  return d


def test_list_prints_every_release_and_the_preset(tmp_path):
  out = run_module(["csr_jax.zoo", "list"], tmp_path).stdout
  for name, r in zoo.RELEASES.items():
    assert f"| {name} | {r.family} {r.variant} |" in out and r.url in out
  assert "11,424,291" in out and "34,754,927" in out and "model_best2.pth" in out
  assert "promptcir-ntire24 (promptcir official, 2 checkpoint(s))" in out


def test_release_tables_and_presets():
  assert zoo.RELEASES["ucip-middle"].task_ids == ucip.TASK_IDS
  one, two = zoo.RELEASES["promptcir-ntire24-1"], zoo.RELEASES["promptcir-ntire24-2"]
  assert (one.family, one.variant, one.tensors, one.params) == (
      two.family, two.variant, two.tensors, two.params)  # one model, two checkpoints
  net = pcir_twin.create("official")  # the official layout (zoo import checks the JAX table)
  assert len(net.state_dict()) == one.tensors
  assert sum(p.numel() for p in net.parameters()) == one.params
  assert (one.file, two.file) == ("model_best.pth", "model_best2.pth")
  preset = models.spec("promptcir").presets["promptcir-ntire24"]
  assert preset.variant == "official" and preset.checkpoints == 2


def test_import_round_trips_the_file(downloads, monkeypatch, capsys):
  name, file = "ucip-middle", "UCIP_Middle.pth"
  cwd = downloads.parent / "work"
  cwd.mkdir(exist_ok=True)
  monkeypatch.chdir(cwd)
  out = f"imported-{name}"
  assert zoo.main(["import", name, f"../downloads/{file}", "--out", out]) == 0
  assert f"wrote {out}: {name}" in capsys.readouterr().out
  rel = zoo.RELEASES[name]
  meta = checkpoint.read_meta(cwd / out)
  assert (meta["name"], meta["variant"], meta["release"]) == (rel.family, rel.variant, name)
  assert meta["source"] == str(downloads / file) and meta["licence"] == rel.licence
  assert meta["sha256"] == hashlib.sha256((downloads / file).read_bytes()).hexdigest()
  assert meta["task_ids"] == dict(rel.task_ids)
  # Counts: the file's tensors and the model's parameters are the release's.
  original = torch.load(downloads / file, weights_only=True)
  assert len(original) == rel.tensors
  r, model = weights.model_from(out)  # no --config: the directory names its model
  assert (r.name, r.variant, dict(r.task_ids)) == (rel.family, rel.variant, meta["task_ids"])
  assert models.count_params(model) == rel.params
  # Exporting gives the file back, tensor for tensor, in the official order.
  sd = convert.to_torch(rel.family, model)
  assert list(sd) == list(original)
  assert all(np.array_equal(sd[k], original[k].numpy()) for k in sd)


def test_wrong_layout_is_one_line(downloads, monkeypatch, capsys):
  monkeypatch.chdir(downloads)
  evil = downloads / "evil.pth"
  torch.save({"weight": torch.zeros(2), "hook": os.system}, evil)  # pickled code: refused
  cases = [("ucip-middle", "promptcir_small.pth", "1066 missing"),
           ("ucip-middle", "ucip_small.pth", "mis-shaped (patch_embed.proj.weight: got (32, 3,"),
           ("promptcir-ntire24-2", "UCIP_Middle.pth", "870 tensors expected, the file has 1066"),
           ("ucip-middle", "evil.pth", "refused: the file holds pickled Python objects"),
           ("ucip-large", "UCIP_Middle.pth", "unknown release 'ucip-large'")]
  for name, file, why in cases:
    assert zoo.main(["import", name, file, "--out", "never"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and why in err, err
    assert not (downloads / "never").exists()


def test_restore_and_benchmark_take_the_imported_directory(downloads, trained_run):
  # The user's path: the CLIs, from another directory, by relative paths. The imported
  # directory names its model; the .pth beside it is converted on the fly as the same model
  # (an ensemble of equal weights: their mean is the weights' own output).
  cwd = downloads.parent / "work"
  imported = cwd / "imported-ucip-middle"
  if not imported.exists():
    zoo.import_("ucip-middle", downloads / "UCIP_Middle.pth", imported)
  lr = kodak_u8(16, 16, "kodim04", 300, 200)  # the benchmark's eval LR size: one compile
  Image.fromarray(lr).save(cwd / "lr.png")
  run_module(["csr_jax.restore", "--checkpoint", "imported-ucip-middle", "--weights",
              "../downloads/UCIP_Middle.pth", "--input", "lr.png", "--output", "out",
              "--codec", "hevc"], cwd)
  # The official test: reflect-pad to (h // 8 + 1) * 8, forward with the codec's prompt, crop.
  net = ucip_twin.create("middle")
  net.load_state_dict(torch.load(downloads / "UCIP_Middle.pth", weights_only=True), strict=True)
  x = torch.from_numpy(lr.astype(np.float32) / 255).permute(2, 0, 1)[None]
  with torch.no_grad():
    sr = net.eval()(torch.nn.functional.pad(x, (0, 8, 0, 8), mode="reflect"), torch.tensor([1]))
  want = np.clip(np.round(sr[0, :, :64, :64].permute(1, 2, 0).numpy() * 255), 0, 255)
  got = np.asarray(Image.open(cwd / "out" / "lr.png")).astype(int)
  assert np.abs(got - want).max() <= 1 and np.mean(got == want) > 0.99
  res = run_module(["csr_jax.benchmark", "--checkpoint", "imported-ucip-middle", "--data",
                    os.path.relpath(trained_run / "data" / "eval", cwd), "--out", "bench"], cwd)
  assert "Benchmark: ucip middle" in (cwd / "bench" / "report.md").read_text()
  assert "| all |  | model |" in res.stdout
