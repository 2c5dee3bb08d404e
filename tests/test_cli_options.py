"""One CLI vocabulary: -h everywhere, -o/--output, the same --device choice, --quiet and
--json where they make sense, no <bool> metavars; progress names the file; results on
their own lines; --quiet silences warnings; train starts from the recipes' settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import SMALL
from typer.testing import CliRunner

from ratcli.cli import app
from ratcli.models import RATConfig, build_rat, save_checkpoint
from ratcli.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["denoise", "sr", "regions", "train", "evaluate", "info", "weights",
            "weights list", "weights verify", "weights import", "weights fetch"]
WITH_OUTPUT = ["denoise", "sr", "regions", "train", "evaluate"]
WITH_DEVICE = ["denoise", "sr", "regions", "train", "evaluate"]


def help_text(command: str, flag: str = "-h") -> str:
    result = CliRunner().invoke(app, [*command.split(), flag], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_short_and_long_help_everywhere_without_bool_metavars(command):
    text = help_text(command)
    assert text == help_text(command, "--help")
    assert "-h, --help" in text
    assert "<bool>" not in text


@pytest.mark.parametrize("command", WITH_OUTPUT)
def test_output_option_is_o_and_output(command):
    assert "-o, --output" in help_text(command)


@pytest.mark.parametrize("command", WITH_DEVICE)
def test_device_is_the_same_checked_choice(command):
    assert "--device <auto|cpu|cuda|mps>" in help_text(command)


@pytest.mark.parametrize("command", WITH_OUTPUT)
def test_quiet_and_json(command):
    text = help_text(command)
    assert "-q, --quiet" in text and "--json" in text


def test_task_choices_are_the_task_table():
    # the --task choice of denoise/sr offers every row of the task table, and only those
    text = " ".join(help_text("denoise").split())
    offered = text.split("--task <", 1)[1].split(">", 1)[0].split("|")
    assert set(offered) == {"auto", *TASKS}


def test_folder_rules_are_in_help():
    text = " ".join(help_text("denoise").split())
    assert "-o is required" in text and "go straight into -o" in text
    assert "mirrors each input" in text and "skipped" in text


@pytest.fixture(scope="module")
def ct_weights(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("w") / "ct.pt"
    torch.manual_seed(0)
    cfg = RATConfig(**SMALL)
    save_checkpoint(path, build_rat(cfg), cfg, meta={"task": "ct"})
    return str(path)


def _volumes(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        array = np.full((1, 24, 24), -1000.0 + i, np.float32)
        sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / f"v{i}.nii.gz"))
    return folder


@pytest.mark.slow
def test_progress_names_the_file_and_results_are_lines(tmp_path, ct_weights):
    """On a terminal (forced) the bar says "file N"; stdout holds one result per line."""
    src = _volumes(tmp_path / "in", 2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FORCE_COLOR": "1", "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-m", "ratcli", "denoise", str(src), "-o",
                           str(tmp_path / "out"), "--weights", ct_weights, "--regions",
                           "none"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "file 1" in proc.stderr and "file 2" in proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(" -> " in ln and ln.endswith(" s)") for ln in lines)


def test_quiet_silences_the_sam_warning(tmp_path, ct_weights):
    src = _volumes(tmp_path / "in", 1)
    runner = CliRunner()
    loud = runner.invoke(app, ["denoise", str(src), "-o", str(tmp_path / "a"), "--weights",
                               ct_weights])
    assert loud.exit_code == 0 and "warning:" in loud.stderr
    quiet = runner.invoke(app, ["denoise", str(src), "-o", str(tmp_path / "b"), "--weights",
                                ct_weights, "--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == ""


def test_no_cache_leaves_the_region_cache_alone(tmp_path, ct_weights, monkeypatch):
    monkeypatch.setenv("RAT_CACHE", str(tmp_path / "cache"))
    src = _volumes(tmp_path / "in", 1)
    r = CliRunner().invoke(app, ["denoise", str(src), "-o", str(tmp_path / "out"),
                                 "--weights", ct_weights, "--regions", "classical",
                                 "--no-cache"])
    assert r.exit_code == 0, r.stderr
    cache = tmp_path / "cache"
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]


@pytest.mark.parametrize(("flag", "value"), [("--max-pixels", "-1"), ("--threads", "0")])
def test_limits_are_checked_as_usage_errors(tmp_path, flag, value):
    r = CliRunner().invoke(app, ["denoise", str(tmp_path), "-o", str(tmp_path / "o"), flag,
                                 value])
    assert r.exit_code == 2 and flag in r.stderr


RECIPES = ROOT / "weights" / "recipes"


@pytest.mark.parametrize("task", ["ct", "pet", "sr-x2", "sr-x4"])
def test_train_defaults_are_the_shipped_recipes(task):
    from ratcli.cli.train import _train_settings
    from ratcli.training.config import RECIPE_DEFAULTS

    recipe = tomllib.loads((RECIPES / f"{task}.toml").read_text())
    cfg, run = _train_settings({"task": task}, scale=None, config=None, resume=None, out=None)
    for key in RECIPE_DEFAULTS[task]:
        want = tuple(recipe[key]) if isinstance(recipe[key], list) else recipe[key]
        assert getattr(cfg, key) == want, key
    if task == "ct":
        assert (cfg.input_shift, cfg.input_gain, cfg.input_detail) == (0.25, 4.0, 40.0)
    assert run == Path("runs") / task


@pytest.mark.slow
def test_train_reports_from_the_first_second(tmp_path):
    """Before the first step (data loading) and at each step, stderr says so."""
    cmd = [sys.executable, "-m", "ratcli", "train", "--task", "ct", "--data",
           "synthetic:ct,volumes=2,slices=1,size=32", "--width", "8", "--iters", "2",
           "--patch", "32", "--batch-size", "2", "--regions", "none", "--device", "cpu",
           "--log-every", "1", "-o", str(tmp_path / "run")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    first = proc.stderr.readline()
    assert "train ct: loading data" in first and proc.poll() is None
    rest = proc.stderr.read()
    proc.wait(timeout=300)
    assert proc.returncode == 0, rest
    assert "step 1/2" in rest and "step 2/2" in rest
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["width"] == 8
