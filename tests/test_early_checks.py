"""Checks made before any work (issue 25): one rule for --max-pixels and RAT_MAX_PIXELS,
every unpaired file of `rat evaluate` named, and a pickle checkpoint refused in rat's one
line without torch's warning. (`rat denoise notes.txt` without torch: test_startup.py.)"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from ratcli.cli import app
from ratcli.errors import CheckpointError, UsageError
from ratcli.io.checks import MAX_PIXELS_ENV, max_pixels_limit


def _rat(*args, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def _nifti(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.float32)), str(path))
    return path


# -- item 6: one rule for the option and the environment variable ----------------------


@pytest.mark.parametrize(("args", "env", "needle"), [
    (["--max-pixels", "-1"], {}, "--max-pixels -1: must be a pixel count"),
    ([], {MAX_PIXELS_ENV: "-5"}, "RAT_MAX_PIXELS='-5': must be a pixel count"),
    ([], {MAX_PIXELS_ENV: "lots"}, "RAT_MAX_PIXELS='lots': not a whole number"),
])
def test_negative_pixel_limit_is_a_usage_error_from_either_place(tmp_path, args, env, needle):
    src = _nifti(tmp_path / "x.nii.gz", np.zeros((1, 8, 8)))
    r = _rat("denoise", src, "-o", tmp_path / "out", *args, env=env)
    assert r.exit_code == 2, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_pixel_limit_rule_in_the_library(monkeypatch):
    monkeypatch.setenv(MAX_PIXELS_ENV, "-5")
    with pytest.raises(UsageError, match=MAX_PIXELS_ENV):
        max_pixels_limit()
    assert max_pixels_limit(0) is None and max_pixels_limit(7) == 7  # the option wins
    with pytest.raises(UsageError, match="--max-pixels -1"):
        max_pixels_limit(-1)
    monkeypatch.setenv(MAX_PIXELS_ENV, "0")
    assert max_pixels_limit() is None  # 0: no limit


# -- item 7: rat evaluate names every unpaired file --------------------------------------


def test_evaluate_names_every_unpaired_file_or_leaves_them_out_with_a_note(tmp_path):
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    full = rng.normal(0, 100, (1, 32, 32))
    for name in ("a", "b"):
        _nifti(data / "full" / f"{name}.nii.gz", full)
        _nifti(data / "low" / f"{name}.nii.gz", full + rng.normal(0, 30, full.shape))
    _nifti(data / "low" / "only_low.nii.gz", full)
    _nifti(data / "full" / "only_full.nii.gz", full)
    args = ["evaluate", "--task", "ct", "--data", data, "--baselines", "input",
            "--figures", "0", "--device", "cpu"]
    r = _rat(*args, "-o", tmp_path / "eval")
    assert r.exit_code == 1
    assert "2 unpaired file(s)" in r.stderr and "--allow-unpaired" in r.stderr
    assert "low/only_low.nii.gz (no full/only_low.nii.gz)" in r.stderr
    assert "full/only_full.nii.gz (no low/only_full.nii.gz)" in r.stderr
    assert not (tmp_path / "eval").exists()
    r = _rat(*args, "-o", tmp_path / "eval", "--allow-unpaired", "--json")
    assert r.exit_code == 0, r.stderr
    assert "note: " in r.stderr and "left out 2 unpaired file(s)" in r.stderr
    out = json.loads(r.stdout)
    assert "only_low.nii.gz" in out["notes"][0]
    report = json.loads(Path(out["files"]["json"]).read_text())
    assert {row["image"].split("[")[0] for row in report["images"]} == {"a.nii.gz", "b.nii.gz"}
    assert report["notes"] == out["notes"]


# -- item 10: a pickle checkpoint is one rat line, no torch warning -----------------------


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_checkpoint_is_refused_without_torch_warnings(tmp_path, monkeypatch):
    from ratcli.models import load_checkpoint

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"model": _Evil()}, fh, protocol=4)  # torch warns about protocol 4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match="evil.pt: not a readable rat checkpoint"):
            load_checkpoint(path)
    assert [str(w.message) for w in caught] == []
    assert not (tmp_path / "pwned").exists()
