"""Which runner executes a prep job's shards: this machine's process pool (`jobs.run_jobs`) or
the Apache Beam pipeline (`beam_runner`, imported only when asked for: the default install has
no apache-beam). Above both, so neither imports the other's chooser."""

import sys

from data_prep import jobs as jobs_lib


def check_flags(args) -> None:
  """`jobs.check_output_flags` and the runner's own flags: one-line errors before any work."""
  jobs_lib.check_output_flags(args)
  if args.runner == "beam":
    try:
      from data_prep import beam_runner
    except ImportError as e:
      jobs_lib.fail(f"--runner beam needs apache-beam ({e}); install the `beam` extra: "
                    "pip install -e '.[beam]'")
    try:
      args.beam_args = beam_runner.pipeline_args(args.beam_pipeline_options, args.workers)
    except ValueError as e:
      jobs_lib.fail(str(e))
  elif args.beam_pipeline_options is not None:
    jobs_lib.fail("--beam_pipeline_options needs --runner beam")


def execute(jobs: list, dones: dict, args) -> tuple[dict, list]:
  """Runs the jobs on `args.runner`; (all .done infos by shard file, lost images)."""
  if args.runner == "beam":
    from data_prep import beam_runner
    results, lost = beam_runner.run(jobs, args.beam_args)
    return {**dones, **results}, lost
  from tqdm import tqdm
  bar = tqdm(total=sum(len(j.items) for j in jobs), unit="img", desc="shards", file=sys.stderr)
  try:
    results, lost = jobs_lib.run_jobs(jobs, args.workers, bar.update)
  finally:
    bar.close()
  return {**dones, **results}, lost

