"""What every command-line entry point shares.

`run(main)` wraps an absl main: a failure prints one line, `error: ...`, naming the file or
config key (the traceback only with `--verbose` or `CSR_JAX_DEBUG=1`) and exits with status 2.
`setup_compile_cache` turns on JAX's persistent compilation cache, so a resumed or repeated
run loads its compiled programs instead of compiling them again.
"""

import os
import sys

from absl import flags
from absl import logging

flags.DEFINE_bool("verbose", False, "Print the traceback of an error (also CSR_JAX_DEBUG=1).")


def one_line(exc: BaseException) -> str:
  """The message of `exc` on one line (a KeyError's own text, not its repr)."""
  text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
  text = " ".join(str(text).split())
  if not text or isinstance(exc, (AttributeError, TypeError, IndexError, RuntimeError)):
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
  return text


def run(main):
  """absl main -> absl main with one-line errors."""

  def wrapped(argv):
    try:
      return main(argv)
    except (KeyboardInterrupt, SystemExit):
      raise
    except Exception as exc:  # every failure reaches the user as one line
      if flags.FLAGS.verbose or os.environ.get("CSR_JAX_DEBUG") == "1":
        raise
      print(f"error: {one_line(exc)}", file=sys.stderr)
      sys.exit(2)

  return wrapped


def guarded(body, verbose: bool = False) -> int:
  """`run` for the argparse CLIs: body() -> exit status 0, or 2 after a one-line error."""
  try:
    body()
  except (KeyboardInterrupt, SystemExit):
    raise
  except Exception as exc:  # every failure reaches the user as one line
    if verbose or os.environ.get("CSR_JAX_DEBUG") == "1":
      raise
    print(f"error: {one_line(exc)}", file=sys.stderr)
    return 2
  return 0


def setup_compile_cache(directory: str) -> None:
  """JAX's persistent compilation cache in `directory` ('off' disables it); hits are logged."""
  import jax
  from jax import monitoring
  if directory == "off":
    return
  from csr_jax import paths
  directory = str(paths.resolve(directory))
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

  def on_duration(event, seconds, **_):
    if event == "/jax/compilation_cache/compile_time_saved_sec":
      logging.info("compilation cache hit (%s): %.1f s of compiling saved", directory, seconds)

  monitoring.register_event_duration_secs_listener(on_duration)
