"""What `prepare` and `ingest` share: listing an input folder, planning resumable shard jobs,
the worker pool, and the manifest with its summary.

A job is one shard: a tuple of items (one HR image each: `(path relative to the folder,
printable name, ...)`) and a picklable `maker` that turns an item into records. `make_records`
is the per-image step and `write_shard` the per-shard step of both runners: this machine's
process pool (default) and the Apache Beam pipeline of `data_prep.beam_runner`
(`data_prep.runner` chooses). Spawned workers
each get their own pipe; the parent hands out one job at a time and waits on every pipe and
process sentinel, so a worker killed by a signal (the OOM killer's SIGKILL) is noticed at once:
the images of its shard are reported lost, its temp file is removed, the other shards go on,
and a re-run of the same command redoes exactly the missing shards. Nothing is shared between
workers (no queue or lock a killed process could leave broken).
"""

import argparse
import dataclasses
import errno
import hashlib
import json
import math
import multiprocessing as mp
from multiprocessing import connection
import os
import re
import signal
import stat
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np

from csr_jax import paths
from csr_jax.data import records
from data_prep import images
from data_prep import shards
from data_prep import tfds_meta

FORMAT = "csr_jax-tfrecord-v2"  # v2: no task_id feature, `encoder` added
MAX_SCALE = 16

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def fail(msg: str):
  """Stops a CLI with one line `error: ...` and exit status 1."""
  raise SystemExit(f"error: {msg}")


def safe_name(rel: str) -> str:
  """The printable form of a relative path, stored as `source` and shown in reports.

  UTF-8 names stay as they are; bytes that are not UTF-8 (a Latin-1 `bad\\xff.png`) and control
  characters are written as the four characters `\\xNN`, so every name is one printable line.
  """
  text = os.fsencode(rel).decode("utf-8", "backslashreplace")
  return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def check_name(flag: str, value: str) -> None:
  if not records.NAME_RE.fullmatch(value):
    fail(f"{flag} {value!r}: use letters, digits and '_' (it becomes part of shard file names)")


def user_path(arg: str) -> Path:
  """A path flag as users type it: relative to the current folder, `~` expanded."""
  return Path(arg).expanduser()


def input_path(arg: str):
  """An input folder flag: a local path as `user_path`, or a URL (`gs://...`, read through
  `csr_jax.paths`) left as typed, for Beam workers that read their images from a bucket."""
  return paths.resolve(arg) if paths.is_url(arg) else user_path(arg)


def join(root, rel: str):
  """`root`/`rel` for a local folder or a URL (pathlib would turn `gs://b` into `gs:/b`)."""
  return paths.resolve(root) / rel if paths.is_url(root) else Path(root) / rel


def out_path(arg: str):
  """The `--out` folder as a `csr_jax.paths` path: local paths absolute, URLs unchanged."""
  try:
    return paths.resolve(arg)
  except ValueError:
    raise argparse.ArgumentTypeError("empty path") from None


def add_output_flags(p: argparse.ArgumentParser, *, split: str, min_size: int) -> None:
  """The flags prepare and ingest share: where and how shards are written, the HR rules."""
  p.add_argument("--out", required=True, type=out_path,
                 help="output folder for shards + manifest (a local path, or gs://... on a "
                      "Beam runner whose workers reach the bucket)")
  p.add_argument("--scale", type=int, default=4,
                 help=f"HR size / LR size, 1-{MAX_SCALE} (1 = restoration only)")
  p.add_argument("--num_shards", type=int, default=1)
  p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                 help="worker processes (0 = run in this process); with --runner beam and no "
                      "--beam_pipeline_options, the DirectRunner's worker count")
  p.add_argument("--runner", choices=("local", "beam"), default="local",
                 help="local: this machine's process pool; beam: an Apache Beam pipeline "
                      "(the `beam` extra), same records")
  p.add_argument("--beam_pipeline_options", default=None, metavar="FLAGS",
                 help="Beam pipeline flags in one string after '=', split like a shell (none "
                      "runs), e.g. --beam_pipeline_options='--runner=DirectRunner "
                      "--direct_num_workers=2'")
  p.add_argument("--name", default="csr", help="dataset name in shard file names")
  p.add_argument("--split", default=split)
  p.add_argument("--crop_to_multiple", action=argparse.BooleanOptionalAction, default=True,
                 help="crop HR top-left to a multiple of --scale (else such images are skipped)")
  p.add_argument("--min_size", type=int, default=min_size,
                 help="skip HR images with a side below this")


