"""ratcli.batch through restore_many / regions_many: folder semantics, DICOM files grouped
into one series, every output checked before any inference, temp files never inputs,
--task auto from the values, and the task output rule (PET never negative)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from helpers import SMALL, small_checkpoint

from ratcli.api import Session, restore, restore_many
from ratcli.errors import InputFormatError, OutputExistsError, UsageError
from ratcli.inference import Restorer
from ratcli.io import Domain, Image
from ratcli.models import RATConfig, build_rat
from ratcli.phantom_dicom import save_datasets, synthetic_series
from ratcli.phantoms import ct_phantom, pet_phantom
from ratcli.regions import NonePartitioner, make_partitioner
from ratcli.regions.run import regions_many
from ratcli.tasks import TASKS, NormParams


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("weights")
    # "any": weights that do not name their task
    return {name: small_checkpoint(folder / f"{name}.pt", None if name == "any" else name)
            for name in ("ct", "pet", "any")}


def _nifti(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.float32)), str(path))
    return path


def _series(folder: Path, *, n: int = 2, number: int = 1, seed: int = 1) -> list[Path]:
    vol = ct_phantom(size=16, slices=n, seed=seed)
    return save_datasets(synthetic_series(vol, series_number=number, seed=seed), folder)


def _run(inputs, out, **kw) -> dict[str, object]:
    kw = {"device": "cpu", "partitioner": "none", **kw}
    return {Path(r.input).name: r for r in restore_many(inputs, out, **kw)}


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# -- folder semantics: one file, one folder, several inputs, stdin-like lists ----------


def test_one_file_to_a_file_or_into_a_folder(tmp_path, ckpt):
    src = _nifti(tmp_path / "x.nii.gz", ct_phantom(size=16))
    _run([src], tmp_path / "y.nii.gz", weights=ckpt["ct"])
    _run([src], tmp_path / "out", weights=ckpt["ct"])
    assert (tmp_path / "y.nii.gz").is_file()
    assert _files(tmp_path / "out") == ["x.nii.gz"]


def test_one_series_folder_writes_its_files_straight_into_the_output(tmp_path, ckpt):
    _series(tmp_path / "ct_series", n=3)
    (tmp_path / "out").mkdir()  # an empty folder made beforehand is not "existing"
    (res,) = _run([tmp_path / "ct_series"], tmp_path / "out", weights=ckpt["ct"]).values()
    assert res.status == "ok" and res.output == str(tmp_path / "out")
    assert _files(tmp_path / "out") == ["IM0001.dcm", "IM0002.dcm", "IM0003.dcm"]


def test_several_inputs_and_trees_are_mirrored(tmp_path, ckpt):
    _series(tmp_path / "a_series", number=1, seed=1)
    _series(tmp_path / "b_series", number=2, seed=2)
    _run([tmp_path / "a_series", tmp_path / "b_series"], tmp_path / "out", weights=ckpt["ct"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_series", "b_series"]
    _series(tmp_path / "study" / "s1", number=1, seed=1)
    _nifti(tmp_path / "study" / "vols" / "v.nii.gz", ct_phantom(size=16))
    _run([tmp_path / "study"], tmp_path / "out2", weights=ckpt["ct"])
    assert _files(tmp_path / "out2") == ["s1/IM0001.dcm", "s1/IM0002.dcm", "vols/v.nii.gz"]


def test_listed_files_go_flat_and_name_clashes_fail_before_any_work(tmp_path, ckpt):
    a = _nifti(tmp_path / "p" / "scan.nii.gz", ct_phantom(size=16))
    b = _nifti(tmp_path / "q" / "scan.nii.gz", ct_phantom(size=16))
    c = _nifti(tmp_path / "q" / "other.nii.gz", ct_phantom(size=16))
    _run([a, c], tmp_path / "flat", weights=ckpt["ct"])
    assert _files(tmp_path / "flat") == ["other.nii.gz", "scan.nii.gz"]
    started = []
    with pytest.raises(UsageError, match="scan.nii.gz: output of both .*p/scan.nii.gz and "):
        restore_many([c, a, b], tmp_path / "out", weights=ckpt["ct"], device="cpu",
                     on_start=lambda *a: started.append(a)).__next__()
    assert started == [] and not (tmp_path / "out").exists()


def test_dicom_files_given_one_by_one_make_one_derived_series(tmp_path, ckpt):
    files = _series(tmp_path / "ct", n=3)
    results = _run(files, tmp_path / "out", weights=ckpt["ct"])
    assert [r.status for r in results.values()] == ["ok"]  # one record, not three
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == ["IM0001.dcm", "IM0002.dcm", "IM0003.dcm"]
    uids = {pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in written}
    assert len(uids) == 1


def test_dicom_files_listed_on_stdin_make_one_series_via_the_cli(tmp_path, ckpt):
    from typer.testing import CliRunner

    from ratcli.cli import app

    files = _series(tmp_path / "ct", n=2)
    listing = "".join(f"{f}\n" for f in files)
    r = CliRunner().invoke(app, ["denoise", "-", "-o", str(tmp_path / "out"), "--json",
                                 "--weights", ckpt["ct"], "--regions", "none"], input=listing)
    assert r.exit_code == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1
    assert _files(tmp_path / "out") == ["IM0001.dcm", "IM0002.dcm"]


# -- every input/output pair checked before the first model run -------------------------


@pytest.mark.parametrize("name", ["out.png", "out.dcm"])
def test_nifti_to_a_format_that_cannot_hold_it_is_a_usage_error(tmp_path, ckpt, name):
    src = _nifti(tmp_path / "x.nii.gz", ct_phantom(size=16))
    with pytest.raises(UsageError, match=f"{name}: a nifti input .* use .nii, .nii.gz"):
        list(restore_many([src], tmp_path / name, weights=ckpt["ct"], device="cpu"))
    assert not (tmp_path / name).exists()


def test_too_long_output_name_and_file_name_for_several_inputs(tmp_path, ckpt):
    long = _nifti(tmp_path / ("n" * 230 + ".nii.gz"), ct_phantom(size=16))
    with pytest.raises(UsageError, match="output name is too long"):
        list(restore_many([long], tmp_path / "out", weights=ckpt["ct"], device="cpu"))
    other = _nifti(tmp_path / "b.nii.gz", ct_phantom(size=16))
    with pytest.raises(UsageError, match="2 inputs need an output folder"):
        list(restore_many([long, other], tmp_path / "o.nii.gz", weights=ckpt["ct"]))


def test_existing_outputs_refuse_the_whole_run_before_any_work(tmp_path, ckpt):
    src = tmp_path / "in"
    _nifti(src / "a.nii.gz", ct_phantom(size=16))
    _run([src], tmp_path / "out", weights=ckpt["ct"])
    _nifti(src / "b.nii.gz", ct_phantom(size=16))
    with pytest.raises(OutputExistsError, match="a.nii.gz: output exists"):
        list(restore_many([src], tmp_path / "out", weights=ckpt["ct"], device="cpu"))
    assert _files(tmp_path / "out") == ["a.nii.gz"]  # b was not restored either
    results = _run([src], tmp_path / "out", weights=ckpt["ct"], overwrite=True)
    assert {r.status for r in results.values()} == {"ok"}


def test_output_inside_an_input_folder_is_refused_and_temp_files_are_never_inputs(
        tmp_path, ckpt):
    src = tmp_path / "dir"
    _nifti(src / "a.nii.gz", ct_phantom(size=16))
    with pytest.raises(UsageError, match="sit inside input"):
        list(restore_many([src], src / "out", weights=ckpt["ct"], device="cpu"))
    leftover = _nifti(src / ".rat-tmp-0a1b2c3d-a.nii.gz", ct_phantom(size=16))
    results = _run([src, leftover], tmp_path / "out", weights=ckpt["ct"])
    assert results["a.nii.gz"].status == "ok"
    skipped = results[leftover.name]
    assert skipped.status == "skipped" and "temp file" in skipped.note
    assert skipped.output is None and _files(tmp_path / "out") == ["a.nii.gz"]


def test_regions_uses_the_same_checks(tmp_path):
    a = _nifti(tmp_path / "p" / "v.nii.gz", ct_phantom(size=16))
    b = _nifti(tmp_path / "q" / "v.nii.gz", ct_phantom(size=16))
    part = make_partitioner("none")
    with pytest.raises(UsageError, match="output of both"):
        list(regions_many([a, b], tmp_path / "labels", partitioner=part))
    (res,) = regions_many([a], tmp_path / "labels", partitioner=part)
    assert res.status == "ok" and res.regions == (1, 1, 1)


def test_series_of_another_modality_is_skipped_not_failed(tmp_path, ckpt):
    _series(tmp_path / "study" / "ct", n=2)
    pet = synthetic_series(pet_phantom(size=16, slices=2), modality="PT", seed=5)
    save_datasets(pet, tmp_path / "study" / "pet")
    results = _run([tmp_path / "study"], tmp_path / "out", weights=ckpt["ct"])
    assert results["ct"].status == "ok"
    assert results["pet"].status == "skipped"
    assert results["pet"].note == "a PT image; task ct restores CT"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ct"]


# -- task choice and output rules --------------------------------------------------------


def test_task_auto_reads_the_values_of_nifti_and_says_so(tmp_path):
    s = Session(device="cpu")
    ct = Image(ct_phantom(size=16), modality="OT")
    pet = Image(pet_phantom(size=16), modality="OT")
    task, note = s.pick_task(ct, "ct.nii.gz")
    assert task.name == "ct" and "air near -1000" in note
    task, note = s.pick_task(pet, "pet.nii.gz")
    assert task.name == "pet" and "activity" in note
    counts = Image(np.arange(64, dtype=np.float32).reshape(1, 8, 8), modality="OT")
    with pytest.raises(InputFormatError, match="m.nii: cannot tell the task.*neither CT"):
        s.pick_task(counts, "m.nii")
    rgb = Image(np.zeros((1, 8, 8, 3), np.uint8), domain=Domain.RGB8, modality="OT")
    with pytest.raises(InputFormatError, match="super-resolved"):
        s.pick_task(rgb, "photo.png")


def test_task_auto_pick_reaches_the_record(tmp_path, ckpt):
    src = _nifti(tmp_path / "body.nii.gz", ct_phantom(size=16))
    (res,) = _run([src], tmp_path / "out", weights=ckpt["any"]).values()
    assert res.status == "ok" and res.task == "ct"
    assert res.note.startswith("--task auto picked ct: values look like CT")


def test_pet_output_never_negative(ckpt):
    p = NormParams(0.0, 10.0)
    assert TASKS["pet"].denormalize(np.array([-0.5, 0.0, 0.2]), p).tolist() == [0.0, 0.0, 2.0]
    assert TASKS["ct"].denormalize(np.array([-0.5]), NormParams(0.0, 10.0)).tolist() == [-5.0]
    torch.manual_seed(3)
    net = build_rat(RATConfig(in_channels=1, out_channels=1, **SMALL))
    with torch.no_grad():  # a correction that pushes every pixel far below zero
        net.head.bias.fill_(-5.0)
    image = Image(pet_phantom(size=32), domain=Domain.ACTIVITY, modality="PT")
    out = Restorer(net, TASKS["pet"], device="cpu").restore(image)
    assert out.array.min() >= 0.0


def test_none_partitioner_is_one_type_and_matches_no_regions(ckpt):
    part = make_partitioner("none")
    assert isinstance(part, NonePartitioner) and part.one_region
    assert isinstance(Session(device="cpu", partitioner="none").partitioner, NonePartitioner)
    image = Image(ct_phantom(size=32), domain=Domain.HU, modality="CT")
    with_none = restore(image, weights=ckpt["ct"], device="cpu", partitioner=part, tile=16)
    model = Session(device="cpu", weights=ckpt["ct"])._checkpoint(ckpt["ct"]).build("cpu")
    plain = Restorer(model, TASKS["ct"], tile=16, device="cpu").restore(image)
    np.testing.assert_allclose(with_none.array, plain.array, atol=1e-5)


def test_max_pixels_reaches_the_reader_and_regions(tmp_path, ckpt):
    src = _nifti(tmp_path / "in" / "a.nii.gz", np.zeros((2, 16, 16)))
    rec = _run([src], tmp_path / "out", weights=ckpt["ct"], task="ct", max_pixels=100)["a.nii.gz"]
    assert rec.status == "error" and "over the limit of 100" in rec.error
    assert not (tmp_path / "out").exists() or _files(tmp_path / "out") == []
    ok = _run([src], tmp_path / "out2", weights=ckpt["ct"], task="ct", max_pixels=512)
    assert ok["a.nii.gz"].status == "ok"
    labelled = list(regions_many([src], tmp_path / "lab", partitioner=make_partitioner("none"),
                                 max_pixels=100))
    assert labelled[0].status == "error" and "over the limit" in labelled[0].error
