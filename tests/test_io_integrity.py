"""Reader integrity: data shorter than its header is refused, a pixel limit stops memory
bombs before decoding, and broken inputs fail with one line naming the file."""

from __future__ import annotations

import copy
import errno
import gzip
import json
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import tifffile

from ratcli.errors import ImageTooLargeError, InputFormatError, OutputNotWritableError, UsageError
from ratcli.io import read, write
from ratcli.io.checks import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, max_pixels_limit
from ratcli.io.dicom import read_dicom
from ratcli.io.nifti import read_nifti
from ratcli.io.plain import read_plain
from ratcli.phantom_dicom import save_datasets, synthetic_series
from ratcli.phantoms import ct_phantom

ROOT = Path(__file__).resolve().parents[1]


def _nii(path: Path, shape=(6, 64, 64), dtype=np.float32) -> Path:
    arr = np.random.default_rng(0).random(shape).astype(dtype) + 1
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    return path


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".rat-tmp-*")]


# --- NIfTI ---------------------------------------------------------------------------

def test_cut_short_nii_is_refused_not_zero_filled(tmp_path):
    data = _nii(tmp_path / "v.nii").read_bytes()
    assert len(data) == 352 + 64 * 64 * 6 * 4
    cut = tmp_path / "cut.nii"
    cut.write_bytes(data[:49_000])  # 49 KB of a 64x64x6 float32 volume
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(cut)))[-1].max() == 0  # ITK zero-fills
    with pytest.raises(InputFormatError, match=r"cut\.nii: truncated file.*48,648 bytes.*98,304"):
        read_nifti(cut)


