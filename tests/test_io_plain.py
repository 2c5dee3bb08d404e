"""PNG/TIFF/JPEG: dtype families kept, tiny images, corrupt files named."""

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from ratcli.errors import InputFormatError, UsageError
from ratcli.io import Domain, find_inputs, read, write
from ratcli.phantoms import he_tile


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_grey_roundtrip_in_same_dtype(tmp_path, dtype):
    hi = np.iinfo(dtype).max
    arr = np.linspace(0, hi, 35).astype(dtype).reshape(5, 7)
    PILImage.fromarray(arr).save(tmp_path / "g.png")
    img = read(tmp_path / "g.png")
    assert img.array.shape == (1, 5, 7) and img.array.dtype == np.float32
    assert img.domain is Domain.GREY
    np.testing.assert_array_equal(img.array[0], arr)
    # Restored values are rounded half-to-even and clipped to the dtype's range.
    changed = img.array + 0.4
    changed[0, 0, 0], changed[0, 0, 1], changed[0, 0, 2] = -50.0, hi + 50.0, 2.5
    out = write(img.derived(changed), tmp_path / "o.png", provenance={"task": "x"})
    back = np.asarray(PILImage.open(out))
    assert back.dtype == dtype
    assert back[0, 0] == 0 and back[0, 1] == hi and back[0, 2] == 2
    np.testing.assert_array_equal(back[1:], arr[1:])


def test_rgb_png_and_rgba(tmp_path):
    tile = he_tile(size=32)
    PILImage.fromarray(tile).save(tmp_path / "he.png")
    rgba = np.dstack([tile, np.full(tile.shape[:2], 128, np.uint8)])
    PILImage.fromarray(rgba).save(tmp_path / "he_alpha.png")
    img = read(tmp_path / "he.png")
    assert img.domain is Domain.RGB8 and img.array.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(img.array[0], tile)
    np.testing.assert_array_equal(read(tmp_path / "he_alpha.png").array[0], tile)
    out = write(img, tmp_path / "out" / "he.png")
    np.testing.assert_array_equal(np.asarray(PILImage.open(out)), tile)
    tif = write(img, tmp_path / "out" / "he.tif")
    np.testing.assert_array_equal(tifffile.imread(tif), tile)


def test_float_tiff_stays_float_and_keeps_resolution(tmp_path):
    arr = np.random.default_rng(0).normal(size=(2, 6, 9)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", arr, resolution=(4000.0, 2000.0),
                     resolutionunit="CENTIMETER")
    img = read(tmp_path / "f.tif")
    assert img.array.shape == (2, 6, 9)
    np.testing.assert_allclose(img.spacing[:2], (10 / 4000.0, 10 / 2000.0))
    np.testing.assert_array_equal(img.array, arr)
    out = write(img.derived(img.array * 2), tmp_path / "o.tif")
    with tifffile.TiffFile(out) as tf:
        back = tf.asarray()
        assert back.dtype == np.float32
        np.testing.assert_allclose(tf.pages.first.get_resolution("CENTIMETER"), (4000, 2000))
    np.testing.assert_array_equal(back, arr * 2)
    with pytest.raises(UsageError, match="PNG"):
        write(img, tmp_path / "o.png")


def test_int16_tiff(tmp_path):
    arr = np.array([[-1000, 0, 3000]], dtype=np.int16)
    tifffile.imwrite(tmp_path / "ct.tif", arr)
    img = read(tmp_path / "ct.tif")
    out = write(img.derived(img.array - 40000.0), tmp_path / "o.tif")
    back = tifffile.imread(out)
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back, [[-32768, -32768, -32768]])


@pytest.mark.parametrize("shape", [(1, 1), (3, 5)])
def test_tiny_images(tmp_path, shape):
    arr = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    PILImage.fromarray(arr).save(tmp_path / "t.png")
    tifffile.imwrite(tmp_path / "t.tif", arr)
    for name in ("t.png", "t.tif"):
        img = read(tmp_path / name)
        assert img.array.shape == (1, *shape)
        np.testing.assert_array_equal(img.array[0], arr)


def test_jpeg_reads_as_rgb(tmp_path):
    PILImage.fromarray(he_tile(size=16)).save(tmp_path / "p.jpg", quality=95)
    (src,) = find_inputs(tmp_path / "p.jpg")
    img = read(src)
    assert src.kind == "image" and img.domain is Domain.RGB8


def test_corrupt_files_named(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"II*\x00\x08\x00\x00\x00garbage-garbage")
    with pytest.raises(InputFormatError, match="bad.tif: corrupt or unreadable TIFF"):
        read(tmp_path / "bad.tif")
    good = tmp_path / "good.png"
    PILImage.fromarray(np.zeros((64, 64), np.uint8) + 7).save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:40])
    with pytest.raises(InputFormatError, match="cut.png"):
        read(tmp_path / "cut.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(InputFormatError, match="text.png"):
        read(tmp_path / "text.png")


def test_sixteen_bit_rgb_refused(tmp_path):
    tifffile.imwrite(tmp_path / "rgb16.tif", np.zeros((4, 4, 3), np.uint16), photometric="rgb")
    with pytest.raises(InputFormatError, match="rgb16.tif.*uint16 colour"):
        read(tmp_path / "rgb16.tif")