def check_output_flags(args) -> None:
  """One-line errors for the shared flags, before any work."""
  if not 1 <= args.scale <= MAX_SCALE:
    fail(f"--scale {args.scale}: must be 1-{MAX_SCALE}")
  if args.num_shards < 1 or args.workers < 0 or args.min_size < 0:
    fail("--num_shards must be >= 1, --workers and --min_size >= 0")
  check_name("--name", args.name)
  check_name("--split", args.split)

def _stat_problem(err: OSError, is_link: bool) -> str:
  if err.errno == errno.ELOOP:
    return "symlink loop"
  if err.errno == errno.ENOENT and is_link:
    return "broken symlink (its target does not exist)"
  return f"unreadable ({err.strerror})"


def list_files(root: Path) -> tuple[list[tuple[str, str]], list[dict]]:
  """(relative path, printable name) of every file under `root` sorted by path, and the entries
  that cannot be used, each {source, reason}.

  Symlinks are followed; hidden names (leading '.') are left out. Dangling symlinks, symlink
  loops, unreadable folders, anything that is not a regular file and names that clash once
  made printable are reported, never dropped silently.
  """
  if paths.is_url(root):
    return _list_url(paths.resolve(root))
  root = Path(root)
  if not root.is_dir():
    fail(f"{root}: not a directory")
  files, problems, seen = [], [], {}

  def bad(rel, reason):
    problems.append({"source": safe_name(rel), "reason": reason})

  def walk(path: str, rel: str):
    st = os.stat(path)
    if (st.st_dev, st.st_ino) in seen:
      bad(rel, f"folder already listed as {safe_name(seen[st.st_dev, st.st_ino]) or '.'} "
               "(symlink loop)")
      return
    seen[st.st_dev, st.st_ino] = rel
    try:
      with os.scandir(path) as it:
        entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
      bad(rel or ".", f"unreadable folder ({e.strerror})")
      return
    for e in entries:
      if e.name.startswith("."):
        continue
      sub = f"{rel}/{e.name}" if rel else e.name
      try:
        mode = os.stat(e.path).st_mode
      except OSError as err:
        bad(sub, _stat_problem(err, e.is_symlink()))
        continue
      if stat.S_ISDIR(mode):
        walk(e.path, sub)
      elif stat.S_ISREG(mode):
        files.append(sub)
      else:
        bad(sub, "not a regular file")

  walk(str(root), "")
  out, names = [], {}
  for rel in sorted(files):
    name = safe_name(rel)
    if name in names:
      bad(rel, f"its printable name clashes with {names[name]!r}")
      continue
    names[name] = rel
    out.append((rel, name))
  return out, sorted(problems, key=lambda p: p["source"])


def _list_url(root) -> tuple[list[tuple[str, str]], list[dict]]:
  """`list_files` for a bucket: objects under the prefix, sorted, hidden names left out (object
  stores have no links, permissions per file or special files)."""
  if not root.is_dir():
    fail(f"{root}: not a directory")
  base = os.fspath(root).rstrip("/") + "/"
  rels = sorted(os.fspath(p)[len(base):] for p in root.rglob("*") if p.is_file())
  rels = [r for r in rels if not any(part.startswith(".") for part in r.split("/"))]
  return [(r, safe_name(r)) for r in rels], []


@dataclasses.dataclass(frozen=True)
class ShardJob:
  out_dir: str
  shard_file: str
  items: tuple
  maker: Callable  # item -> ([(features, summary)], [skipped entries]); raises BadImage
  config_hash: str
  sleep_per_image: float = 0.0


