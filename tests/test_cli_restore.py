"""`rat denoise` / `rat sr`: the bad-input corpus, exit codes, stdin, JSON, end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openslide
import pytest
import SimpleITK as sitk
import torch
from helpers import small_checkpoint
from PIL import Image as PILImage
from typer.testing import CliRunner

from ratcli.cli import app
from ratcli.io import find_inputs, read
from ratcli.phantom_dicom import save_datasets, synthetic_series
from ratcli.phantoms import ct_phantom

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> dict[str, str]:
    """Small random-init checkpoints, one per task, with meta {"task": ...}."""
    folder = tmp_path_factory.mktemp("weights")
    return {task: small_checkpoint(folder / f"{task}.pt", task)
            for task in ("ct", "pet", "sr-x2", "sr-x4")}


def rat(*args: str, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def assert_one_error(result, name: str, code: int = 1) -> None:
    """Exit `code`, exactly one stderr line, naming `name`, no traceback."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert name in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def assert_nothing_written(out: Path) -> None:
    """No output, and no temp file left behind, at or under `out`."""
    if out.is_dir():
        assert [p for p in out.rglob("*") if p.is_file()] == []
    else:
        assert not out.exists()
        if out.parent.is_dir():
            assert not [p for p in out.parent.iterdir() if p.name.startswith(".rat-tmp-")]


def _nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    img = sitk.GetImageFromArray(array.astype(np.float32))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return path


def _dicom(folder: Path, volume: np.ndarray, *, series: int = 1, names=None) -> list[Path]:
    ds = synthetic_series(volume, modality="CT", series_number=series, seed=series)
    return save_datasets(ds, folder, names=names)


# -- the bad-input corpus: one test per case ---------------------------------------------


def test_nonexistent_path(tmp_path, ckpt):
    r = rat("denoise", tmp_path / "missing.nii.gz", "-o", tmp_path / "out", "--weights", ckpt["ct"])
    assert_one_error(r, "missing.nii.gz")
    assert_nothing_written(tmp_path / "out")


def test_empty_folder(tmp_path, ckpt):
    (tmp_path / "empty").mkdir()
    r = rat("denoise", tmp_path / "empty", "-o", tmp_path / "out", "--weights", ckpt["ct"])
    assert_one_error(r, "empty")
    assert_nothing_written(tmp_path / "out")


def test_text_file_named_dcm(tmp_path, ckpt):
    (tmp_path / "notes.dcm").write_text("not a DICOM file\n")
    r = rat("denoise", tmp_path / "notes.dcm", "-o", tmp_path / "out", "--weights", ckpt["ct"])
    assert_one_error(r, "notes.dcm")
    assert_nothing_written(tmp_path / "out")


def test_truncated_dicom(tmp_path, ckpt):
    (good,) = _dicom(tmp_path / "src", np.zeros((1, 32, 32), np.float32), names=["a.dcm"])
    data = good.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 700])
    r = rat("denoise", tmp_path / "cut.dcm", "-o", tmp_path / "out", "--weights", ckpt["ct"])
    assert_one_error(r, "cut.dcm")
    assert_nothing_written(tmp_path / "out")


def test_dicom_without_pixel_data(tmp_path, ckpt):
    (ds,) = synthetic_series(np.zeros((1, 32, 32), np.float32), modality="CT")
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm", enforce_file_format=True)
    r = rat("denoise", tmp_path / "nopix.dcm", "-o", tmp_path / "out", "--weights", ckpt["ct"])
    assert_one_error(r, "nopix.dcm")
    assert_nothing_written(tmp_path / "out")


def test_two_series_in_one_folder_each_its_own_output(tmp_path, ckpt):
    folder = tmp_path / "mixed"
    _dicom(folder, ct_phantom(size=32, slices=3), series=1, names=["a1.dcm", "a2.dcm", "a3.dcm"])
    _dicom(folder, ct_phantom(size=32, slices=2, seed=4), series=2, names=["b1.dcm", "b2.dcm"])
    r = rat("denoise", folder, "-o", tmp_path / "out", "--weights", ckpt["ct"], "--json")
    assert r.exit_code == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [rec["status"] for rec in records] == ["ok", "ok"]
    outs = [read(find_inputs(rec["output"])[0]) for rec in records]
    assert sorted(o.num_slices for o in outs) == [2, 3]
    uids = {o.meta["dicom"].datasets[0].SeriesInstanceUID for o in outs}
    assert len(uids) == 2