@pytest.mark.parametrize("damage", ["cut", "garbled", "crc"])
def test_truncated_or_corrupt_nii_gz_is_one_clear_error(tmp_path, damage):
    data = bytearray(_nii(tmp_path / "v.nii.gz").read_bytes())
    if damage == "cut":
        data = data[: len(data) // 2]
    elif damage == "garbled":
        data[len(data) // 2: len(data) // 2 + 200] = bytes(200)
    else:
        data[-8] ^= 0xFF  # CRC32 of the gzip trailer
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputFormatError, match=r"bad\.nii\.gz: truncated") as info:
        read_nifti(bad)
    assert "\n" not in str(info.value)


def test_complete_nii_gz_with_integer_voxels_reads(tmp_path):
    img = read_nifti(_nii(tmp_path / "i.nii.gz", dtype=np.int16))
    assert img.array.shape == (6, 64, 64)


def test_complex_nifti_is_refused_without_numpy_warning(tmp_path):
    c = (np.ones((2, 8, 8)) + 1j).astype(np.complex64)
    sitk.WriteImage(sitk.GetImageFromArray(c), str(tmp_path / "c.nii"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputFormatError, match=r"c\.nii: complex-valued NIfTI \(complex64\)"):
            read_nifti(tmp_path / "c.nii")


# --- pixel limit ---------------------------------------------------------------------

def test_limit_from_keyword_environment_and_default(tmp_path, monkeypatch):
    path = _nii(tmp_path / "v.nii.gz")  # 6 x 64 x 64 = 24,576 voxels
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    assert max_pixels_limit() == DEFAULT_MAX_PIXELS >= 1000 * 512 * 512
    with pytest.raises(ImageTooLargeError, match=r"6 x 64 x 64 = 24,576 pixels .* 24,575"):
        read_nifti(path, max_pixels=24_575)
    assert read_nifti(path, max_pixels=24_576).array.shape == (6, 64, 64)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(ImageTooLargeError, match="--max-pixels"):
        read_nifti(path)
    assert read_nifti(path, max_pixels=0).num_slices == 6  # 0: no limit
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(UsageError, match=MAX_PIXELS_ENV):
        read_nifti(path)


def _bomb_tiff(path: Path, side: int = 30000) -> Path:
    """A one-strip deflate TIFF of side^2 uint8 zeros: under 1 MB on disk."""
    comp = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    parts = [comp.compress(chunk) for _ in range(side * side // len(chunk))]
    parts += [comp.compress(bytes(side * side % len(chunk))), comp.flush()]
    data = b"".join(parts)
    tags = [(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 8), (262, 3, 1),
            (273, 4, 8 + 2 + 12 * 9 + 4), (277, 3, 1), (278, 4, side), (279, 4, len(data))]
    ifd = struct.pack("<H", len(tags))
    ifd += b"".join(struct.pack("<HHII", tag, typ, 1, value) for tag, typ, value in tags)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + data)
    return path


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS read from /proc")
def test_tiff_bomb_refused_from_header_with_low_peak_memory(tmp_path):
    bomb = _bomb_tiff(tmp_path / "bomb.tif")
    assert bomb.stat().st_size < 1_000_000
    with tifffile.TiffFile(bomb) as tif:  # a valid file: tifffile would decode all of it
        assert tif.series[0].shape == (30000, 30000)
    script = textwrap.dedent(f"""
        import json
        from ratcli.io.plain import read_plain
        try:
            read_plain({str(bomb)!r})
            msg = "read"
        except Exception as exc:
            msg = type(exc).__name__ + ": " + str(exc)
        # peak RSS of this process image (getrusage's ru_maxrss would include the
        # forked pytest process's pages from before exec)
        status = open("/proc/self/status").read()
        hwm = next(ln for ln in status.splitlines() if ln.startswith("VmHWM:"))
        print(json.dumps({{"msg": msg, "rss": int(hwm.split()[1]) * 1024}}))
    """)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=120, check=True)
    result = json.loads(out.stdout)
    assert result["msg"].startswith("ImageTooLargeError: ")
    assert "bomb.tif: image of 30000 x 30000 = 900,000,000 pixels is over the limit" in (
        result["msg"])
    assert result["rss"] < 1 << 30


def test_png_limit_replaces_pillows_guard_with_one_message(tmp_path):
    """A PNG header claiming 30000^2 (Pillow's own guard would raise its
    DecompressionBombError) gets rat's message; a small PNG over a low limit too."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 9)) \
        + chunk(b"IEND", b"")
    (tmp_path / "big.png").write_bytes(png)
    with pytest.raises(ImageTooLargeError, match=r"big\.png: image of 30000 x 30000 = 900,000,000"):
        read_plain(tmp_path / "big.png")
    small = np.zeros((40, 50), np.uint8)
    from PIL import Image as PILImage
    PILImage.fromarray(small).save(tmp_path / "small.png")
    with pytest.raises(ImageTooLargeError, match=r"small\.png: image of 40 x 50 = 2,000 pixels"):
        read_plain(tmp_path / "small.png", max_pixels=1999)
    assert read_plain(tmp_path / "small.png").array.shape == (1, 40, 50)


def test_truncated_tiff_and_png_are_refused(tmp_path):
    arr = (np.random.default_rng(1).random((3, 128, 128)) * 60000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", arr, photometric="minisblack")
    data = (tmp_path / "a.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputFormatError, match=r"cut\.tif: truncated file"):
        read_plain(tmp_path / "cut.tif")
    from PIL import Image as PILImage
    PILImage.fromarray(arr[0]).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFormatError, match=r"cut\.png: truncated image"):
        read_plain(tmp_path / "cut.png")


# --- DICOM ---------------------------------------------------------------------------

@pytest.fixture
def ct_slice():
    return synthetic_series(ct_phantom(size=32, slices=2, seed=3), spacing=(1, 1, 2),
                            origin=(0, 0, 0))


def test_dicom_pixel_data_shorter_than_header(tmp_path, ct_slice):
    ds = copy.deepcopy(ct_slice[0])
    ds.PixelData = ds.PixelData[:1000]
    (path,) = save_datasets([ds], tmp_path / "s", names=["short.dcm"])
    with pytest.raises(InputFormatError,
                       match=r"short\.dcm: truncated file: PixelData holds 1,000 bytes.*2,048"):
        read_dicom([path])


def test_one_bit_dicom_refused_clearly(tmp_path, ct_slice):
    ds = copy.deepcopy(ct_slice[0])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.PixelData = np.packbits(np.ones(32 * 32, np.uint8)).tobytes()
    (path,) = save_datasets([ds], tmp_path / "s", names=["mask.dcm"])
    with pytest.raises(InputFormatError, match=r"mask\.dcm: 1-bit .* not a restorable image"):
        read(path)


def test_dicom_series_over_the_limit(tmp_path, ct_slice):
    paths = save_datasets(ct_slice, tmp_path / "s", names=["a.dcm", "b.dcm"])
    with pytest.raises(ImageTooLargeError, match=r"2 x 32 x 32 = 2,048 pixels"):
        read_dicom(paths, name=tmp_path / "s", max_pixels=2047)
    assert read_dicom(paths, max_pixels=2048).array.shape == (2, 32, 32)


# --- writing: disk full --------------------------------------------------------------

def test_disk_full_while_writing_dicom_series(tmp_path, ct_slice, monkeypatch):
    paths = save_datasets(ct_slice, tmp_path / "in", names=["a.dcm", "b.dcm"])
    img = read_dicom(paths)
    written = []
    real = pydicom.dcmwrite

    def fill_disk(filename, *args, **kwargs):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(filename)
        return real(filename, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmwrite", fill_disk)
    out = tmp_path / "new" / "deeper" / "series"
    with pytest.raises(OutputNotWritableError,
                       match=r"series: cannot write: No space left on device$"):
        write(img, out)
    assert written  # the first file was written, then the disk was full
    assert not (tmp_path / "new").exists()  # folders this write created are gone too
    assert _temps(tmp_path) == []


@pytest.mark.parametrize("layer", ["itk-short-write", "itk-error", "python", "free-space"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_disk_full_while_writing_nifti(tmp_path, monkeypatch, layer, suffix):
    img = read_nifti(_nii(tmp_path / "v.nii.gz"))
    if layer.startswith("itk"):
        img.meta["nifti_header"] = None  # no source header to copy: ITK writes the output
    real = sitk.WriteImage

    def short_write(image, name, *args, **kwargs):
        # What ITK's NIfTI writer does on a full disk: prints "** ERROR: NWAD: wrote only
        # 4096 of 98304 bytes" to stderr and returns normally, leaving a cut-short file.
        real(image, name, *args, **kwargs)
        with open(name, "r+b") as fh:
            fh.truncate(4096)

    def itk_error(*args, **kwargs):
        raise RuntimeError("ITK ERROR: ImageFileWriter: Could not write file\nNo space left")

    def python_full(*args, **kwargs):  # the header-copy step is plain Python file writing
        raise OSError(errno.ENOSPC, "No space left on device")

    if layer == "itk-short-write":
        monkeypatch.setattr(sitk, "WriteImage", short_write)
    elif layer == "itk-error":
        monkeypatch.setattr(sitk, "WriteImage", itk_error)
    elif layer == "python":
        monkeypatch.setattr("ratcli.io.nifti.copy_geometry", python_full)
    else:
        import shutil
        monkeypatch.setattr(shutil, "disk_usage",
                            lambda p: shutil._ntuple_diskusage(10**9, 10**9, 50_000))
    out = tmp_path / "out" / f"r{suffix}"
    with pytest.raises(OutputNotWritableError, match=rf"r{suffix}: cannot write") as info:
        write(img, out)
    if layer == "free-space" and suffix == ".nii":
        assert str(info.value).endswith("(0.1 MB needed, 0.1 MB free)")  # 98,656 vs 50,000
    assert not (tmp_path / "out").exists()
    assert _temps(tmp_path) == []


# --- slides --------------------------------------------------------------------------

def test_slide_with_corrupt_jpeg_tiles(tmp_path):
    from ratcli.io.wsi import PyramidWriter, SlideReader, read_slide, slide_tiles

    rgb = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    PyramidWriter(tmp_path / "s.tif", width=1024, height=1024,
                  mpp=(0.5, 0.5)).write(slide_tiles(rgb, 256))
    data = bytearray((tmp_path / "s.tif").read_bytes())
    with tifffile.TiffFile(tmp_path / "s.tif") as tif:
        for page in tif.pages:
            for off, count in zip(page.dataoffsets, page.databytecounts, strict=True):
                data[off: off + count] = bytes(count)  # no JPEG markers left
    bad = tmp_path / "bad.tif"
    bad.write_bytes(bytes(data))
    with SlideReader(bad) as reader:
        with pytest.raises(InputFormatError, match=r"bad\.tif: corrupt slide data"):
            reader.thumbnail()
        with pytest.raises(InputFormatError, match=r"bad\.tif: corrupt slide data .*\(0, 0\)"):
            reader.read(0, 0, 256, 256)
    with pytest.raises(InputFormatError, match=r"bad\.tif: corrupt slide data"):
        read_slide(bad)


# --- through the CLI -----------------------------------------------------------------

def test_cli_truncated_nii_exit_1_one_line_nothing_written(tmp_path):
    import torch
    from typer.testing import CliRunner

    from ratcli.cli import app
    from ratcli.models import RATConfig, build_rat, save_checkpoint

    cfg = RATConfig(width=8, num_groups=1, layers_per_group=1, enc_blocks=1, dec_blocks=1)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ct.pt", build_rat(cfg), cfg, meta={"task": "ct"})
    data = _nii(tmp_path / "v.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[:49_000])
    with gzip.open(tmp_path / "cut.nii.gz", "wb") as fh:
        fh.write(data)
    damaged = (tmp_path / "cut.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(damaged[: len(damaged) // 2])
    for name in ("cut.nii", "cut.nii.gz"):
        out = tmp_path / "out" / f"r-{name}"
        result = CliRunner().invoke(app, ["denoise", str(tmp_path / name), "-o", str(out),
                                          "--task", "ct", "--weights", str(tmp_path / "ct.pt"),
                                          "--device", "cpu"])
        assert result.exit_code == 1, result.stderr
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and name in lines[0] and "truncated" in lines[0], lines
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr
        assert not out.exists()


@pytest.mark.slow
def test_cli_corpus_each_one_line_exit_1_no_internal_error(tmp_path, ct_slice):
    """The broken-input corpus of issue 14 through `rat`: one line naming the file, exit 1."""
    from typer.testing import CliRunner

    from ratcli.cli import app

    cases: dict[str, list[str]] = {}
    full = _nii(tmp_path / "v.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(full[: 49 * 1024])
    cases["cut.nii"] = ["denoise", "--task", "pet"]
    gz = bytearray(_nii(tmp_path / "v.nii.gz").read_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(bytes(gz[: len(gz) // 2]))
    cases["cut.nii.gz"] = ["denoise", "--task", "pet"]
    c = (np.ones((2, 8, 8)) + 1j).astype(np.complex64)
    sitk.WriteImage(sitk.GetImageFromArray(c), str(tmp_path / "complex.nii"))
    cases["complex.nii"] = ["denoise", "--task", "pet"]
    _bomb_tiff(tmp_path / "bomb.tif")
    cases["bomb.tif"] = ["denoise", "--task", "ct"]
    one_bit = copy.deepcopy(ct_slice[0])
    one_bit.BitsAllocated, one_bit.BitsStored, one_bit.HighBit = 1, 1, 0
    one_bit.PixelRepresentation = 0
    one_bit.PixelData = np.packbits(np.ones(32 * 32, np.uint8)).tobytes()
    short = copy.deepcopy(ct_slice[0])
    short.PixelData = short.PixelData[:1000]
    save_datasets([one_bit], tmp_path, names=["mask.dcm"])
    save_datasets([short], tmp_path, names=["short.dcm"])
    cases["mask.dcm"] = cases["short.dcm"] = ["denoise"]
    for name, command in cases.items():
        out = tmp_path / "out" / name
        result = CliRunner().invoke(app, [*command, str(tmp_path / name), "-o", str(out)])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 1, (name, result.stderr)
        assert len(lines) == 1 and name in lines[0], (name, lines)
        assert "internal error" not in lines[0] and "Traceback" not in result.stderr
        assert not out.exists()
