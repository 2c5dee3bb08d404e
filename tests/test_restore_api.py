"""ratcli.api: task choice, weights checks, one record per input, in-memory restore."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import SMALL

from ratcli.api import RestoreResult, Session, restore, restore_many, restore_path
from ratcli.errors import InputFormatError, OutputExistsError, TaskMismatchError, UsageError
from ratcli.io import Domain, Image, read
from ratcli.models import RATConfig, build_rat, save_checkpoint
from ratcli.phantoms import ct_phantom, pet_phantom


def _ckpt(path: Path, *, channels: int = 1, scale: int = 1, task: str | None = None) -> str:
    torch.manual_seed(0)
    cfg = RATConfig(in_channels=channels, out_channels=channels, scale=scale, **SMALL)
    save_checkpoint(path, build_rat(cfg), cfg, meta={"task": task} if task else {})
    return str(path)


def _nifti(path: Path, array: np.ndarray) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.float32)), str(path))
    return path


def test_task_from_option_weights_or_modality(tmp_path):
    ct = Image(ct_phantom(size=16), domain=Domain.HU, modality="CT")
    pt = Image(pet_phantom(size=16), domain=Domain.ACTIVITY, modality="PT")
    other = Image(np.zeros((1, 8, 8), np.float32), modality="OT")
    auto = Session(device="cpu")
    assert auto.task_for(ct, "a").name == "ct" and auto.task_for(pt, "b").name == "pet"
    with pytest.raises(InputFormatError, match="c: cannot tell the task from modality 'OT'"):
        auto.task_for(other, "c")
    with pytest.raises(InputFormatError, match="slide.svs: whole-slide images"):
        auto.task_for(None, "slide.svs")
    assert Session(task="pet", device="cpu").task_for(ct, "a").name == "pet"
    by_weights = Session(weights=_ckpt(tmp_path / "p.pt", task="pet"), device="cpu")
    assert by_weights.task_for(other, "c").name == "pet"  # the weights know their task
    assert Session(mode="sr", scale=4, device="cpu").task_for(None, "s").name == "sr-x4"


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"mode": "sr", "task": "ct"}, "--task ct cannot be used with `rat sr`"),
    ({"mode": "denoise", "task": "sr-x2"}, "--task sr-x2 cannot be used with `rat denoise`"),
    ({"mode": "sr", "task": "sr-x2", "scale": 4}, "upsamples x2, not x4"),
    ({"mode": "sr", "scale": 3}, "--scale 3"),
    ({"overlap": 0.6}, "--overlap"),
    ({"batch_size": 0}, "--batch-size"),
    ({"device": "tpu"}, "--device tpu"),
    ({"threads": 0}, "--threads 0"),
])
def test_bad_options_are_usage_errors(kwargs, needle):
    with pytest.raises(UsageError, match=needle):
        Session(**kwargs)


def test_checkpoint_that_cannot_do_the_task_is_refused(tmp_path):
    rgb = _ckpt(tmp_path / "rgb.pt", channels=3, scale=2)
    with pytest.raises(TaskMismatchError, match="rgb.pt: model has 3 input channels"):
        Session(task="ct", weights=rgb, device="cpu").restorer(Session(task="ct").fixed_task)
    wrong = _ckpt(tmp_path / "ct.pt", task="ct")
    s = Session(task="pet", weights=wrong, device="cpu")
    with pytest.raises(TaskMismatchError, match="ct.pt: weights were trained for task ct"):
        s.restorer(s.fixed_task)


def test_restore_many_yields_one_record_per_input_and_mirrors_the_tree(tmp_path):
    weights = _ckpt(tmp_path / "ct.pt", task="ct")
    src = tmp_path / "in"
    (src / "deep" / "er").mkdir(parents=True)
    _nifti(src / "deep" / "er" / "a.nii.gz", ct_phantom(size=16, slices=2))
    _nifti(src / "b.nii", ct_phantom(size=16))
    (src / "c.tif").write_bytes(b"II*\x00not a tiff")
    started = []
    results = list(restore_many([src, tmp_path / "nope"], tmp_path / "out", weights=weights,
                                device="cpu", on_start=lambda *a: started.append(a)))
    assert all(isinstance(r, RestoreResult) for r in results)
    by_name = {Path(r.input).name: r for r in results}
    assert [by_name[n].status for n in ("a.nii.gz", "b.nii", "c.tif", "nope")] == [
        "ok", "ok", "error", "error"]
    assert by_name["a.nii.gz"].output == str(tmp_path / "out" / "deep" / "er" / "a.nii.gz")
    assert by_name["b.nii"].output == str(tmp_path / "out" / "b.nii")
    assert by_name["nope"].output is None and "nope" in by_name["nope"].error
    # every found source, not the missing path, with "file N of M"
    assert [(i, n) for _, _, i, n in started] == [(1, 3), (2, 3), (3, 3)]
    assert read(tmp_path / "out" / "deep" / "er" / "a.nii.gz").num_slices == 2
    assert set(by_name["a.nii.gz"].to_dict()) == {"input", "output", "status", "seconds",
                                                  "task", "error", "note"}


def test_restore_path_raises_and_single_file_output(tmp_path):
    weights = _ckpt(tmp_path / "ct.pt", task="ct")
    _nifti(tmp_path / "x.nii.gz", ct_phantom(size=16))
    (res,) = restore_path(tmp_path / "x.nii.gz", tmp_path / "y.nii.gz", weights=weights,
                          device="cpu")
    assert res.status == "ok" and (tmp_path / "y.nii.gz").is_file()
    with pytest.raises(OutputExistsError, match="y.nii.gz: output exists"):
        restore_path(tmp_path / "x.nii.gz", tmp_path / "y.nii.gz", weights=weights, device="cpu")


def test_in_memory_restore_matches_the_restorer_contract(tmp_path):
    weights = _ckpt(tmp_path / "ct.pt", task="ct")
    image = Image(ct_phantom(size=24, slices=2), spacing=(0.8, 0.8, 2.0), domain=Domain.HU,
                  modality="CT")
    out = restore(image, weights=weights, device="cpu", tile=16)
    assert out.array.shape == image.array.shape and out.array.dtype == np.float32
    assert out.spacing == image.spacing and out.domain is Domain.HU
    # A random net with a global residual still follows its input (and is not it).
    assert np.corrcoef(out.array.ravel(), image.array.ravel())[0, 1] > 0.5
    assert not np.allclose(out.array, image.array)


def test_task_output_guard_is_on_by_default_and_raw_turns_it_off(tmp_path):
    from ratcli.inference.guards import activity_guard

    weights = _ckpt(tmp_path / "pet.pt", task="pet")
    image = Image(pet_phantom(size=32, slices=6, seed=3) * 5.0, spacing=(4.0, 4.0, 4.0),
                  domain=Domain.ACTIVITY, modality="PT")
    raw = restore(image, weights=weights, device="cpu", raw=True).array
    guarded = restore(image, weights=weights, device="cpu").array
    np.testing.assert_allclose(guarded, activity_guard(image.array, raw), atol=1e-5)
    assert not np.allclose(guarded, raw)
    session = Session(weights=weights, device="cpu", raw=True)
    assert session.restorer(session.task_for(image, "x"))[1]["guard"] == "none"
    assert Session(weights=weights, device="cpu").restorer(
        session.task_for(image, "x"))[1]["guard"] == "activity"