def test_nan_and_inf_in_nifti(tmp_path, ckpt):
    a = np.zeros((4, 16, 16), np.float32)
    a[1, 2, 3], a[2, 3, 4] = np.nan, np.inf
    _nifti(tmp_path / "bad.nii.gz", a)
    out = tmp_path / "out.nii.gz"
    r = rat("denoise", tmp_path / "bad.nii.gz", "-o", out, "--weights", ckpt["ct"])
    assert_one_error(r, "bad.nii.gz")
    assert_nothing_written(out)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5)])
def test_tiny_images_are_restored_not_refused(tmp_path, ckpt, shape):
    """A 1x1 or 3x5 image is odd but valid: it is padded internally and comes back with
    its own size (exit 0), for greyscale denoising and RGB super-resolution."""
    grey = (np.arange(np.prod(shape)).reshape(shape) * 10 + 50).astype(np.uint8)
    PILImage.fromarray(grey).save(tmp_path / "g.png")
    r = rat("denoise", tmp_path / "g.png", "-o", tmp_path / "g_out.png", "--weights", ckpt["ct"])
    assert r.exit_code == 0, r.stderr
    assert np.asarray(PILImage.open(tmp_path / "g_out.png")).shape[:2] == shape
    PILImage.fromarray(np.dstack([grey] * 3)).save(tmp_path / "c.png")
    r = rat("sr", tmp_path / "c.png", "-o", tmp_path / "c_out.png", "--weights", ckpt["sr-x2"])
    assert r.exit_code == 0, r.stderr
    assert np.asarray(PILImage.open(tmp_path / "c_out.png")).shape == (2 * shape[0],
                                                                       2 * shape[1], 3)


def test_corrupt_tiff(tmp_path, ckpt):
    (tmp_path / "broken.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 2)
    out = tmp_path / "out.tif"
    r = rat("sr", tmp_path / "broken.tif", "-o", out, "--weights", ckpt["sr-x2"])
    assert_one_error(r, "broken.tif")
    assert_nothing_written(out)


def test_output_path_not_writable(tmp_path, ckpt):
    _nifti(tmp_path / "ok.nii.gz", ct_phantom(size=16))
    (tmp_path / "plainfile").write_text("a file, so nothing can be created below it")
    out = tmp_path / "plainfile" / "sub"
    r = rat("denoise", tmp_path / "ok.nii.gz", "-o", out, "--weights", ckpt["ct"])
    assert_one_error(r, "plainfile")
    assert (tmp_path / "plainfile").read_text().startswith("a file")


def test_existing_output_without_overwrite(tmp_path, ckpt):
    _nifti(tmp_path / "ct.nii.gz", ct_phantom(size=16))
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"precious")
    r = rat("denoise", tmp_path / "ct.nii.gz", "-o", out, "--weights", ckpt["ct"])
    assert_one_error(r, "out.nii.gz")
    assert out.read_bytes() == b"precious"
    r = rat("denoise", tmp_path / "ct.nii.gz", "-o", out, "--weights", ckpt["ct"], "--overwrite")
    assert r.exit_code == 0 and read(out).array.shape == (1, 16, 16)


# -- exit codes, stdin, JSON, folders -----------------------------------------------------


def test_some_fail_others_processed_exit_1_with_json_lines(tmp_path, ckpt):
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    _nifti(src / "a" / "one.nii.gz", ct_phantom(size=16, slices=2), spacing=(0.5, 0.6, 2.0))
    (src / "broken.tif").write_bytes(b"II*\x00garbage")
    r = rat("denoise", src, "-o", tmp_path / "out", "--weights", ckpt["ct"], "--json",
            "--regions", "classical")
    assert r.exit_code == 1
    records = {Path(rec["input"]).name: rec for rec in map(json.loads, r.stdout.splitlines())}
    assert set(records) == {"one.nii.gz", "broken.tif"}
    ok, bad = records["one.nii.gz"], records["broken.tif"]
    assert ok["status"] == "ok" and ok["error"] is None and ok["seconds"] >= 0
    assert Path(ok["output"]) == tmp_path / "out" / "a" / "one.nii.gz"  # tree mirrored
    assert bad["status"] == "error" and "broken.tif" in bad["error"]
    assert read(ok["output"]).spacing == pytest.approx((0.5, 0.6, 2.0))
    assert_one_error(r, "broken.tif")