_parent = None


def _orphaned() -> bool:
  return _parent is not None and os.getppid() != _parent


def make_records(maker, item) -> tuple[list, list[dict]]:
  """The per-image step of every runner: item -> ([(features, summary)], skipped entries).
  A bad image is skipped with its reason; other errors propagate (they lose the shard, which a
  re-run redoes). Records stay feature dicts until written: an image's records share one HR
  PNG until then."""
  try:
    made, lost = maker(item)
  except images.BadImage as e:
    return [], [{"source": item[1], "reason": str(e)}]
  except MemoryError:
    return [], [{"source": item[1], "reason": "out of memory"}]
  return list(made), list(lost)


def write_shard(job: ShardJob, results, exclusive: bool = True) -> dict:
  """The per-shard step of every runner: writes `results` (`make_records` outputs, one per
  item in item order, possibly a generator) as the job's shard and returns its `.done` info.
  Nothing is published unless every item got through."""
  writer = shards.ShardWriter(job.out_dir, job.shard_file, exclusive)
  recs, skipped = [], []
  try:
    for made, lost in results:
      for features, summary in made:
        recs.append(dict(summary, bytes=writer.write(features)))
      skipped.extend(lost)
    return writer.commit({"config_hash": job.config_hash, "records": recs, "skipped": skipped,
                          "sources": [it[1] for it in job.items]})
  except BaseException:
    writer.abort()
    raise


def process_shard(job: ShardJob, progress: Callable | None = None) -> dict:
  """Computes and writes one shard in this process and returns its `.done` info."""
  def results():
    for item in job.items:
      if _orphaned():
        raise SystemExit("parent process died")
      yield make_records(job.maker, item)
      if job.sleep_per_image:
        time.sleep(job.sleep_per_image)
      if progress is not None:
        progress(1)
    if _orphaned():
      raise SystemExit("parent process died")
  return write_shard(job, results())


def worker_setup() -> None:
  """Once per worker process of any runner: the workers are the parallelism, so torch (the
  learned codecs) gets one thread, which also keeps its results independent of the machine.
  torch reads OMP_NUM_THREADS when first imported, so workers that never code with a learned
  codec do not pay for importing it."""
  if "torch" in sys.modules:
    sys.modules["torch"].set_num_threads(1)
  else:
    os.environ["OMP_NUM_THREADS"] = "1"


def _worker(conn) -> None:
  """Runs the jobs the parent sends until it sends None or goes away."""
  global _parent
  _parent = os.getppid()
  worker_setup()
  while True:
    try:
      job = conn.recv()
    except (EOFError, OSError):
      return
    if job is None:
      return
    try:
      reply = ("done", process_shard(job, lambda n: conn.send(("img", n))))
    except BrokenPipeError:
      return  # the parent is gone; the shard was aborted
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      reply = ("error", f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}")
    try:
      conn.send(reply)
    except OSError:
      return


def _how_it_died(code) -> str:
  if code is not None and code < 0:
    name = signal.Signals(-code).name
    return f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
  return f"exited with status {code}"


def lost_job(job: ShardJob, why: str) -> list[dict]:
  shards.clean_partial(job.out_dir, job.shard_file)
  reason = f"lost: {why} while writing {job.shard_file}; re-run the same command to redo it"
  print(f"error: {reason} ({len(job.items)} images)", file=sys.stderr)
  return [{"source": it[1], "reason": reason} for it in job.items]


@dataclasses.dataclass
class _Slot:
  proc: mp.process.BaseProcess
  conn: connection.Connection
  job: ShardJob | None = None


