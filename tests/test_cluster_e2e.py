"""Shards end to end (issue 24), with real `rat` processes over 12 small CT series:
torchrun with two processes, `--shard 1/2` and `2/2` in two shells, and a SLURM array
write exactly what one process writes; a shard killed with SIGKILL and rerun with
`--skip-existing` finishes the rest, nothing done twice and no partial file left.

"The same outputs" here: the same files; each DICOM file's pixel data byte for byte and
every other element equal, except what a derived series gets new on every run: its
Series and SOP Instance UIDs (file meta included, with the meta group's length, which
follows the UID's length) and the dates and times it was made.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from ratcli.phantom_dicom import save_datasets, synthetic_series
from ratcli.phantoms import ct_phantom

pytestmark = pytest.mark.slow

RAT = [sys.executable, "-m", "ratcli"]
TORCHRUN = str(Path(sys.executable).parent / "torchrun")
FRESH = {"SOPInstanceUID", "SeriesInstanceUID", "MediaStorageSOPInstanceUID",
         "FileMetaInformationGroupLength"}
SERIES = 12


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "RAT_SAM")) and k not in ("RANK", "WORLD_SIZE",
                                                                    "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "RAT_HOME": str(tmp / "home"),
            "RAT_CACHE": str(tmp / "cache"), **extra}


def _denoise(folder: Path, out: Path, *more: str) -> list[str]:
    return ["denoise", str(folder), "-o", str(out), "--regions", "classical", "-q", *more]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, Path]:
    """(12 CT series of 2 slices of 64 x 64 in patient folders, what one process writes)."""
    root = tmp_path_factory.mktemp("archive")
    for i in range(SERIES):
        vol = ct_phantom(size=64, slices=2, seed=i)
        save_datasets(synthetic_series(vol, series_number=i + 1, seed=i),
                      root / "in" / f"patient{i:02d}" / "ct")
    ref = root / "single"
    subprocess.run([*RAT, *_denoise(root / "in", ref)], check=True, env=_env(root))
    return root / "in", ref


def _normalized(path: Path) -> pydicom.Dataset:
    ds = pydicom.dcmread(path)

    def blank(dataset: pydicom.Dataset) -> None:
        for elem in dataset:
            if elem.VR == "SQ":
                for item in elem.value:
                    blank(item)
            elif elem.keyword in FRESH or elem.VR in ("DA", "TM", "DT"):
                elem.value = None

    blank(ds)
    blank(ds.file_meta)
    return ds


def _assert_same_outputs(out: Path, ref: Path, files: int = 2 * SERIES) -> None:
    """The same files under `out` as under `ref` (`files` of them), the same apart from
    what is new on every run (see the module docstring)."""
    listed = sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file())
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == listed
    assert len(listed) == files
    for rel in listed:
        a, b = _normalized(out / rel), _normalized(ref / rel)
        assert a.PixelData == b.PixelData, rel
        assert a == b and a.file_meta == b.file_meta, rel


def _log(paths: list[Path]) -> list[dict]:
    return [json.loads(line) for p in paths if p.exists()
            for line in p.read_text().splitlines()]


def _temps(out: Path, mark: str) -> list[Path]:
    """rat's temp entries (`.rat-tmp-<host>.<pid>-...`) with `mark` in their name, in the
    patient folders under `out` (where the series' temp folders are made)."""
    found = []
    try:
        for folder in out.iterdir():
            found += [p for p in folder.iterdir() if p.name.startswith(".rat-tmp-")
                      and mark in p.name]
    except (FileNotFoundError, NotADirectoryError):
        pass  # a folder made or renamed meanwhile
    return found


def test_torchrun_two_processes_write_what_one_process_writes(archive, tmp_path):
    folder, ref = archive
    out, logs = tmp_path / "out", tmp_path / "logs"
    r = subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "ratcli",
                        *_denoise(folder, out, "--job-log", str(logs / "run-{shard}.jsonl"))],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    _assert_same_outputs(out, ref)
    records = _log(sorted(logs.glob("run-*.jsonl")))
    assert [r["status"] for r in records] == ["ok"] * SERIES
    assert len({r["input"] for r in records}) == SERIES  # each input once
    assert {r["shard"] for r in records} == {"1/2", "2/2"}


