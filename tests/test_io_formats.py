"""The format table: a new format is one Format (plus one line in formats._MODULES for a
built-in one), and io.read / io.write / find_inputs / output names all follow the table."""

from pathlib import Path

import numpy as np
import pytest

from ratcli.errors import ImageTooLargeError, UsageError
from ratcli.io import (
    Domain,
    Format,
    Image,
    find_inputs,
    format_for,
    input_suffixes,
    output_path_for,
    output_suffixes,
    read,
    register,
    unregister,
    write,
)
from ratcli.io.atomic import atomic_output
from ratcli.io.checks import check_pixels
from ratcli.io.formats import writer_for
from ratcli.io.wsi import PyramidWriter, slide_tiles


def _read_toy(source, max_pixels: int | None = None) -> Image:
    with open(source.path, "rb") as fh:
        array = np.load(fh)
    check_pixels(source.path, array.shape, max_pixels)
    return Image(array, meta={"format": "toy"}, source=source.path)


def _write_toy(image: Image, path: Path, *, overwrite: bool = False,
               provenance: dict | None = None) -> Path:
    with atomic_output(path, overwrite=overwrite) as tmp, open(tmp, "wb") as fh:
        np.save(fh, image.array)
    return path


TOY = Format(name="toy", kind="toy", label="toy", suffixes=(".toy",), read=_read_toy,
             write=_write_toy, output_suffix=".toy", writes=(".toy",))


def test_a_registered_toy_format_round_trips_through_io_and_leaves_when_unregistered(tmp_path):
    image = Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), meta={"format": "toy"})
    with pytest.raises(UsageError, match="unknown output format"):
        write(image, tmp_path / "before.toy")
    register(TOY)
    try:
        out = write(image, tmp_path / "in" / "a.toy")
        assert format_for(out) is TOY
        assert ".toy" in input_suffixes() and ".toy" in output_suffixes()
        (src,) = find_inputs(tmp_path / "in")  # folder discovery knows the suffix
        assert src.kind == "toy"
        assert output_path_for(src, tmp_path / "out") == tmp_path / "out" / "a.toy"
        back = read(out)
        np.testing.assert_array_equal(back.array, image.array)
        with pytest.raises(ImageTooLargeError):  # io.read hands its pixel limit on
            read(out, max_pixels=image.array.size - 1)
        with pytest.raises(UsageError, match="already registered"):
            register(TOY)
    finally:
        unregister("toy")
    assert format_for(out) is None and ".toy" not in input_suffixes()
    with pytest.raises(UsageError, match="unknown output format"):
        write(image, tmp_path / "after.toy")
    with pytest.raises(UsageError, match="no format 'toy'"):
        unregister("toy")


def test_files_are_recognised_by_suffix_then_content_in_table_order(tmp_path):
    rgb = np.full((64, 64, 3), 200, np.uint8)
    PyramidWriter(tmp_path / "pyramid.tif", width=64, height=64).write(slide_tiles(rgb, 256))
    import tifffile

    tifffile.imwrite(tmp_path / "plain.tif", rgb)
    dicm = tmp_path / "IM0001"
    dicm.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    (tmp_path / "notes.txt").write_text("x")
    names = {p: getattr(format_for(tmp_path / p), "name", None)
             for p in ("pyramid.tif", "plain.tif", "IM0001", "notes.txt", "a.nii.gz")}
    assert names == {"pyramid.tif": "slide", "plain.tif": "plain", "IM0001": "dicom",
                     "notes.txt": None, "a.nii.gz": "nifti"}


@pytest.mark.parametrize(("read_as", "out", "writer"), [
    ("slide", "x.tif", "slide"),        # a slide stays a pyramid
    ("slide", "x.png", "plain"),        # ... but a PNG is a PNG
    ("plain", "x.tif", "plain"),        # a plain TIFF is not turned into a pyramid
    ("dicom", "x.dcm", "dicom"),
    ("dicom", "series", "dicom"),       # no suffix: a derived series folder
    ("dicom", "x.nii.gz", "nifti"),
    ("nifti", "x.dcm", "dicom"),        # the only .dcm writer: it explains what it needs
])
def test_writer_is_picked_by_suffix_then_by_the_format_that_read_the_image(read_as, out,
                                                                           writer):
    image = Image(np.zeros((1, 4, 4, 3), np.uint8), domain=Domain.RGB8,
                  meta={"format": read_as})
    assert writer_for(image, Path(out)).name == writer


def test_unknown_output_suffix_names_every_output_the_table_writes():
    image = Image(np.zeros((1, 4, 4), np.float32), meta={"format": "nifti"})
    with pytest.raises(UsageError) as err:
        writer_for(image, Path("x.xyz"))
    assert str(err.value) == ("x.xyz: unknown output format; use one of .nii, .nii.gz, .tif, "
                              ".tiff, .png, .dcm (a folder for a DICOM series)")
    assert set(output_suffixes(any_image=True)) == {".nii", ".nii.gz", ".png", ".tif", ".tiff"}


@pytest.mark.parametrize(("meta", "shape", "out", "match"), [
    ({"format": "plain", "plain_dtype": "uint8"}, (2, 4, 4), "x.png", "PNG holds one slice"),
    ({"format": "nifti"}, (1, 4, 4), "x.dcm", "DICOM output needs a DICOM input"),
    ({"format": "slide"}, (1, 4, 4), "x.tif", "slide output is RGB"),
    ({"format": "plain", "plain_dtype": "int16"}, (1, 4, 4), "x.png", "PNG holds 8/16-bit"),
])
def test_every_writer_refuses_an_image_its_format_cannot_hold_with_usage_error(
        tmp_path, meta, shape, out, match):
    image = Image(np.zeros(shape, np.float32), meta=meta)
    with pytest.raises(UsageError, match=match):
        write(image, tmp_path / out)
    assert not (tmp_path / out).exists()


def test_a_source_of_a_kind_no_format_reads_is_an_input_format_error_naming_it(tmp_path):
    from ratcli.errors import InputFormatError
    from ratcli.io import Source

    src = Source(tmp_path / "a.xyz", (tmp_path / "a.xyz",), "xyz", Path("a.xyz"))
    with pytest.raises(InputFormatError, match=r"a\.xyz: unknown input kind 'xyz'"):
        read(src)
