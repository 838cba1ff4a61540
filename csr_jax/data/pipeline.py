"""Grain train and eval pipelines over the TFRecord shards.

Train order: source -> process shard -> seed -> shuffle -> repeat -> decode -> crop/JPEG/flip
-> batch (all MapDataset, so it runs inside the workers) -> to_iter_dataset -> mp_prefetch.
Batches cross process boundaries as uint8; float conversion happens on device. The iterator's
state (`get_state`/`set_state`, or `grain.checkpoint.CheckpointSave`) is its position, which is
all that resuming needs since every random choice is derived from the seed and the index.
"""

from absl import flags
import grain

from csr_jax.data import source
from csr_jax.data import transforms


def shard_options(process_index: int | None = None, process_count: int | None = None):
  """This process's share of the records: from JAX (`ShardByJaxProcess`) unless given."""
  if process_index is None:
    return grain.sharding.ShardByJaxProcess(drop_remainder=True)
  return grain.sharding.ShardOptions(process_index, process_count, drop_remainder=True)


def apply_shard(ds: grain.MapDataset, options) -> grain.MapDataset:
  """Disjoint, equal-size slice of the records for this process."""
  n, count = len(ds), options.shard_count
  if count == 1:
    return ds
  if options.drop_remainder:
    ds = ds[:n - n % count]
  part = ds[options.shard_index::count]
  if len(part) == 0:
    raise ValueError(f"{n} records cannot be split over {count} processes")
  return part


def train_dataset(paths: list[str], *, patch: int, scale: int, batch_size: int, seed: int = 0,
                  shard=None, augment: bool = True, jpeg_qualities=None,
                  keys=("hr", "lr", "task_id"), task_ids=None) -> grain.MapDataset:
  """Infinite MapDataset of uint8 batches {hr [B,ps,ps,3], lr [B,p,p,3], task_id [B], ...};
  batch i is a pure function of (records, seed, i).

  `batch_size` is per process; `shard` a grain ShardOptions (default: no sharding);
  `task_ids` the model's codec -> prompt id table (csr_jax.family.task_id).
  """
  images = [k for k in keys if k in source.IMAGE_KEYS]
  if jpeg_qualities and "lr_clean" not in images:
    images.append("lr_clean")
  ds = grain.MapDataset.source(source.TFRecordSource(paths))
  ds = apply_shard(ds, shard or grain.sharding.NoSharding())
  ds = ds.seed(seed).shuffle().repeat()
  ds = ds.map(transforms.Decode(images))
  ds = ds.random_map(transforms.TrainAugment(patch, scale, augment, jpeg_qualities, keys,
                                             task_ids))
  return ds.batch(batch_size, drop_remainder=True)


def train_iterator(ds: grain.MapDataset, num_workers: int = 0, buffer: int = 4, start: int = 0):
  """An iterator from batch `start` on (the resume position, whatever the worker count);
  `num_workers` > 0 decodes and batches in worker processes."""
  it_ds = (ds[start:] if start else ds).to_iter_dataset()
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # Grain reads absl flags; library callers never parse them
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=buffer))
  return iter(it_ds)


def eval_dataset(paths: list[str], max_images: int | None = None,
                 keys=("hr", "lr", "lr_clean"), task_ids=None):
  """Whole images in file order: {lr, hr, lr_clean (uint8 HWC), codec, quality, task_id, scale,
  source}. A codec without a prompt in `task_ids` gets the error text in `task_id` instead,
  so that the evaluator can skip that image and go on."""
  ds = grain.MapDataset.source(source.TFRecordSource(paths))
  if max_images:
    ds = ds[:max_images]
  for ex in ds.map(transforms.Decode(keys)):
    try:
      yield transforms.with_task_id(ex, task_ids)
    except KeyError as exc:
      yield {**ex, "task_id": exc.args[0]}