@pytest.mark.parametrize("how", ["--shard", "SLURM array"])
def test_two_shards_in_two_shells_write_what_one_process_writes(archive, tmp_path, how):
    folder, ref = archive
    out, log = tmp_path / "out", tmp_path / "run.jsonl"  # both shards append to one log
    procs = []
    for k in (1, 2):
        if how == "--shard":
            cmd, env = _denoise(folder, out, "--shard", f"{k}/2"), _env(tmp_path)
        else:  # sbatch --array=1-2
            cmd = _denoise(folder, out)
            env = _env(tmp_path, SLURM_ARRAY_TASK_ID=str(k), SLURM_ARRAY_TASK_COUNT="2",
                       SLURM_ARRAY_TASK_MIN="1", SLURM_ARRAY_TASK_MAX="2")
        procs.append(subprocess.Popen([*RAT, *cmd, "--log", str(log)], env=env,
                                      stderr=subprocess.PIPE, text=True))
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert all(f"shard {k}/2" in e for k, e in zip((1, 2), errors, strict=True)), errors
    _assert_same_outputs(out, ref)
    records = _log([log])
    assert sorted(r["input"] for r in records) == sorted({r["input"] for r in records})
    assert len(records) == SERIES and {r["status"] for r in records} == {"ok"}


def test_a_shard_killed_with_sigkill_finishes_with_skip_existing(archive, tmp_path):
    folder, ref = archive
    out, logs = tmp_path / "out", [tmp_path / "shard1.jsonl", tmp_path / "shard2.jsonl"]
    env = _env(tmp_path)

    def shard(k: int, *more: str) -> subprocess.Popen:
        return subprocess.Popen([*RAT, *_denoise(folder, out, "--shard", f"{k}/2", "--log",
                                                 str(logs[k - 1]), *more)], env=env)

    victim, other = shard(1), shard(2)
    deadline = time.monotonic() + 240
    while len(_log(logs[:1])) < 3 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    # halfway: kill it while it writes its next output, when that can be caught in time
    mine = f".{victim.pid}-"
    deadline = time.monotonic() + 1.0
    while not _temps(out, mine) and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)
    assert victim.poll() is None, "shard 1 finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    for temp in _temps(out, mine):  # cut short while writing: nothing at the final name
        assert not (temp.parent / "-".join(temp.name.split("-")[4:])).exists()
    finished = {r["input"] for r in _log(logs[:1])}
    assert 3 <= len(finished) < SERIES // 2  # killed halfway through its 6 inputs
    assert other.wait(timeout=300) == 0
    rerun = subprocess.run([*RAT, *_denoise(folder, out, "--shard", "1/2", "--log",
                                            str(logs[0]), "--skip-existing", "--json")],
                           env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    rerun_status = {json.loads(line)["input"]: json.loads(line)["status"]
                    for line in rerun.stdout.splitlines()}
    assert {i for i, s in rerun_status.items() if s == "exists"} == finished
    assert not _temps(out, ".rat-tmp-")  # a write the kill cut short left nothing
    _assert_same_outputs(out, ref)
    records = _log(logs)
    done = [r["input"] for r in records if r["status"] == "ok"]
    assert len(done) == SERIES and len(set(done)) == SERIES  # every job once as done
    assert {r["input"] for r in records if r["status"] == "exists"} == finished
    report = subprocess.run([*RAT, "report", *map(str, logs)], env=env, capture_output=True,
                            text=True, timeout=60)
    assert report.returncode == 0
    assert (f"{SERIES + len(finished)} records: {SERIES} done, {len(finished)} exists, "
            "0 skipped, 0 failed") in report.stdout


def test_under_torchrun_a_failed_input_does_not_stop_the_other_ranks(tmp_path):
    """torchrun stops every rank once one exits non-zero: the rank whose only input is
    broken waits for the rank restoring a larger series before it exits 1."""
    folder = tmp_path / "in"
    vol = ct_phantom(size=128, slices=6, seed=0)
    save_datasets(synthetic_series(vol), folder / "big")
    (folder / "broken.nii.gz").write_bytes(b"not a NIfTI file")
    out, log = tmp_path / "out", tmp_path / "run.jsonl"
    r = subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "ratcli",
                        *_denoise(folder, out, "--job-log", str(log))],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    status = {Path(rec["input"]).name: (rec["status"], rec["shard"]) for rec in _log([log])}
    assert status["big"][0] == "ok" and status["broken.nii.gz"][0] == "error"
    assert status["big"][1] != status["broken.nii.gz"][1]  # one input per rank
    assert len(list((out / "big").glob("*.dcm"))) == 6
