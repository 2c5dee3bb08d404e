"""Shards and resume (issue 24), fast parts: `--shard` and the environment (torchrun,
SLURM arrays), the plan's order (discovery order, working directory), the balance by
pixel count, whole-plan checks on every shard, `--skip-existing` completeness, and the
job log with `rat report`. The end-to-end runs are in test_cluster_e2e.py (slow)."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from ratcli.batch import Job, OutputRule, plan_batch
from ratcli.cli import app
from ratcli.errors import OutputExistsError, UsageError
from ratcli.io.sources import Source, output_path_for
from ratcli.joblog import JobLog, summarize_logs
from ratcli.phantom_dicom import save_datasets, synthetic_series
from ratcli.phantoms import ct_phantom
from ratcli.shard import (
    Shard,
    balance,
    output_complete,
    parse_shard,
    pixel_estimate,
    plan_order,
    resolve_shard,
    select_jobs,
    shard_from_env,
)

RULE = OutputRule(file_suffixes={"dicom": (".nii.gz",), "nifti": (".nii", ".nii.gz"),
                                 "image": (".png",)})


def _nifti(path: Path, shape=(2, 8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros(shape, np.float32)), str(path))
    return path


def _tree(root: Path, sizes: list[int]) -> list[Path]:
    """NIfTI volumes of 2 x s x s voxels in nested folders (names not in size order)."""
    return [_nifti(root / f"d{i % 3}" / f"v{(i * 7) % 11:02d}_{i}.nii.gz", (2, s, s))
            for i, s in enumerate(sizes)]


def _owners(plan_of) -> dict[str, int]:
    """{output relative to the output folder: shard} from plan_of(shard) for 3 shards."""
    out = {}
    for k in range(3):
        plan = plan_of(Shard(k, 3))
        out.update({job.output.name + str(job.output.parent.name): k for job in plan.jobs})
    return out


# -- where the shard comes from -------------------------------------------------------


def test_parse_shard_and_its_usage_errors():
    assert parse_shard("2/4") == Shard(1, 4) and parse_shard(" 1 / 1 ").label == "1/1"
    for bad in ("0/4", "5/4", "2", "a/b", "1/0", "-1/2"):
        with pytest.raises(UsageError, match="--shard"):
            parse_shard(bad)


def test_torchrun_and_slurm_environments():
    assert shard_from_env({}) is None
    torch_env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    assert shard_from_env(torch_env) == Shard(3, 4, "torchrun RANK 3 of 4", 1)
    # sbatch --array=1-4 (COUNT given) and --array=0-15:4 (MIN/MAX/STEP only)
    slurm = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4",
             "SLURM_ARRAY_TASK_MIN": "1"}
    assert shard_from_env(slurm) == Shard(1, 4, "SLURM array task 2 of 4")
    stepped = {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "0",
               "SLURM_ARRAY_TASK_MAX": "15", "SLURM_ARRAY_TASK_STEP": "4"}
    s = shard_from_env(stepped)
    assert (s.index, s.count, s.local_rank) == (3, 4, None)
    # torchrun inside each array task: ranks within the task's share
    both = shard_from_env({**slurm, **torch_env})
    assert (both.index, both.count, both.local_rank) == (1 * 4 + 3, 16, 1)
    for bad in ({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4"},
                {"SLURM_ARRAY_TASK_ID": "1"}, {"RANK": "4", "WORLD_SIZE": "4"},
                {"RANK": "x", "WORLD_SIZE": "4"}):
        with pytest.raises(UsageError, match="pass --shard"):
            shard_from_env(bad)


def test_explicit_shard_wins_over_the_environment_but_keeps_the_gpu():
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "SLURM_ARRAY_TASK_ID": "0",
           "SLURM_ARRAY_TASK_COUNT": "8"}
    assert resolve_shard("1/1", env) == Shard(0, 1, "--shard", 1)
    assert resolve_shard(None, {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "8"}
                         ).count == 8
    assert resolve_shard("3/5", {}) == Shard(2, 5)


# -- the plan: deterministic and balanced ------------------------------------------------


def test_balance_keeps_every_shard_within_1_5_times_the_mean():
    rng = random.Random(0)
    for count in (2, 3, 4, 8):
        weights = [rng.choice([64, 128, 256, 512]) ** 2 * rng.randint(1, 300)
                   for _ in range(200)]
        owner = balance(weights, count)
        loads = [sum(w for w, k in zip(weights, owner, strict=True) if k == s)
                 for s in range(count)]
        assert max(loads) <= 1.5 * sum(weights) / count
        assert owner == balance(list(weights), count)  # deterministic
    assert sorted(balance([0, 0, 0, 0], 2)) == [0, 0, 1, 1]  # unknown sizes: by count


def test_plan_is_the_same_whatever_the_discovery_order_and_working_directory(
        tmp_path, monkeypatch):
    files = _tree(tmp_path / "in", [8, 32, 16, 64, 8, 48, 24, 8, 40, 16, 56, 8])
    out = tmp_path / "out"

    def plans(args, output):
        return _owners(lambda shard: plan_batch(args, output, RULE, shard=shard))

    reference = plans(files, out)
    assert sorted(reference.values()) == sorted([0, 1, 2] * 4)  # 12 jobs, each once
    for seed in range(3):  # files listed in any order (e.g. `find | rat denoise -`)
        shuffled = files[:]
        random.Random(seed).shuffle(shuffled)
        assert plans(shuffled, out) == reference
    monkeypatch.chdir(tmp_path / "in")  # relative paths from another folder
    rel = [f.relative_to(tmp_path / "in") for f in files]
    assert plans(rel[::-1], Path("..") / "out") == reference
    # a folder argument from the root gives the same outputs in the same shares
    monkeypatch.chdir(tmp_path)
    folder = _owners(lambda shard: plan_batch([Path("in/d0"), Path("in/d1"), Path("in/d2")],
                                              Path("out"), RULE, shard=shard))
    assert folder == reference


def test_shares_are_balanced_by_pixels_from_headers(tmp_path):
    sizes = [8, 64, 16, 64, 8, 48, 24, 8, 40, 16, 56, 32, 8, 8, 16, 24]
    files = _tree(tmp_path / "in", sizes)
    pixels = {}
    for k in range(3):
        plan = plan_batch(files, tmp_path / "out", RULE, shard=Shard(k, 3))
        pixels[k] = plan.share.pixels
        assert plan.share.total_pixels == sum(2 * s * s for s in sizes)
    assert max(pixels.values()) <= 1.5 * sum(pixels.values()) / 3


def test_pixel_estimates_read_headers_only(tmp_path):
    vol = _nifti(tmp_path / "v.nii.gz", (3, 20, 10))
    assert pixel_estimate(Source(vol, (vol,), "nifti", Path(vol.name))) == 600
    files = save_datasets(synthetic_series(ct_phantom(size=16, slices=3)), tmp_path / "ct")
    series = Source(tmp_path / "ct", tuple(files), "dicom", Path("ct"))
    assert pixel_estimate(series) == 3 * 16 * 16
    png = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.zeros((12, 30), np.uint8)).save(png)
    assert pixel_estimate(Source(png, (png,), "image", Path("a.png"))) == 360
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"x" * 77)  # no header: its size stands in
    assert pixel_estimate(Source(junk, (junk,), "dicom", Path("junk.dcm"))) == 77


def test_plan_order_sorts_by_output_relative_to_the_output_folder(tmp_path):
    def job(name):
        src = Source(Path(f"/x/{name}"), (Path(f"/x/{name}"),), "nifti", Path(name))
        return Job(src, output_path_for(src, tmp_path / "out"))

    jobs = [job(n) for n in ("b.nii", "a/z.nii", "a.nii", "A.nii")]
    assert [j.source.rel.as_posix() for j in plan_order(jobs, tmp_path / "out")] == [
        "A.nii", "a.nii", "a/z.nii", "b.nii"]


# -- every shard checks the whole plan; existing outputs only in its own share -----------


def test_a_usage_error_in_one_share_shows_on_every_shard(tmp_path):
    files = _tree(tmp_path / "in", [8, 8, 8, 8])
    files.append(_nifti(tmp_path / "in" / ("n" * 230 + ".nii.gz")))
    for k in range(2):
        with pytest.raises(UsageError, match="output name is too long"):
            plan_batch(files, tmp_path / "out", RULE, shard=Shard(k, 2))


def test_outputs_of_other_shares_may_exist_records_go_to_the_first_shard(tmp_path):
    files = _tree(tmp_path / "in", [8, 16, 24, 32])
    missing = tmp_path / "in" / "gone.nii.gz"
    plans = [plan_batch([*files, missing], tmp_path / "out", RULE, shard=Shard(k, 2))
             for k in range(2)]
    assert [len(p.records) for p in plans] == [1, 0]  # the missing input: reported once
    _nifti(plans[0].jobs[0].output)  # shard 1 wrote one output meanwhile
    again = plan_batch(files, tmp_path / "out", RULE, shard=Shard(1, 2))
    assert [j.output for j in again.jobs] == [j.output for j in plans[1].jobs]
    with pytest.raises(OutputExistsError):  # but its own existing outputs are refused
        plan_batch(files, tmp_path / "out", RULE, shard=Shard(0, 2))


def test_skip_existing_keeps_complete_outputs_and_keeps_the_shares(tmp_path):
    files = _tree(tmp_path / "in", [8, 16, 24, 32, 40, 48])
    first = [plan_batch(files, tmp_path / "out", RULE, shard=Shard(k, 2)) for k in range(2)]
    done = first[0].jobs[:2]
    for job in done:
        _nifti(job.output)
    rerun = plan_batch(files, tmp_path / "out", RULE, shard=Shard(0, 2), skip_existing=True)
    assert [j.output for j in rerun.jobs] == [j.output for j in first[0].jobs[2:]]
    assert [(r.status, r.output) for r in rerun.records] == [("exists", str(j.output))
                                                            for j in done]
    assert rerun.share.exists == 2 and "2 outputs complete" in rerun.share.describe()


def test_a_dicom_series_is_complete_only_with_all_its_files(tmp_path):
    files = save_datasets(synthetic_series(ct_phantom(size=16, slices=3)), tmp_path / "ct")
    job = Job(Source(tmp_path / "ct", tuple(files), "dicom", Path("ct")), tmp_path / "out")
    assert not output_complete(job)
    (tmp_path / "out").mkdir()
    for f in files[:2]:
        (tmp_path / "out" / f.name).write_bytes(b"x")
    (tmp_path / "out" / ".rat-tmp-0.1-x-IM0003.dcm").write_bytes(b"x")
    assert not output_complete(job)
    (tmp_path / "out" / files[2].name).write_bytes(b"x")
    assert output_complete(job)
    todo, kept, share = select_jobs([job], tmp_path, shard=None, skip_existing=True)
    assert (todo, kept, share.exists) == ([], [job], 1)


# -- the job log and rat report -------------------------------------------------------


def _record(name, status, seconds=1.0, error=None):
    return {"input": name, "output": f"out/{name}", "status": status, "seconds": seconds,
            "error": error}


def test_job_log_appends_lines_from_many_writers(tmp_path):
    path = tmp_path / "logs" / "run.jsonl"
    logs = [JobLog(path, shard=Shard(k, 4), device="cpu", command="denoise")
            for k in range(4)]

    def write(log, k):
        for i in range(200):
            log.write(_record(f"in/{k}-{i}" + "x" * 300, "ok"))

    threads = [threading.Thread(target=write, args=(log, k)) for k, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 800 and {r["shard"] for r in lines} == {"1/4", "2/4", "3/4", "4/4"}
    assert {"host", "pid", "device", "time", "seconds"} <= set(lines[0])
    assert JobLog(tmp_path / "r-{shard}.jsonl", shard=Shard(2, 4)).path.name == "r-3.jsonl"


def test_summary_counts_statuses_and_lists_failures_still_failing(tmp_path):
    a, b = JobLog(tmp_path / "a.jsonl", shard=Shard(0, 2)), JobLog(tmp_path / "b.jsonl",
                                                                    shard=Shard(1, 2))
    a.write(_record("x", "ok", 2.0))
    a.write(_record("y", "error", 0.5, "y: broken"))
    b.write(_record("z", "error", 0.5, "z: broken"))
    b.write(_record("s", "skipped", 0.0))
    b.write(_record("z", "ok", 1.0))  # rerun: z is fixed, y is not
    a.write(_record("x", "exists", 0.0))
    with open(tmp_path / "b.jsonl", "a") as fh:
        fh.write('{"input": "w", "sta')  # a line cut short by kill -9
    s = summarize_logs([tmp_path / "a.jsonl", tmp_path / "b.jsonl"])
    assert s.counts == {"ok": 2, "exists": 1, "skipped": 1, "error": 2}
    assert [f["input"] for f in s.failures] == ["y"] and s.unreadable == 1
    assert s.seconds == pytest.approx(4.0) and s.shards == ["1/2", "2/2"]
    r = CliRunner().invoke(app, ["report", str(tmp_path / "a.jsonl"),
                                 str(tmp_path / "b.jsonl")])
    assert r.exit_code == 1
    assert "6 records: 2 done, 1 exists, 1 skipped, 2 failed" in r.stdout
    assert "y: y: broken" in r.stdout
    r = CliRunner().invoke(app, ["report", "--json", str(tmp_path / "a.jsonl")])
    assert json.loads(r.stdout)["to_rerun"][0]["input"] == "y"
    r = CliRunner().invoke(app, ["report", str(tmp_path / "none.jsonl")])
    assert r.exit_code == 1 and "no such log file" in r.stderr


def test_under_torchrun_a_failed_rank_waits_for_the_others():
    from datetime import timedelta

    from torch.distributed import TCPStore

    from ratcli.shard import torchrun_finished

    torchrun_finished(failed=True, environ={})  # not under torchrun: returns at once
    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                     timeout=timedelta(seconds=10))
    env = {"TORCHELASTIC_RUN_ID": "t", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(store.port), "WORLD_SIZE": "2"}
    torchrun_finished(failed=False, environ=env)  # rank 1 ends well: counted, no wait
    assert store.add("rat/t/0/finished", 0) == 1
    later = threading.Timer(0.3, lambda: store.add("rat/t/0/finished", 1))
    env["WORLD_SIZE"] = "3"
    later.start()
    torchrun_finished(failed=True, environ=env, poll_s=0.05)  # waits for the third rank
    assert store.add("rat/t/0/finished", 0) == 3


def test_local_rank_picks_the_gpu(monkeypatch):
    import torch

    from ratcli.inference.device import resolve_device

    picked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", picked.append)
    assert resolve_device("auto", local_rank=3) == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)
    assert picked == [torch.device("cuda", 1), torch.device("cuda", 0)]
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda")  # no torchrun: as before


def test_a_list_on_stdin_is_refused_under_torchrun(tmp_path, monkeypatch):
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    r = CliRunner().invoke(app, ["denoise", "-", "-o", str(tmp_path / "out")],
                           input="a.nii.gz\n")
    assert r.exit_code == 2 and "every rank reads the same stdin" in r.stderr


@pytest.mark.parametrize(("args", "code"), [
    (["report", "run.jsonl"], 0),
    (["denoise", "x.nii.gz", "-o", "out", "--shard", "3/2"], 2),
])
def test_report_and_a_bad_shard_import_no_torch(tmp_path, monkeypatch, args, code):
    from test_startup import HEAVY, run_rat

    monkeypatch.chdir(tmp_path)
    JobLog(tmp_path / "run.jsonl").write(_record("x", "ok"))
    proc, modules = run_rat(tmp_path, *args)
    assert proc.returncode == code, proc.stderr
    assert not [m for m in HEAVY if m in modules]
