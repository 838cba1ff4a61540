"""Training entry point.

  python -m csr_jax.main --config configs/ucip.py:demo --workdir runs/demo [--config.x=y]

Multi-process (one process per host or per GPU): pass --coordinator_address, --num_processes
and --process_id (or set JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID); on
Cloud TPU VMs --distributed alone lets JAX discover the slice. Compiled programs are cached in
--compile_cache (default ~/.cache/csr_jax/xla, or $JAX_COMPILATION_CACHE_DIR), so a resumed run
starts without compiling again.
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from csr_jax import cli

config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/ucip.py:demo.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory (or gs:// URL) for checkpoints, logs and the "
                    "report.")
flags.DEFINE_string("coordinator_address", os.environ.get("JAX_COORDINATOR_ADDRESS"),
                    "host:port of process 0 for jax.distributed.initialize.")
flags.DEFINE_integer("num_processes", int(os.environ.get("JAX_NUM_PROCESSES", 1)),
                     "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", int(os.environ.get("JAX_PROCESS_ID", 0)),
                     "This process's index in a multi-process run.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with auto-detection "
                  "(Cloud TPU VMs, SLURM).")
flags.DEFINE_string("cpu_collectives", "gloo", "CPU collectives for multi-process CPU runs.")
flags.DEFINE_string("compile_cache",
                    os.environ.get("JAX_COMPILATION_CACHE_DIR", "~/.cache/csr_jax/xla"),
                    "Persistent XLA compilation cache directory; 'off' disables it.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from csr_jax import config_lib
  config_lib.validate(FLAGS.config)  # before any backend starts or model is built
  import jax  # after flag parsing, so Grain workers and --help never start a backend
  from csr_jax import logging_utils
  from csr_jax import train

  logging_utils.quiet_libraries()
  cli.setup_compile_cache(FLAGS.compile_cache)
  if FLAGS.num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", FLAGS.cpu_collectives)
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  elif FLAGS.distributed:
    jax.distributed.initialize()
  logging.info("JAX process %d/%d, local devices %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(cli.run(main))
