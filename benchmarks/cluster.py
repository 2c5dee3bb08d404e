"""Shards on one machine, and memory over many inputs (issue 24).

1. Scaling: one folder of CT series (DICOM, `--series` series of `--slices` slices of
   `--size`^2, shipped rat-ct weights) restored by one process with 2 threads, and by two
   shards (`--shard 1/2`, `--shard 2/2`) with 1 thread each, side by side. Each setting
   runs `--repeat` times in turns (one, two, one, ...), the fastest kept, so a slow spell
   on a shared machine hits both; the wall time includes each process's start-up.
   Prints inputs (series) per minute for each and the ratio two shards / one process.
   `--baseline` adds one process with 1 thread, to tell parallel speed-up from what
   two threads of one process lose on a busy machine.
2. Memory: one process over 100 and over 1,000 small inputs (`--small`^2 NIfTI slices,
   `--regions none`, with --log), each a fresh `python -m ratcli denoise`; prints each
   run's peak RSS (ru_maxrss of that child) and the 1,000 / 100 ratio (target <= 1.1).

Run: `python benchmarks/cluster.py [--series 12 --slices 2 --size 256 --repeat 2
--counts 100 1000 --small 32 --workdir DIR --baseline] [--skip-scaling | --skip-memory]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ratcli.phantom_dicom import save_datasets, synthetic_series
from ratcli.phantoms import ct_phantom

RAT = [sys.executable, "-m", "ratcli"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=12)
    ap.add_argument("--slices", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--counts", type=int, nargs=2, default=[100, 1000])
    ap.add_argument("--small", type=int, default=32)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--baseline", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rat-cluster-", dir=args.workdir))
    env = {**os.environ, "RAT_CACHE": str(work / "cache")}
    env.pop("OMP_NUM_THREADS", None)
    try:
        if not args.skip_scaling:
            scaling(work, env, args)
        if not args.skip_memory:
            memory(work, env, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def scaling(work: Path, env: dict, args: argparse.Namespace) -> None:
    folder = work / "ct"
    for i in range(args.series):
        vol = ct_phantom(size=args.size, slices=args.slices, seed=i)
        save_datasets(synthetic_series(vol, series_number=i + 1, seed=i),
                      folder / f"patient{i:02d}" / "ct")
    base = ["denoise", str(folder), "--regions", "classical", "--no-cache", "-q"]
    # name -> (processes, threads each)
    settings = {"1 process x 2 threads": (1, 2), "2 shards x 1 thread": (2, 1)}
    if args.baseline:
        settings["1 process x 1 thread"] = (1, 1)
    best = dict.fromkeys(settings, float("inf"))
    for turn in range(args.repeat):
        for name, (count, threads) in settings.items():
            out = work / f"out-{turn}"
            t0 = time.perf_counter()
            shards = [["--shard", f"{k}/{count}"] for k in range(1, count + 1)] if count > 1 \
                else [[]]
            procs = [subprocess.Popen([*RAT, *base, "-o", str(out), "--threads", str(threads),
                                       *shard], env=env, stderr=subprocess.DEVNULL)
                     for shard in shards]
            if any(p.wait() for p in procs):
                raise SystemExit(f"{name}: a process failed")
            wall = time.perf_counter() - t0
            best[name] = min(best[name], wall)
            print(f"turn {turn + 1}: {name}: {wall:.1f} s", flush=True)
            shutil.rmtree(out)
    print(f"\n{args.series} series of {args.slices} x {args.size}^2 slices, "
          f"{os.cpu_count()} CPUs (fastest of {args.repeat}):")
    rates = {}
    for name, wall in best.items():
        rates[name] = args.series / wall * 60
        print(f"  {name}: {wall:.1f} s, {rates[name]:.1f} inputs/min")
    one, two = rates["1 process x 2 threads"], rates["2 shards x 1 thread"]
    print(f"  two shards / one process: {two / one:.2f}x")


def memory(work: Path, env: dict, args: argparse.Namespace) -> None:
    few, many = args.counts
    folder = work / "small"
    folder.mkdir()
    for i in range(many):
        arr = ct_phantom(size=args.small, slices=1, seed=i).astype(np.float32)
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(folder / f"s{i:04d}.nii.gz"))
    peaks = {}
    for count in (few, many):
        part = work / f"small-{count}"
        part.mkdir()
        for f in sorted(folder.iterdir())[:count]:
            os.link(f, part / f.name)
        out = work / f"out-{count}"
        cmd = [*RAT, "denoise", str(part), "-o", str(out), "--task", "ct", "--regions",
               "none", "--threads", "1", "--json", "--log", str(work / f"log-{count}.jsonl")]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise SystemExit(f"{count} inputs: exit {proc.returncode}")
        written = sum(1 for _ in out.iterdir())
        peaks[count] = usage.ru_maxrss / 1024  # KiB -> MiB (Linux)
        print(f"{count} inputs of {args.small}^2: {written} written in "
              f"{time.perf_counter() - t0:.1f} s, peak RSS {peaks[count]:.0f} MiB", flush=True)
    print(f"peak RSS {many} / {few} inputs: {peaks[many] / peaks[few]:.3f} (target <= 1.1)")


if __name__ == "__main__":
    main()