def run_jobs(jobs: list[ShardJob], workers: int, progress: Callable) -> tuple[dict, list]:
  """({shard file: .done info} of finished jobs, skipped entries of the images of lost jobs)."""
  results, lost = {}, []
  if workers == 0:
    for job in jobs:
      results[job.shard_file] = process_shard(job, progress)
    return results, lost
  ctx = mp.get_context("spawn")
  todo, slots, stopped = list(jobs), [], []

  def start():
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_worker, args=(there,), daemon=True)
    proc.start()
    there.close()
    slots.append(_Slot(proc, here))
    feed(slots[-1])

  def feed(slot):
    slot.job = todo.pop(0) if todo else None
    try:
      slot.conn.send(slot.job)  # None: no more work, the worker exits
    except OSError:
      pass  # it died; its sentinel says so next
    if slot.job is None:
      slots.remove(slot)
      stopped.append(slot)

  for _ in range(min(workers, len(todo))):
    start()
  while slots:
    connection.wait([s.conn for s in slots] + [s.proc.sentinel for s in slots])
    for s in list(slots):
      exited = not s.proc.is_alive()  # checked first: all it sent is then in the pipe
      eof = False
      while s.conn.poll():
        try:
          kind, value = s.conn.recv()
        except Exception:  # pylint: disable=broad-except
          eof = True  # EOF, or a message cut short by the kill
          break
        if kind == "img":
          progress(value)
          continue
        if kind == "done":
          results[s.job.shard_file] = value
        else:
          lost.extend(lost_job(s.job, f"worker error ({value})"))
        s.job = None
        if not exited:
          feed(s)
          if s not in slots:
            break
      if s in slots and (exited or eof):
        s.proc.join()
        if s.job is not None:
          lost.extend(lost_job(s.job, f"the worker (pid {s.proc.pid}) was "
                                   f"{_how_it_died(s.proc.exitcode)}"))
        slots.remove(s)
        s.conn.close()
        if todo:
          start()
  for s in stopped:
    s.proc.join()
    s.conn.close()
  return results, lost


def config_hash(fields: dict) -> str:
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def plan(out, name: str, split: str, num_shards: int, items: list, maker,
         hash_fields: dict, sleep_per_image: float = 0.0) -> tuple[list[ShardJob], dict]:
  """(jobs still to run, {shard file: .done info} of verified complete shards).

  Items go round robin to shards. An `--out` that holds shards of another set (another name,
  split or shard count) is refused: a mixed folder is how stale shards get read twice.
  """
  out = paths.resolve(out)
  out.mkdir(parents=True, exist_ok=True)
  mine = [shards.shard_name(name, split, i, num_shards) for i in range(num_shards)]
  foreign = sorted(p.name for p in out.iterdir()
                   if records.SHARD_RE.fullmatch(p.name) and p.name not in mine)
  if foreign:
    m = records.SHARD_RE.fullmatch(foreign[0])
    fail(f"--out {paths.display(out)} already holds {len(foreign)} shard(s) of another set "
         f"({m['stem']}, {int(m['count'])} shards, e.g. {foreign[0]}); use a new --out, or the "
         "same --name, --split and --num_shards to resume")
  jobs, dones = [], {}
  for i, file in enumerate(mine):
    its = tuple(items[i::num_shards])
    h = config_hash(dict(hash_fields, format=FORMAT, name=name, split=split, shard=file,
                         items=[it[:1] + it[2:] for it in its]))
    try:
      done = shards.load_done(out, file, h)
    except ValueError as e:
      fail(str(e))
    if done is not None:
      dones[file] = done
    else:
      jobs.append(ShardJob(os.fspath(out), file, its, maker, h, sleep_per_image))
  if dones:
    print(f"resuming: {len(dones)} of {num_shards} shards complete and verified",
          file=sys.stderr)
  return jobs, dones


def _stats(recs, grid):
  out = []
  for g in grid:
    if "random_quality" in g:
      groups = [(None, [r for r in recs if r["codec"] == g["codec"] and r.get("random")])]
    else:
      groups = [(q, [r for r in recs if r["codec"] == g["codec"] and r["quality"] == q
                     and not r.get("random")]) for q in g["qualities"]]
    for q, rs in groups:
      finite = [r["psnr"] for r in rs if math.isfinite(r["psnr"])]
      out.append({"codec": g["codec"], "quality": q, **(
          {"random_quality": g["random_quality"]} if q is None else {}),
                  "records": len(rs), "bytes": sum(r["bytes"] for r in rs),
                  "mean_bpp": float(np.mean([r["bpp"] for r in rs])) if rs else float("nan"),
                  "mean_psnr": float(np.mean(finite)) if finite else float("nan")})
  return out


