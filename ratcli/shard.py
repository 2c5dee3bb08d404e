"""One batch shared by several processes (GPUs, nodes, SLURM array tasks), and resumed.

    shard = resolve_shard("2/4")          # or None: from torchrun / SLURM, else no shard
    jobs, exists, share = select_jobs(plan.jobs, "out/", shard=shard, skip_existing=True)

Every shard plans the whole batch (`ratcli.batch.plan_batch`) and then takes its share,
so every shard checks every output name before any work, and all of them agree on the
shares without talking to each other:

- the plan's order is the outputs' paths relative to the output folder, sorted: it does
  not depend on the order inputs were found or listed, the working directory or the host;
- jobs are dealt by their pixel count, estimated from headers without decoding (rows x
  columns x slices; a DICOM series from one file's header times its files), heaviest
  first, each to the shard with the fewest pixels so far (ties: the lower shard);
- the shares are dealt over the whole plan, finished outputs included, so a rerun with
  `--skip-existing` gives every shard the same share as the first run.

A shard comes from `--shard I/N`, else the environment: torchrun's RANK / WORLD_SIZE
(LOCAL_RANK picks the GPU), a SLURM array task (SLURM_ARRAY_TASK_ID with
SLURM_ARRAY_TASK_COUNT, or MIN / MAX / STEP), or both (torchrun in each array task:
array task t of T, rank r of W -> shard t*W + r of T*W).
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ratcli.errors import UsageError

if TYPE_CHECKING:
    from ratcli.batch import Job
    from ratcli.io.sources import Source

__all__ = ["Shard", "Share", "resolve_shard", "parse_shard", "shard_from_env", "plan_order",
           "balance", "select_jobs", "output_complete", "pixel_estimate", "torchrun_finished"]


@dataclass(frozen=True)
class Shard:
    """This process's share: index in [0, count); origin: where it came from (for the
    one line that names it); local_rank: the GPU of this process on its node (torchrun's
    LOCAL_RANK), None when not launched by torchrun."""

    index: int
    count: int
    origin: str = "--shard"
    local_rank: int | None = None

    @property
    def label(self) -> str:
        """`I/N` with I from 1, as `--shard` takes it."""
        return f"{self.index + 1}/{self.count}"


@dataclass(frozen=True)
class Share:
    """What a shard took from the plan: jobs and pixels of its share and of the whole
    plan; exists: jobs of its share whose outputs were complete (--skip-existing)."""

    shard: Shard | None
    jobs: int
    pixels: int
    total_jobs: int
    total_pixels: int
    exists: int = 0

    def describe(self) -> str:
        """One line for stderr, e.g. `shard 1/2 (torchrun RANK 0 of 2): 6 of 12 inputs,
        50 % of the pixels; 2 outputs complete, kept (--skip-existing)`."""
        kept = (f"{self.exists} output{'s' * (self.exists != 1)} complete, kept "
                "(--skip-existing)")
        if self.shard is None:
            return f"{kept}; {self.jobs - self.exists} of {self.jobs} inputs to do"
        part = self.pixels / self.total_pixels if self.total_pixels else 0.0
        text = (f"shard {self.shard.label} ({self.shard.origin}): {self.jobs} of "
                f"{self.total_jobs} inputs, {part:.0%} of the pixels")
        return text + (f"; {kept}" if self.exists else "")


def resolve_shard(text: str | None, environ: Mapping[str, str] | None = None) -> Shard | None:
    """The shard of this process: `--shard I/N` (text) wins, else `shard_from_env`.
    Under torchrun an explicit `--shard` keeps LOCAL_RANK for the GPU choice."""
    env = os.environ if environ is None else environ
    if text is None:
        return shard_from_env(env)
    shard = parse_shard(text)
    local = _int(env, "LOCAL_RANK") if "WORLD_SIZE" in env and "RANK" in env else None
    return Shard(shard.index, shard.count, shard.origin, local)


def parse_shard(text: str) -> Shard:
    """`I/N` (1 <= I <= N) -> Shard(I - 1, N). Raises UsageError."""
    head, sep, tail = text.strip().partition("/")
    if not (sep and head.strip().isdigit() and tail.strip().isdigit()):
        raise UsageError(f"--shard {text}: give I/N, e.g. 1/4 for the first of four shares")
    index, count = int(head), int(tail)
    if not 1 <= index <= count:
        raise UsageError(f"--shard {text}: I must be between 1 and N")
    return Shard(index - 1, count)


def shard_from_env(environ: Mapping[str, str] | None = None) -> Shard | None:
    """The shard torchrun or a SLURM array gives this process, else None (a plain run).

    torchrun: RANK of WORLD_SIZE (LOCAL_RANK: the GPU). SLURM array: task
    (SLURM_ARRAY_TASK_ID - MIN) / STEP of SLURM_ARRAY_TASK_COUNT (else (MAX - MIN) /
    STEP + 1); MIN defaults to 0 and STEP to 1. Both: torchrun ranks within each array
    task. Raises UsageError for values that do not make a share (then pass --shard).
    """
    env = os.environ if environ is None else environ
    torchrun = None
    if "WORLD_SIZE" in env and "RANK" in env:
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        if not 0 <= rank < world:
            raise UsageError(f"RANK={rank} WORLD_SIZE={world}: not a rank of the world; "
                             "pass --shard I/N")
        torchrun = (rank, world, _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank)
    array = _slurm_array(env)
    if torchrun is None and array is None:
        return None
    if array is None:
        rank, world, local = torchrun
        return Shard(rank, world, f"torchrun RANK {rank} of {world}", local)
    task, tasks = array
    if torchrun is None:
        return Shard(task, tasks, f"SLURM array task {task + 1} of {tasks}")
    rank, world, local = torchrun
    return Shard(task * world + rank, tasks * world,
                 f"SLURM array task {task + 1} of {tasks}, torchrun RANK {rank} of {world}",
                 local)


def plan_order(jobs: Iterable[Job], root: str | Path) -> list[Job]:
    """Jobs sorted by their output path relative to the output folder `root` (an output
    outside it, e.g. a named output file, by its absolute path)."""
    base = os.path.abspath(root)

    def key(job: Job) -> str:
        path = os.path.abspath(job.output)
        rel = os.path.relpath(path, base)
        return Path(path).as_posix() if rel.startswith("..") else Path(rel).as_posix()

    return sorted(jobs, key=key)


def balance(weights: Sequence[int], count: int) -> list[int]:
    """The shard (0 .. count-1) of each item: heaviest first (ties: earlier first), each
    to the shard with the least weight so far (ties: fewer items, then the lower
    shard). A weight below 1 counts as 1."""
    heap = [(0, 0, k) for k in range(count)]
    owner = [0] * len(weights)
    for i in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        load, items, k = heapq.heappop(heap)
        owner[i] = k
        heapq.heappush(heap, (load + max(1, weights[i]), items + 1, k))
    return owner


def select_jobs(jobs: Sequence[Job], root: str | Path, *, shard: Shard | None,
                skip_existing: bool = False) -> tuple[list[Job], list[Job], Share]:
    """(jobs to run, jobs whose outputs are complete, the share) of this shard.

    shard None: every job, in the plan's own order. skip_existing: jobs of the share
    whose outputs are complete (`output_complete`) are not run but returned second.
    """
    mine = list(jobs)
    pixels = total = 0
    if shard is not None:
        ordered = plan_order(jobs, root)
        weights = [pixel_estimate(j.source) if shard.count > 1 else 1 for j in ordered]
        owner = balance(weights, shard.count)
        mine = [j for j, k in zip(ordered, owner, strict=True) if k == shard.index]
        pixels = sum(w for w, k in zip(weights, owner, strict=True) if k == shard.index)
        total = sum(weights)
    done = [j for j in mine if skip_existing and output_complete(j)]
    kept = {id(j) for j in done}
    todo = [j for j in mine if id(j) not in kept]
    return todo, done, Share(shard, len(mine), pixels, len(jobs), total, len(done))


def output_complete(job: Job) -> bool:
    """True when every output of `job` is there in full. Outputs are renamed into place
    when complete (`ratcli.io.atomic`), so a file that exists is complete; a DICOM
    series folder is complete when it holds one derived file per source file (named as
    the source files, or IM0001.dcm ... when those names clash)."""
    return all(_complete(path, job.source) for path in (job.output, *job.extras))


def torchrun_finished(*, failed: bool, environ: Mapping[str, str] | None = None,
                      poll_s: float = 1.0) -> None:
    """Under torchrun, count this process as finished in the launcher's key-value store;
    when it is about to exit with a failure (`failed`: some inputs failed), first wait
    until every rank has finished. torchrun stops all ranks as soon as one exits
    non-zero, so without the wait one bad input would stop the other shards' work.
    Outside torchrun, or when the store cannot be reached, returns at once."""
    env = os.environ if environ is None else environ
    if "TORCHELASTIC_RUN_ID" not in env or "MASTER_ADDR" not in env:
        return
    import time
    from datetime import timedelta

    try:
        from torch.distributed import TCPStore

        store = TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), is_master=False,
                         timeout=timedelta(seconds=60))
        key = (f"rat/{env['TORCHELASTIC_RUN_ID']}/"
               f"{env.get('TORCHELASTIC_RESTART_COUNT', '0')}/finished")
        done = store.add(key, 1)
        while failed and done < int(env.get("WORLD_SIZE", "1")):
            time.sleep(poll_s)
            done = store.add(key, 0)
    except (RuntimeError, ValueError, KeyError, OSError):
        return  # no store: exit now, as before


def pixel_estimate(source: Source) -> int:
    """Pixels of `source` from its headers, no pixel data decoded: rows x columns x
    slices (DICOM: one file's header x the series' files; NIfTI: its dims; PNG/TIFF and
    slides: level 0). Falls back to the files' size in bytes when a header says nothing."""
    try:
        count = _header_pixels(source)
    except Exception:  # an unreadable header: reading the input will report it
        count = None
    if count:
        return count
    return sum(_size(f) for f in source.files)


