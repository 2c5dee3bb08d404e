"""The commands of docs/cluster.md, run as written (issue 24): shards by hand, torchrun on
one node and on two "nodes" (both on this machine), the sbatch array script under bash
with the SLURM array variables set, and `rat report`. Each writes what one process
writes (see test_cluster_e2e for what "the same" means). CPU processes stand in for
GPUs: the process counts are lowered to fit a small machine."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_cluster_e2e import _assert_same_outputs, _env

from ratcli.phantom_dicom import save_datasets, synthetic_series
from ratcli.phantoms import ct_phantom

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[1] / "docs" / "cluster.md"
BIN = str(Path(sys.executable).parent)
SERIES = 6


def _blocks() -> dict[str, str]:
    """The doc's ```sh blocks by their first line (`# name`, or `#!/bin/bash`)."""
    found = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)
    return {block.splitlines()[0].lstrip("#! ").strip(): block for block in found}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("docs-archive")
    for i in range(SERIES):
        vol = ct_phantom(size=32, slices=2, seed=i)
        save_datasets(synthetic_series(vol, series_number=i + 1, seed=i),
                      root / "archive" / f"p{i}" / "ct")
    subprocess.run([sys.executable, "-m", "ratcli", "denoise", str(root / "archive"), "-o",
                    str(root / "single"), "-q"], check=True, env=_env(root))
    return root / "archive", root / "single"


def _run_all(scripts: list[str], tmp: Path, archive: Path, extra: list[dict]) -> Path:
    """Run the scripts at once with bash (each with its own extra variables); returns
    the logs folder."""
    logs = tmp / "logs"
    logs.mkdir()
    base = _env(tmp, ARCHIVE=str(archive), RESULTS=str(tmp / "results"), LOGS=str(logs),
                PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    procs = [subprocess.Popen(["bash", "-euc", script], env={**base, **more},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for script, more in zip(scripts, extra, strict=True)]
    outs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), [e[-1500:] for _, e in outs]
    return logs


def _records(logs: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(logs.glob("*.jsonl"))
            for line in p.read_text().splitlines()]


def _check(tmp: Path, ref: Path, logs: Path, shards: int) -> None:
    _assert_same_outputs(tmp / "results", ref, files=2 * SERIES)
    records = _records(logs)
    assert sorted(r["input"] for r in records) == sorted({r["input"] for r in records})
    assert len(records) == SERIES and {r["status"] for r in records} == {"ok"}
    assert len({r["shard"] for r in records}) == min(shards, SERIES)


def test_shards_by_hand(archive, tmp_path):
    folder, ref = archive
    block = _blocks()["shards by hand: run each in its own shell or machine, I = 1..4"]
    logs = _run_all([block] * 4, tmp_path, folder, [{"I": str(i)} for i in (1, 2, 3, 4)])
    _check(tmp_path, ref, logs, 4)


def test_torchrun_on_one_node(archive, tmp_path):
    folder, ref = archive
    block = _blocks()["one node, several GPUs"].replace("--nproc-per-node 4",
                                                         "--nproc-per-node 2")
    _check(tmp_path, ref, _run_all([block], tmp_path, folder, [{}]), 2)


def test_torchrun_on_two_nodes(archive, tmp_path):
    folder, ref = archive
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    block = (_blocks()["several nodes"].replace("--nproc-per-node 8", "--nproc-per-node 1")
             .replace("--master-port 29500", f"--master-port {port}"))
    logs = _run_all([block] * 2, tmp_path, folder,
                    [{"NODE_RANK": str(k), "MASTER": "127.0.0.1"} for k in (0, 1)])
    _check(tmp_path, ref, logs, 2)


def test_sbatch_array_script_and_report(archive, tmp_path):
    folder, ref = archive
    blocks = _blocks()
    script = blocks["/bin/bash"]
    assert "#SBATCH --array=1-8" in script
    array = {"SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "1",
             "SLURM_ARRAY_TASK_MAX": "2"}  # as sbatch sets them for --array=1-2
    logs = _run_all([script] * 2, tmp_path, folder,
                    [{**array, "SLURM_ARRAY_TASK_ID": str(k)} for k in (1, 2)])
    _check(tmp_path, ref, logs, 2)
    report = subprocess.run(["bash", "-euc", blocks["report"]], capture_output=True,
                            text=True, env=_env(tmp_path, LOGS=str(logs), PATH=BIN + os.pathsep
                                                + os.environ.get("PATH", "")))
    assert report.returncode == 0, report.stderr
    assert f"{SERIES} records: {SERIES} done, 0 exists, 0 skipped, 0 failed" in report.stdout
