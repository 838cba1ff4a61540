"""`--runner beam`: the prep step as an Apache Beam pipeline (DirectRunner, Dataflow, Flink,
Spark) that writes the same shards as the local process pool.

The driver plans as the local runner does (`jobs.plan`: files sorted, dealt round robin to
shards, verified shards kept), then runs

  Create((shard, i)) -> Reshuffle -> jobs.make_records(item i)    per image, in parallel
    -> GroupByKey(shard) -> jobs.write_shard(records in item order)  per shard

with the local runner's own per-image and per-shard functions, so shard bytes, `.idx` and
`.done` are identical. Each shard also gets a marker element, so a shard whose images are all
bad is still written (empty), as locally. Afterwards the driver reads every shard's `.done`,
verified against the shard's sha256, and builds the manifest as the local path does.

Retries and killed workers: Beam reruns a failed bundle (or one whose worker died) and keeps the
output of exactly one attempt, so the grouped input of a shard holds each of its images once;
`_Write` checks that, and refuses to write a shard whose items are not exactly 0..n-1. A write
step (first run or retry) writes the whole shard under a temp name of its own and publishes it
with the local path's renames (index, `.done`, shard last): a file under a shard's final name is
always complete, nothing is ever appended to one, and two attempts at one shard publish the
same bytes. When the pipeline fails (the DirectRunner does not retry), the shards already
published stay; the others are reported lost (summary, the manifest's `skipped` and
`missing_shards`) and re-running the same command redoes exactly them. The DirectRunner in
`multi_processing` mode hangs when one of its worker processes is SIGKILLed (a Beam
limitation): stopping it and re-running the same command recovers the same way.
"""

import shlex
import sys
import time
import traceback

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from data_prep import jobs as jobs_lib
from data_prep import shards


def pipeline_args(options: str | None, workers: int) -> list[str]:
  """Beam's argv from `--beam_pipeline_options` (split like a shell, none runs); without it the
  DirectRunner with `--workers` worker processes."""
  if options is None:
    n = max(workers, 1)
    return ["--runner=DirectRunner", f"--direct_num_workers={n}",
            f"--direct_running_mode={'multi_processing' if n > 1 else 'in_memory'}"]
  try:
    return shlex.split(options)
  except ValueError as e:
    raise ValueError(f"--beam_pipeline_options {options!r}: {e}") from None


class _Make(beam.DoFn):
  """(shard, i) -> (shard, (i, make_records(item i))); i = -1 is the shard's marker."""

  def __init__(self, jobs):
    self.jobs = {j.shard_file: j for j in jobs}

  def setup(self):
    jobs_lib.worker_setup()

  def process(self, key):
    shard, i = key
    job = self.jobs[shard]
    yield shard, (i, ([], []) if i < 0 else jobs_lib.make_records(job.maker, job.items[i]))


class _Write(beam.DoFn):
  """(shard, [(i, records)]) -> the shard written and published; yields its file name."""

  def __init__(self, jobs):
    self.jobs = {j.shard_file: j for j in jobs}

  def process(self, grouped):
    shard, values = grouped
    job = self.jobs[shard]
    got = sorted((v for v in values if v[0] >= 0), key=lambda v: v[0])
    if [i for i, _ in got] != list(range(len(job.items))):
      raise RuntimeError(f"{shard}: got items {[i for i, _ in got]}, want each of "
                         f"0..{len(job.items) - 1} once")

    def results():
      for _, made in got:
        yield made
        if job.sleep_per_image:
          time.sleep(job.sleep_per_image)
    jobs_lib.write_shard(job, results(), exclusive=False)
    yield shard


def run(jobs: list[jobs_lib.ShardJob], argv: list[str]) -> tuple[dict, list]:
  """({shard file: .done info} of the shards written, skipped entries of the images of the
  shards that were not)."""
  if not jobs:
    return {}, []
  for j in jobs:
    shards.clean_partial(j.out_dir, j.shard_file)
  keys = [(j.shard_file, i) for j in jobs for i in range(-1, len(j.items))]
  print(f"beam: {sum(len(j.items) for j in jobs)} images into {len(jobs)} shards "
        f"({' '.join(argv)})", file=sys.stderr)
  error = None
  try:
    with beam.Pipeline(options=PipelineOptions(argv)) as p:
      _ = (p | "Images" >> beam.Create(keys) | "Spread" >> beam.Reshuffle()
           | "Records" >> beam.ParDo(_Make(jobs)) | "ByShard" >> beam.GroupByKey()
           | "Shards" >> beam.ParDo(_Write(jobs)))
  except Exception as e:  # pylint: disable=broad-except
    traceback.print_exc()
    error = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[-1][:200]}"
  results, lost = {}, []
  for j in jobs:
    shards.remove_temps(j.out_dir, j.shard_file)
    done = shards.load_done(j.out_dir, j.shard_file, j.config_hash)
    if done is not None:
      results[j.shard_file] = done
    else:
      why = (f"the Beam pipeline failed ({error})" if error else
             "the Beam pipeline finished without publishing it")
      lost.extend(jobs_lib.lost_job(j, why))
  return results, lost