# -- helpers, in call order ------------------------------------------------------------


def _int(env: Mapping[str, str], name: str) -> int:
    value = env.get(name, "").strip()
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name}={value!r}: not an integer; pass --shard I/N") from None


def _slurm_array(env: Mapping[str, str]) -> tuple[int, int] | None:
    """(task index from 0, number of tasks) of a SLURM array task, else None."""
    if "SLURM_ARRAY_TASK_ID" not in env:
        return None
    task = _int(env, "SLURM_ARRAY_TASK_ID")
    low = _int(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
    step = _int(env, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in env else 1
    if "SLURM_ARRAY_TASK_COUNT" in env:
        count = _int(env, "SLURM_ARRAY_TASK_COUNT")
    elif "SLURM_ARRAY_TASK_MAX" in env:
        count = (_int(env, "SLURM_ARRAY_TASK_MAX") - low) // max(step, 1) + 1
    else:
        raise UsageError(f"SLURM_ARRAY_TASK_ID={task} without SLURM_ARRAY_TASK_COUNT or "
                         "SLURM_ARRAY_TASK_MAX; pass --shard I/N")
    offset = task - low
    if step < 1 or offset % step or not 0 <= offset // step < count:
        raise UsageError(f"SLURM_ARRAY_TASK_ID={task}: not one of {count} array tasks "
                         f"from {low} in steps of {step}; pass --shard I/N")
    return offset // step, count


def _complete(path: Path, source: Source) -> bool:
    if path.is_dir() and not path.is_symlink():
        present = {p.name for p in path.iterdir()
                   if p.is_file() and not p.name.startswith(".")}
        names = {f.name for f in source.files}
        if len(names) == len(source.files) and names <= present:
            return True
        numbered = {f"IM{z + 1:04d}.dcm" for z in range(len(source.files))}
        return len(source.files) > 0 and numbered <= present
    return path.exists() and (not path.is_file() or path.stat().st_size > 0)


def _header_pixels(source: Source) -> int | None:
    path = source.files[0] if source.files else source.path
    if source.kind == "dicom":
        return _dicom_pixels(sorted(source.files)[0]) * len(source.files)
    if source.kind == "nifti":
        from ratcli.io.nifti_header import read_header

        header = read_header(path)
        return _product(header.shape) if header is not None and header.shape else None
    if path.suffix.lower() in (".tif", ".tiff", ".svs", ".ndpi", ".scn", ".bif"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            return int(page.imagelength) * int(page.imagewidth) * max(1, page.imagedepth)
    if source.kind == "image":
        from PIL import Image

        with Image.open(path) as im:  # reads the header only
            return im.width * im.height * max(1, getattr(im, "n_frames", 1))
    return None


def _dicom_pixels(path: Path) -> int:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True,
                         specific_tags=["Rows", "Columns", "NumberOfFrames"])
    return int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames") or 1)


def _product(shape: Iterable[int]) -> int:
    out = 1
    for n in shape:
        out *= max(1, int(n))
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
