"""The tensorflow-datasets metadata of a prep output: `dataset_info.json` and `features.json`.

With them every prep output folder is also a tfds dataset: `tfds.builder_from_directory(DIR)`
opens it and `as_dataset(split=SPLIT)` decodes our shards with TensorFlow (PNG features as
uint8 HxWx3 images, text as bytes, ints as int64, bpp as float32), in shard order. The files
are written here as JSON, without importing tfds or TensorFlow (neither is in the `prep`
extra); tests/test_tfds.py opens them with tfds itself. Shard names already follow tfds's
`{DATASET}-{SPLIT}.tfrecord-{SHARD_X_OF_Y}` template. A shard the run could not write is listed
with 0 records, which tfds skips, so the split holds exactly the manifest's records.
"""

from csr_jax import paths
from csr_jax.data import records
from data_prep import shards

VERSION = "1.0.0"
_FEATURES = "tensorflow_datasets.core.features."
IMAGES = ("hr_png", "lr_clean_png", "lr_png")
TEXTS = ("codec", "source", "encoder")
FLOATS = ("bpp",)


def _feature(key: str) -> dict:
  if key in IMAGES:
    return {"pythonClassName": _FEATURES + "image_feature.Image",
            "image": {"shape": {"dimensions": ["-1", "-1", "3"]}, "dtype": "uint8",
                      "encodingFormat": "png"}}
  if key in TEXTS:
    return {"pythonClassName": _FEATURES + "text_feature.Text", "text": {}}
  return {"pythonClassName": _FEATURES + "scalar.Scalar",
          "tensor": {"shape": {}, "dtype": "float32" if key in FLOATS else "int64",
                     "encoding": "none"}}


def features_json(keys) -> dict:
  """tfds's `FeaturesDict.to_json()` for our Example features."""
  return {"type": _FEATURES + "features_dict.FeaturesDict",
          "content": {"features": {k: _feature(k) for k in keys}},
          "proto_cls": "tensorflow_datasets.FeaturesDict"}


def dataset_info(manifest: dict) -> dict:
  """tfds's DatasetInfo proto as JSON: one split, per-shard record counts and bytes."""
  lengths = [0] * manifest["num_shards"]
  for s in manifest["shards"]:
    lengths[int(records.SHARD_RE.fullmatch(s["file"])["index"])] = s["num_records"]
  codecs = ", ".join(g["codec"] for g in manifest["grid"]) or "none"
  return {
      "name": manifest["name"], "version": VERSION, "fileFormat": "tfrecord",
      "description": (f"{manifest['tool']} output ({manifest['split']}, x{manifest['scale']}; "
                      f"codecs: {codecs}); manifest.json beside it lists every record."),
      "splits": [{"name": manifest["split"], "shardLengths": [str(n) for n in lengths],
                  "numBytes": str(sum(s["bytes"] for s in manifest["shards"])),
                  "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"}],
  }


def write(out_dir, manifest: dict) -> None:
  """Writes both files into the prep output `out_dir` (local or URL)."""
  out_dir = paths.resolve(out_dir)
  shards.write_json(out_dir / "features.json", features_json(manifest["features"]))
  shards.write_json(out_dir / "dataset_info.json", dataset_info(manifest))