def test_sam_fallback_warning_once_and_only_when_restoring(tmp_path, ckpt):
    for name in ("x.nii.gz", "y.nii.gz"):
        (tmp_path / "in").mkdir(exist_ok=True)
        _nifti(tmp_path / "in" / name, ct_phantom(size=16))
    r = rat("denoise", tmp_path / "in", "-o", tmp_path / "out", "--weights", ckpt["ct"])
    assert r.exit_code == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "classical" in warnings[0]
    # an explicit method, or no input to restore, prints no warning
    r = rat("denoise", tmp_path / "in", "-o", tmp_path / "out2", "--weights", ckpt["ct"],
            "--regions", "classical")
    assert r.exit_code == 0 and "warning" not in r.stderr


def test_paths_from_stdin(tmp_path, ckpt):
    for name in ("x.nii.gz", "y.nii.gz"):
        _nifti(tmp_path / name, ct_phantom(size=16))
    listing = f"{tmp_path / 'x.nii.gz'}\n\n{tmp_path / 'y.nii.gz'}\n"
    r = rat("denoise", "-", "-o", tmp_path / "out", "--weights", ckpt["ct"], "--json",
            input=listing)
    assert r.exit_code == 0, r.stderr
    assert [json.loads(ln)["status"] for ln in r.stdout.splitlines()] == ["ok", "ok"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.nii.gz", "y.nii.gz"]


def test_empty_stdin_is_a_usage_error(tmp_path, ckpt):
    r = rat("denoise", "-", "-o", tmp_path / "out", "--weights", ckpt["ct"], input="\n")
    assert_one_error(r, "stdin", code=2)


@pytest.mark.parametrize(("args", "needle"), [
    (["sr", "--task", "ct"], "--task ct"),
    (["sr", "--scale", "4"], "sr-x2"),  # the x2 weights cannot do x4
    (["denoise", "--overlap", "0.8"], "--overlap"),
    (["denoise", "--tile", "8"], "--tile"),
])
def test_usage_errors_exit_2(tmp_path, ckpt, args, needle):
    _nifti(tmp_path / "ct.nii.gz", ct_phantom(size=16))
    weights = ckpt["sr-x2"] if args[0] == "sr" else ckpt["ct"]
    r = rat(args[0], tmp_path / "ct.nii.gz", "-o", tmp_path / "out", "--weights", weights,
            *args[1:])
    assert_one_error(r, needle, code=2)
    assert_nothing_written(tmp_path / "out")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_unavailable_device_is_a_usage_error(tmp_path, ckpt):
    _nifti(tmp_path / "ct.nii.gz", ct_phantom(size=16))
    r = rat("denoise", tmp_path / "ct.nii.gz", "-o", tmp_path / "o", "--device", "cuda",
            "--weights", ckpt["ct"])
    assert_one_error(r, "--device cuda", code=2)


def test_missing_default_weights_say_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("RAT_HOME", str(tmp_path / "no-weights-here"))
    # hide the checkpoints shipped in the repository's weights/ too
    monkeypatch.setattr("ratcli.weights.weights_dirs", lambda: [tmp_path / "no-weights-here"])
    _dicom(tmp_path / "series", ct_phantom(size=16, slices=2))
    r = rat("denoise", tmp_path / "series", "-o", tmp_path / "out")
    assert_one_error(r, "rat-ct")
    assert_nothing_written(tmp_path / "out")


def test_weights_of_the_wrong_task_are_refused(tmp_path, ckpt):
    _nifti(tmp_path / "ct.nii.gz", ct_phantom(size=16))
    r = rat("denoise", tmp_path / "ct.nii.gz", "-o", tmp_path / "o", "--task", "pet",
            "--weights", ckpt["ct"])
    assert_one_error(r, "ct.pt", code=2)  # TaskMismatchError, as in rat evaluate


def test_slide_with_denoise_is_refused(tmp_path, ckpt):
    shutil.copy(EXAMPLES / "slide.tif", tmp_path / "slide.tif")
    r = rat("denoise", tmp_path / "slide.tif", "-o", tmp_path / "out", "--weights", ckpt["ct"])
    assert_one_error(r, "slide.tif")
    assert_nothing_written(tmp_path / "out")


def test_bad_regions_choice_is_a_usage_error(tmp_path, ckpt):
    _nifti(tmp_path / "ct.nii.gz", ct_phantom(size=16))
    r = rat("denoise", tmp_path / "ct.nii.gz", "-o", tmp_path / "o", "--weights", ckpt["ct"],
            "--regions", "bogus")
    assert_one_error(r, "--regions", code=2)


@pytest.mark.parametrize("name", ["ct.nii.gz", "slide.tif"])
def test_an_input_is_never_overwritten(tmp_path, ckpt, name):
    if name == "slide.tif":
        shutil.copy(EXAMPLES / "slide.tif", tmp_path / name)
        cmd, weights = "sr", ckpt["sr-x2"]
    else:
        _nifti(tmp_path / name, ct_phantom(size=16))
        cmd, weights = "denoise", ckpt["ct"]
    before = (tmp_path / name).read_bytes()
    r = rat(cmd, tmp_path / name, "-o", tmp_path / name, "--weights", weights, "--overwrite")
    assert_one_error(r, name, code=2)
    assert (tmp_path / name).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


# -- end to end on every example file ---------------------------------------------------


@pytest.mark.slow
def test_denoise_examples_end_to_end(tmp_path, ckpt):
    out = tmp_path / "out"
    r = rat("denoise", EXAMPLES / "ct_series", "-o", out, "--weights", ckpt["ct"], "--json")
    assert r.exit_code == 0, r.stderr
    (rec,) = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert rec["task"] == "ct"  # the weights' task; DICOM Modality CT agrees
    src, res = read(EXAMPLES / "ct_series"), read(find_inputs(rec["output"])[0])
    assert res.array.shape == src.array.shape and res.modality == "CT"
    assert res.spacing == pytest.approx(src.spacing) and res.origin == pytest.approx(src.origin)

    r = rat("denoise", EXAMPLES / "pet.nii.gz", "-o", out, "--weights", ckpt["pet"])
    assert r.exit_code == 0, r.stderr
    pet_in, pet_out = read(EXAMPLES / "pet.nii.gz"), read(out / "pet.nii.gz")
    assert pet_out.array.shape == pet_in.array.shape
    assert pet_out.spacing == pytest.approx(pet_in.spacing)
    assert np.isfinite(pet_out.array).all()


@pytest.mark.slow
def test_sr_example_slide_end_to_end(tmp_path, ckpt):
    """x2 on the example slide (x4 streaming is covered on a smaller slide in test_wsi)."""
    scale = 2
    out = tmp_path / "sr"
    r = rat("sr", EXAMPLES / "slide.tif", "-o", out, "--scale", scale, "--tile", 64,
            "--weights", ckpt[f"sr-x{scale}"], "--json")
    assert r.exit_code == 0, r.stderr
    (rec,) = [json.loads(ln) for ln in r.stdout.splitlines()]
    src = openslide.OpenSlide(EXAMPLES / "slide.tif")
    res = openslide.OpenSlide(rec["output"])
    assert res.level_count >= 2
    assert res.dimensions == (src.dimensions[0] * scale, src.dimensions[1] * scale)
    for axis in ("x", "y"):
        assert float(res.properties[f"openslide.mpp-{axis}"]) == pytest.approx(
            float(src.properties[f"openslide.mpp-{axis}"]) / scale)


@pytest.mark.slow
def test_batch_script_with_find_stdin_and_jq(tmp_path, ckpt):
    data = tmp_path / "data"
    shutil.copytree(EXAMPLES / "ct_series", data / "ct_series")
    (data / "more").mkdir()
    _nifti(data / "more" / "small.nii.gz", ct_phantom(size=32, slices=2))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    p = subprocess.run(["bash", str(EXAMPLES / "batch.sh"), ckpt["ct"], str(data),
                        str(tmp_path / "out")], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert "2 ok, 0 failed" in p.stdout
    assert (tmp_path / "out" / "ct_series").is_dir()
    assert (tmp_path / "out" / "small.nii.gz").is_file()


@pytest.mark.slow
def test_killed_while_writing_leaves_no_output(tmp_path, ckpt):
    """SIGKILL in the middle of writing a pyramid: nothing at the final path."""
    from ratcli.io.wsi import PyramidWriter, SlideWriterConfig, slide_tiles
    from ratcli.phantoms import he_tile

    rgb = np.full((2048, 2048, 3), 243, np.uint8)  # mostly glass: fast bicubic chunks
    rgb[-128:, -128:] = he_tile(size=128)  # in the last chunk: writing starts early
    PyramidWriter(tmp_path / "big.tif", width=2048, height=2048,
                  config=SlideWriterConfig(tile_px=512), mpp=(0.5, 0.5)
                  ).write(slide_tiles(rgb, 512))
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "ratcli", "sr", str(tmp_path / "big.tif"), "-o",
           str(out / "big.tif"), "--scale", "4", "--tile", "64", "--weights", ckpt["sr-x4"]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if sum(p.stat().st_size for p in out.iterdir()) > 200_000:
            break  # the pyramid is partly written: tiles are in the temp file
        time.sleep(0.02)
    assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "big.tif").exists()  # only a hidden temp file may remain
    left = list(out.iterdir())
    assert left and all(p.name.startswith(".rat-tmp-") for p in left)
