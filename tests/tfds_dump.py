"""Reads prep outputs with tensorflow-datasets, in a process of its own (tests/test_tfds.py).

TensorFlow registers the `tensorflow.Example` protos in protobuf's default pool, and so does
the `tfrecord` package that tests/test_records.py reads shards with: the two cannot be imported
into one process, so the test suite never imports TensorFlow itself.

  python -m tests.tfds_dump DUMP_DIR DIR:SPLIT [DIR:SPLIT ...]

writes DUMP_DIR/<i>.npz per folder (record n's feature k as array `<n>/<k>`; text as numpy
bytes, no pickles) and prints one JSON line: per folder, the split's record and shard counts
and the features' names and dtypes as tfds reports them.
"""

import json
import sys

import numpy as np
import tensorflow_datasets as tfds


def main(argv):
  dump, info = argv[0], []
  for i, spec in enumerate(argv[1:]):
    folder, split = spec.rsplit(":", 1)
    builder = tfds.builder_from_directory(folder)
    arrays = {}
    for n, ex in enumerate(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))):
      arrays.update({f"{n}/{k}": np.asarray(v) for k, v in ex.items()})
    np.savez(f"{dump}/{i}.npz", **arrays)
    s = builder.info.splits[split]
    info.append({"num_examples": s.num_examples, "shard_lengths": list(s.shard_lengths),
                 "features": {k: str(f.dtype) for k, f in builder.info.features.items()}})
  print(json.dumps(info))


if __name__ == "__main__":
  main(sys.argv[1:])