def _finite(x):
  """JSON has no inf/NaN: lossless PSNR and unknown bpp become null in the manifest."""
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_finite(v) for v in x]
  return x


def build_manifest(*, name: str, split: str, scale: int, num_shards: int, grid: list[dict],
                   dones: dict, problems: list, lost: list, num_sources: int, options: dict,
                   warnings: list, tool: str) -> dict:
  """The manifest: what was asked (grid, options), what was written (shards with checksums,
  every record) and what was not (`skipped`, `missing_shards`), with per-setting stats.
  `num_sources`: input images considered, usable or not (counts.sources)."""
  files = [shards.shard_name(name, split, i, num_shards) for i in range(num_shards)]
  present = [dones[f] for f in files if f in dones]
  recs = [dict(r, shard=files.index(d["file"])) for d in present for r in d["records"]]
  skipped = sorted(problems + lost + [s for d in present for s in d["skipped"]],
                   key=lambda s: s["source"])
  return _finite({
      "format": FORMAT, "tool": tool, "name": name, "split": split, "scale": scale,
      "grid": grid, "features": list(shards.FEATURES), "num_shards": num_shards,
      "shards": [{k: d[k] for k in ("file", "index", "sha256", "num_records", "bytes")}
                 for d in present],
      "missing_shards": [f for f in files if f not in dones],
      "counts": {"sources": num_sources,
                 "images": len({r["source"] for r in recs}),
                 "skipped": len(skipped), "records": len(recs)},
      "stats": _stats(recs, grid),
      "skipped": skipped,
      "records": [{k: r[k] for k in ("source", "codec", "quality", "shard", "bpp", "psnr")}
                  for r in recs],
      "options": options,
      "warnings": warnings,
  })


def summarize(manifest: dict) -> str:
  lines = [f"{'codec':<24}{'q':>7}{'records':>9}{'MB':>9}{'bpp':>9}{'PSNR':>8}"]

  def num(v, fmt):
    return format(v, fmt) if v is not None else "-".rjust(int(fmt.split(".")[0]))
  for s in manifest["stats"]:
    q = s["quality"] if s["quality"] is not None else "{}-{}".format(*s["random_quality"])
    lines.append(f"{s['codec']:<24}{q:>7}{s['records']:>9}{s['bytes'] / 1e6:>9.2f}"
                 f"{num(s['mean_bpp'], '9.4f')}{num(s['mean_psnr'], '8.2f')}")
  for g in manifest["grid"]:
    lines.append(f"{g['codec']}: {g['implementation']}")
  c = manifest["counts"]
  total_mb = sum(s["bytes"] for s in manifest["shards"]) / 1e6
  lines.append(f"images {c['images']} of {c['sources']} files, records {c['records']}, "
               f"shards {len(manifest['shards'])} of {manifest['num_shards']}, {total_mb:.2f} MB")
  for s in manifest["skipped"]:
    lines.append(f"skipped {s['source']}: {s['reason']}")
  for w in manifest["warnings"]:
    lines.append(f"warning: {w}")
  return "\n".join(lines)


def finish(out, manifest: dict, t0: float) -> dict:
  """Writes the manifest and the tfds metadata, prints the summary; exit status 1 only if
  nothing usable came out."""
  tfds_meta.write(out, manifest)
  path = shards.write_manifest(out, manifest)
  print(summarize(manifest))
  print(f"done in {time.time() - t0:.1f} s -> {paths.display(path)}")
  if not manifest["counts"]["records"]:
    fail(f"no usable image: all {manifest['counts']['sources']} inputs skipped (reasons above "
         f"and in {path})")
  return manifest
