"""Checksums at every load (cached by size and mtime), a user's own checkpoint imported
under a new name, and where `rat info` says each weight comes from."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import SMALL
from typer.testing import CliRunner

from ratcli import checksum
from ratcli.cli import app
from ratcli.errors import ChecksumError
from ratcli.models import RATConfig, build_rat, save_checkpoint
from ratcli.weights import (
    REPO_WEIGHTS_DIR,
    bundled_weights_dir,
    load_manifest,
    resolve_weights,
    weights_dirs,
)


def rat(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def home(tmp_path, monkeypatch):
    """RAT_HOME with a copy of a manifest whose rat-ct entry is a small checkpoint there."""
    home = tmp_path / "home"
    home.mkdir()
    torch.manual_seed(0)
    cfg = RATConfig(**SMALL)
    digest = save_checkpoint(home / "rat-ct.pt", build_rat(cfg), cfg, meta={"task": "ct"})
    manifest = json.loads((REPO_WEIGHTS_DIR / "manifest.json").read_text())
    manifest["weights"]["rat-ct"]["sha256"] = digest
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("RAT_HOME", str(home))
    monkeypatch.setenv("RAT_MANIFEST", str(tmp_path / "manifest.json"))
    monkeypatch.setattr("ratcli.weights.weights_dirs", lambda: [home])
    checksum._memory.clear()
    return home


def _nifti(path, value=0.0):
    sitk.WriteImage(sitk.GetImageFromArray(np.full((1, 24, 24), value, np.float32)), str(path))
    return path


def _tamper(path):
    """Change one byte in the middle, keeping the size (what bit rot or an edit does)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stat = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_tampered_checkpoint_is_refused_at_load(home):
    assert resolve_weights("rat-ct") == home / "rat-ct.pt"
    _tamper(home / "rat-ct.pt")
    with pytest.raises(ChecksumError, match="rat-ct.pt: sha256 .* is not rat-ct's"):
        resolve_weights("rat-ct")
    # given by its path too: the file is rat-ct's, so it is checked as rat-ct
    with pytest.raises(ChecksumError):
        resolve_weights(str(home / "rat-ct.pt"))


def test_tampered_checkpoint_cli_exit_1_nothing_written(home, tmp_path):
    src = _nifti(tmp_path / "ct.nii.gz")
    _tamper(home / "rat-ct.pt")
    r = rat("denoise", src, "-o", tmp_path / "out", "--weights", "rat-ct", "--task", "ct")
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and "is not rat-ct's" in r.stderr
    assert not (tmp_path / "out").exists()
    r = rat("denoise", src, "-o", tmp_path / "out", "--task", "ct")  # the task's default
    assert r.exit_code == 1 and "is not rat-ct's" in r.stderr
    assert not (tmp_path / "out").exists()


def test_second_load_hashes_nothing(home, monkeypatch):
    calls = []
    real = checksum.sha256_file
    monkeypatch.setattr(checksum, "sha256_file", lambda p: calls.append(p) or real(p))
    resolve_weights("rat-ct")
    assert len(calls) == 1
    resolve_weights("rat-ct")
    assert len(calls) == 1  # remembered in this process
    checksum._memory.clear()
    resolve_weights("rat-ct")
    assert len(calls) == 1  # remembered on disk for the next process
    assert (home / checksum.CACHE_NAME).is_file()
    os.utime(home / "rat-ct.pt")  # touched: hashed again
    resolve_weights("rat-ct")
    assert len(calls) == 2


def test_sam_checkpoint_checked_at_load(home, tmp_path):
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["weights"]["sam-vit-b"]["sha256"] = hashlib.sha256(b"sam").hexdigest()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (home / "sam_vit_b_01ec64.pth").write_bytes(b"not sam")
    from ratcli.weights import find_sam_checkpoint

    with pytest.raises(ChecksumError, match="is not sam-vit-b's"):
        find_sam_checkpoint()
    (home / "sam_vit_b_01ec64.pth").write_bytes(b"sam")
    assert find_sam_checkpoint() == home / "sam_vit_b_01ec64.pth"


def test_import_own_checkpoint_under_a_new_name(home, tmp_path):
    torch.manual_seed(1)
    cfg = RATConfig(**SMALL)
    mine = tmp_path / "mine.pt"
    digest = save_checkpoint(mine, build_rat(cfg), cfg, meta={"task": "ct"})
    r = rat("weights", "import", mine, "--name", "my-ct", "--json")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["path"] == str(home / "my-ct.pt") and rec["sha256"] == digest
    user = json.loads((home / "manifest.json").read_text())["weights"]["my-ct"]
    assert user["sha256"] == digest and user["task"] == "ct"
    # listed, with where it loads from
    rows = {json.loads(ln)["name"]: json.loads(ln) for ln in
            rat("weights", "list", "--json").stdout.splitlines()}
    assert rows["my-ct"]["path"] == str(home / "my-ct.pt")
    assert rows["my-ct"]["origin"] == "user"
    # usable by name; NIfTI takes the task from the weights
    src = _nifti(tmp_path / "ct.nii.gz")
    r = rat("denoise", src, "-o", tmp_path / "out.nii.gz", "--weights", "my-ct",
            "--regions", "none")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "out.nii.gz").is_file()
    # checked at load like ours
    _tamper(home / "my-ct.pt")
    r = rat("denoise", src, "-o", tmp_path / "out2.nii.gz", "--weights", "my-ct")
    assert r.exit_code == 1 and "is not my-ct's" in r.stderr


def test_import_refusals(home, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    r = rat("weights", "import", junk, "--name", "my-ct")
    assert r.exit_code == 1 and "junk.pt" in r.stderr and r.stderr.count("\n") == 1
    r = rat("weights", "import", junk, "--name", "../evil")
    assert r.exit_code == 2 and "--name" in r.stderr
    cfg = RATConfig(**SMALL)
    nameless = tmp_path / "nameless.pt"
    save_checkpoint(nameless, build_rat(cfg), cfg, meta={})
    r = rat("weights", "import", nameless, "--name", "x")
    assert r.exit_code == 1 and "--task" in r.stderr
    assert rat("weights", "import", nameless, "--name", "x", "--task", "pet").exit_code == 0
    other = tmp_path / "other.pt"
    shutil.copy(home / "rat-ct.pt", other)
    r = rat("weights", "import", other, "--name", "x", "--task", "ct")
    assert r.exit_code == 1 and "already imported" in r.stderr
    assert not [p for p in home.iterdir() if p.name.startswith(".rat-tmp-")]
    assert "x" in load_manifest()


def test_info_shows_search_order_and_sources(home):
    r = rat("info", "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["weights"]["rat-ct"] == str(home / "rat-ct.pt")
    assert data["weights"]["sam-vit-h"] == "missing"
    assert data["weights search"][-1].startswith(str(home))


def test_bundled_dir_is_the_checkout_only():
    assert bundled_weights_dir() == REPO_WEIGHTS_DIR  # tests run from the checkout
    assert (REPO_WEIGHTS_DIR.parent / "pyproject.toml").is_file()
    assert weights_dirs()[0] == REPO_WEIGHTS_DIR
