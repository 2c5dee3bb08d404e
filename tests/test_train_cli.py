"""`rat train` on the command line: a run in two chunks, resume rules, one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from ratcli.cli import app
from ratcli.models import load_checkpoint


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Private cache and weights dirs; one torch thread (see test_train.py)."""
    monkeypatch.setenv("RAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAT_HOME", str(tmp_path / "home"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rat(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_train_in_chunks_with_a_config_file_and_resume(tmp_path):
    config = tmp_path / "ct.toml"
    config.write_text('data = "synthetic:ct,volumes=3,slices=2,size=32"\nwidth = 8\n'
                      'heads = 4\npatch = 32\nbatch_size = 2\niters = 4\nval_every = 2\n'
                      'regions = "classical"\n')
    run = tmp_path / "run"
    first = rat("train", "--task", "ct", "--config", config, "--out", run, "--stop-at", 2)
    assert first.exit_code == 0, first.output
    assert "step 2/4" in first.stdout and not (run / "model.pt").exists()

    again = rat("train", "--task", "ct", "--config", config, "--out", run)
    assert again.exit_code == 1 and "--resume" in again.stderr
    changed = rat("train", "--resume", run, "--width", 16)
    assert changed.exit_code == 2 and "--width cannot change" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1

    done = rat("train", "--resume", run, "--json")
    assert done.exit_code == 0, done.output
    record = json.loads(done.stdout)
    assert record["finished"] and record["step"] == 4
    ckpt = load_checkpoint(run / "model.pt")
    assert ckpt.sha256 == record["sha256"]
    assert ckpt.config.width == 8 and ckpt.meta["regions"] == "classical"
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["width"] == 8 and saved["data"]["train"]["slices"] == 4


def test_bad_options_are_one_line_usage_errors(tmp_path):
    res = rat("train", "--task", "sr", "--data", "synthetic:he", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "--scale" in res.stderr
    res = rat("train", "--task", "ct", "--data", tmp_path / "missing", "--out", tmp_path / "r")
    assert res.exit_code == 1 and "missing: no such file" in res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("widht = 8\n")
    res = rat("train", "--config", bad, "--out", tmp_path / "r")
    assert res.exit_code == 2 and "widht" in res.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_context_slices_option_reaches_the_model(tmp_path):
    run = tmp_path / "run"
    res = rat("train", "--task", "ct", "--data", "synthetic:ct,volumes=3,slices=3,size=32",
              "--width", 8, "--patch", 32, "--batch-size", 2, "--iters", 1, "--val-every", 1,
              "--regions", "none", "--context-slices", 1, "--out", run)
    assert res.exit_code == 0, res.output
    assert load_checkpoint(run / "model.pt").config.context_slices == 1
    bad = rat("train", "--task", "sr", "--scale", 2, "--data", "synthetic:he",
              "--context-slices", 1, "--out", tmp_path / "sr")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1
