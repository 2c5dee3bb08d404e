"""How inputs are taken (issue 25): files named one by one may write beside themselves,
symlinked subfolders are followed or named, junk does not move a series' output, stdin
comments, inputs given twice are restored once, and the output-file rules come from the
format table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import small_checkpoint
from typer.testing import CliRunner

from ratcli.api import restore_many
from ratcli.cli import app
from ratcli.errors import UsageError
from ratcli.io.formats import file_outputs
from ratcli.io.sources import Source, output_path_for, scan_inputs
from ratcli.phantom_dicom import save_datasets, synthetic_series
from ratcli.phantoms import ct_phantom
from ratcli.regions import make_partitioner
from ratcli.regions.run import regions_many


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    return small_checkpoint(tmp_path_factory.mktemp("weights") / "ct.pt", "ct")


def _series(folder: Path, n: int = 2) -> list[Path]:
    return save_datasets(synthetic_series(ct_phantom(size=16, slices=n), seed=1), folder)


def _nifti(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(ct_phantom(size=16).astype(np.float32)), str(path))
    return path


def _run(inputs, out, ckpt, **kw) -> list:
    return list(restore_many(inputs, out, weights=ckpt, device="cpu", partitioner="none", **kw))


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _rat(*args, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


# -- item 0: named files make only themselves off-limits --------------------------------


def test_files_named_one_by_one_write_beside_themselves(tmp_path, ckpt, monkeypatch):
    _series(tmp_path / "ct")
    monkeypatch.chdir(tmp_path / "ct")
    (res,) = _run(["IM0001.dcm", "IM0002.dcm"], "denoised", ckpt)
    assert res.status == "ok", res.error
    assert _files(tmp_path / "ct" / "denoised") == ["IM0001.dcm", "IM0002.dcm"]
    r = _rat("denoise", "-", "-o", "denoised2", "--weights", ckpt, "--regions", "none",
             "--json", input="IM0001.dcm\nIM0002.dcm\n")
    assert r.exit_code == 0, r.stderr
    assert _files(tmp_path / "ct" / "denoised2") == ["IM0001.dcm", "IM0002.dcm"]
    # rat regions too: the series' label map goes beside its files
    (res,) = regions_many(["IM0001.dcm", "IM0002.dcm"], "labels",
                          partitioner=make_partitioner("none"))
    assert res.status == "ok" and res.output == str(Path("labels") / "ct.nii.gz"), res.error
    # a folder given as input still makes its subtree off-limits
    with pytest.raises(UsageError, match="sit inside input"):
        _run(["."], "denoised3", ckpt)
    # and an output folder that holds a named input is refused
    with pytest.raises(UsageError, match="contains input"):
        _run(["IM0001.dcm", "IM0002.dcm"], ".", ckpt, overwrite=True)


# -- item 3: symlinked subfolders --------------------------------------------------------


def test_symlinked_subfolders_are_followed_and_loops_named(tmp_path):
    root = tmp_path / "study"
    _nifti(root / "own" / "a.nii.gz")
    _nifti(tmp_path / "elsewhere" / "b.nii.gz")
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "again").symlink_to(root / "own", target_is_directory=True)  # inside root
    (root / "own" / "loop").symlink_to(root, target_is_directory=True)  # a loop
    (root / "broken").symlink_to(tmp_path / "gone")
    found, skipped = scan_inputs(root)
    assert [str(s.rel) for s in found] == ["linked/b.nii.gz", "own/a.nii.gz"]
    why = {p.name: reason for p, reason in ((s.path, s.reason) for s in skipped)}
    assert set(why) == {"again", "loop", "broken"}
    assert "inside the input folder" in why["again"] and "inside" in why["loop"]
    assert why["broken"] == "a broken symbolic link"


def test_a_link_loop_outside_the_input_is_searched_once(tmp_path):
    _nifti(tmp_path / "outside" / "b.nii.gz")
    (tmp_path / "outside" / "back").symlink_to(tmp_path / "outside", target_is_directory=True)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    found, skipped = scan_inputs(tmp_path / "in")
    assert [str(s.rel) for s in found] == ["link/b.nii.gz"]
    assert [s.path.name for s in skipped] == ["back"]
    assert "link loop" in skipped[0].reason


# -- item 4: junk beside a series ------------------------------------------------------


def test_junk_in_a_series_folder_does_not_move_the_series_output(tmp_path, ckpt):
    _series(tmp_path / "ct")
    (tmp_path / "ct" / "notes.dcm").write_text("not a DICOM file\n")
    results = {Path(r.input).name: r for r in _run([tmp_path / "ct"], tmp_path / "out", ckpt)}
    assert results["ct"].status == "ok" and results["ct"].output == str(tmp_path / "out")
    assert results["notes.dcm"].status == "error"
    assert _files(tmp_path / "out") == ["IM0001.dcm", "IM0002.dcm"]


# -- item 5: stdin comments, inputs given twice -----------------------------------------


def test_stdin_comments_and_a_file_given_twice_in_any_spelling(tmp_path, ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = _series(tmp_path / "ct")
    (tmp_path / "alias.dcm").symlink_to(files[0])
    listing = "\n".join(["# slices of the chest series", "ct/IM0001.dcm", "  # indented too",
                         "ct/IM0002.dcm", str(files[0]), "./ct/IM0002.dcm", "alias.dcm", ""])
    r = _rat("denoise", "-", "-o", "out", "--weights", ckpt, "--regions", "none", "--json",
             input=listing)
    assert r.exit_code == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert sorted(rec["status"] for rec in records) == ["ok", "skipped", "skipped", "skipped"]
    assert all("restored once" in rec["note"] for rec in records if rec["status"] == "skipped")
    assert "several slices" not in r.stderr
    assert _files(tmp_path / "out") == ["IM0001.dcm", "IM0002.dcm"]


def test_a_file_named_and_inside_a_folder_given_is_restored_once(tmp_path, ckpt):
    a = _nifti(tmp_path / "in" / "a.nii.gz")
    results = _run([tmp_path / "in", a, tmp_path / "in" / ".." / "in"], tmp_path / "out", ckpt)
    assert sorted(r.status for r in results) == ["ok", "skipped", "skipped"]
    assert _files(tmp_path / "out") == ["a.nii.gz"]


# -- item 12: output forms from the format table ---------------------------------------


def test_output_file_forms_come_from_the_format_table():
    assert file_outputs("dicom") == (".dcm", ".nii", ".nii.gz")  # DICOM converts to NIfTI
    assert file_outputs("nifti") == (".nii", ".nii.gz")
    assert file_outputs("slide") == (".tif", ".tiff")
    assert file_outputs("dicom", any_image=True) == (".nii", ".nii.gz")  # label maps
    assert set(file_outputs("image")) == {".png", ".tif", ".tiff"}
    # output names strip the longest input suffix the table knows; series folders keep theirs
    nii = Path("a.b.nii.gz")
    assert output_path_for(Source(nii, (nii,), "nifti", nii), "out") == Path("out/a.b.nii.gz")
    files = (Path("ct.v2/1.dcm"), Path("ct.v2/2.dcm"))
    series = Source(Path("ct.v2"), files, "dicom", Path("ct.v2"))
    assert output_path_for(series, "out") == Path("out/ct.v2")


def test_unreadable_folders_are_named(tmp_path):
    _nifti(tmp_path / "in" / "a.nii.gz")
    locked = tmp_path / "in" / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: permissions are not enforced")
        found, skipped = scan_inputs(tmp_path / "in")
    finally:
        locked.chmod(0o755)
    assert [s.rel for s in found] == [Path("a.nii.gz")]
    assert [s.path.name for s in skipped] == ["locked"]
    assert "cannot be searched" in skipped[0].reason
