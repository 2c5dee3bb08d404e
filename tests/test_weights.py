"""Weights manifest, lookup, import and verify (library and `rat weights` CLI)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from typer.testing import CliRunner

from ratcli.checksum import CACHE_NAME
from ratcli.cli import app
from ratcli.errors import CheckpointError, ChecksumError, WeightsNotFoundError
from ratcli.models import RATConfig, build_rat, save_checkpoint
from ratcli.weights import (
    REPO_WEIGHTS_DIR,
    find_sam_checkpoint,
    load_manifest,
    resolve_weights,
)
from ratcli.weights_install import import_weights, verify_weights

KNOWN_SAM = {  # official file names; sha256 as checked by independent projects
    "sam-vit-b": ("sam_vit_b_01ec64.pth", "ec2df627"),
    "sam-vit-l": ("sam_vit_l_0b3195.pth", "3adcc431"),
    "sam-vit-h": ("sam_vit_h_4b8939.pth", "a7bf3b02"),
}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private RAT_HOME and a manifest with one tiny verifiable entry."""
    home = tmp_path / "home"
    payload = b"tiny weights\n" * 100
    manifest = json.loads((REPO_WEIGHTS_DIR / "manifest.json").read_text())
    manifest["weights"]["tiny"] = {"file": "tiny.bin", "kind": "sam",
                                   "sha256": hashlib.sha256(payload).hexdigest()}
    for rec in manifest["weights"].values():
        if rec["kind"] == "rat":
            rec["sha256"] = None  # as if unpublished: these tests import their own files
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    (tmp_path / "tiny.bin").write_bytes(payload)
    monkeypatch.setenv("RAT_HOME", str(home))
    monkeypatch.setenv("RAT_MANIFEST", str(path))
    monkeypatch.delenv("RAT_SAM_CHECKPOINT", raising=False)
    # only the private RAT_HOME, not the checkpoints shipped in the repository's weights/
    monkeypatch.setattr("ratcli.weights.weights_dirs", lambda: [home])
    return home


def test_bundled_manifest_lists_rat_tasks_and_official_sam(monkeypatch):
    monkeypatch.delenv("RAT_MANIFEST", raising=False)
    manifest = load_manifest()
    for task in ("ct", "pet", "sr-x2", "sr-x4"):
        entry = manifest[f"rat-{task}"]
        assert entry.kind == "rat" and entry.task == task
    for name, (file, sha_prefix) in KNOWN_SAM.items():
        entry = manifest[name]
        assert entry.file == file
        assert entry.url == f"https://dl.fbaipublicfiles.com/segment_anything/{file}"
        assert entry.sha256.startswith(sha_prefix) and len(entry.sha256) == 64


def test_resolve_existing_path_and_missing_name(home, tmp_path):
    f = tmp_path / "any.pt"
    f.write_bytes(b"x")
    assert resolve_weights(str(f)) == f
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_weights("sam-vit-b")
    msg = str(err.value)
    assert "\n" not in msg and "rat weights fetch sam-vit-b" in msg and "--weights PATH" in msg
    with pytest.raises(WeightsNotFoundError, match="rat weights import FILE --name rat-ct"):
        resolve_weights("rat-ct")
    with pytest.raises(WeightsNotFoundError, match="known weights name"):
        resolve_weights("no-such-model")
    with pytest.raises(WeightsNotFoundError, match="file not found"):
        resolve_weights(str(tmp_path / "missing.pt"))


def test_import_identifies_by_sha256_and_resolves(home, tmp_path):
    entry, dest = import_weights(tmp_path / "tiny.bin")
    assert entry.name == "tiny" and dest == home / "tiny.bin"
    assert dest.read_bytes() == (tmp_path / "tiny.bin").read_bytes()
    assert resolve_weights("tiny") == dest
    assert {s.name: s.status for s in verify_weights()}["tiny"] == "ok"
    # no temp files left; the digest cache sits beside it
    assert sorted(p.name for p in home.iterdir()) == [CACHE_NAME, "tiny.bin"]


def test_import_rejects_wrong_files(home, tmp_path):
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(b"not sam")
    with pytest.raises(ChecksumError, match="wrong.pth: sha256 .* is not sam-vit-b's"):
        import_weights(wrong, name="sam-vit-b")
    with pytest.raises(ChecksumError, match="matches no known checkpoint"):
        import_weights(wrong)
    with pytest.raises(CheckpointError, match="wrong.pth"):
        import_weights(wrong, name="rat-ct")  # RAT entry without sha256: must load
    assert not home.exists() or not any(home.iterdir())
    result = CliRunner().invoke(app, ["weights", "import", str(wrong), "--name", "sam-vit-b"])
    assert result.exit_code == 1
    assert "is not sam-vit-b's" in result.stderr and result.stderr.count("\n") == 1


def test_import_rat_checkpoint_checks_task(home, tmp_path):
    torch.manual_seed(0)
    cfg = RATConfig(width=8, num_heads=2, num_groups=1, layers_per_group=1)
    ckpt = tmp_path / "pet.pt"
    save_checkpoint(ckpt, build_rat(cfg), cfg, meta={"task": "pet"})
    with pytest.raises(CheckpointError, match="task 'pet', not 'ct'"):
        import_weights(ckpt, name="rat-ct")
    entry, dest = import_weights(ckpt, name="rat-pet")
    assert dest == home / "rat-pet.pt" and resolve_weights("rat-pet") == dest
    assert {s.name: s.status for s in verify_weights()}["rat-pet"] == "unverified"


def test_verify_flags_a_corrupted_file(home, tmp_path):
    import_weights(tmp_path / "tiny.bin")
    (home / "tiny.bin").write_bytes(b"bit rot")
    assert {s.name: s.status for s in verify_weights()}["tiny"] == "mismatch"
    result = CliRunner().invoke(app, ["weights", "verify"])
    assert result.exit_code == 1
    assert "tiny" in result.stdout and "mismatch" in result.stdout
    assert "checksum mismatch: tiny" in result.stderr


def test_list_json(home, tmp_path):
    import_weights(tmp_path / "tiny.bin")
    result = CliRunner().invoke(app, ["weights", "list", "--json"])
    assert result.exit_code == 0
    rows = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert rows["tiny"]["path"] == str(home / "tiny.bin")
    assert rows["sam-vit-h"]["path"] is None


def _set_sha(tmp_path, **digests: str) -> None:
    """Give manifest entries of the test manifest these sha256 values."""
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())
    for name, digest in digests.items():
        manifest["weights"][name.replace("_", "-")]["sha256"] = digest
    path.write_text(json.dumps(manifest))


def test_find_sam_checkpoint_order(home, tmp_path, monkeypatch):
    assert find_sam_checkpoint() is None
    home.mkdir()
    _set_sha(tmp_path, sam_vit_b=hashlib.sha256(b"b").hexdigest(),
             sam_vit_h=hashlib.sha256(b"h").hexdigest())
    (home / "sam_vit_b_01ec64.pth").write_bytes(b"b")
    assert find_sam_checkpoint() == home / "sam_vit_b_01ec64.pth"
    (home / "sam_vit_h_4b8939.pth").write_bytes(b"h")
    assert find_sam_checkpoint() == home / "sam_vit_h_4b8939.pth"
    monkeypatch.setenv("RAT_SAM_CHECKPOINT", str(home / "sam_vit_b_01ec64.pth"))
    assert find_sam_checkpoint() == home / "sam_vit_b_01ec64.pth"
    assert find_sam_checkpoint("sam-vit-h") == home / "sam_vit_h_4b8939.pth"
