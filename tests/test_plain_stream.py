"""Big plain images streamed like slides (issue 25 item 1): flat TIFFs of every layout are
read band by band, PNG/JPEG decoded once, and the streamed result equals the in-memory one."""

import numpy as np
import pytest
import tifffile
from helpers import LocalSR
from PIL import Image as PILImage

from ratcli.inference import Restorer
from ratcli.inference.slide import restore_stream
from ratcli.io import find_inputs, plain_stream, read, streams, write
from ratcli.io.plain_stream import TiffRegionReader
from ratcli.phantoms import he_tile
from ratcli.tasks import TASKS


def _picture(h: int, w: int) -> np.ndarray:
    """Glass with two patches of H&E-like tissue."""
    rgb = np.full((h, w, 3), 240, np.uint8)
    rgb[20:120, 30:150] = he_tile(size=120)[:100]
    rgb[h - 90 : h - 10, w - 100 : w - 20] = he_tile(size=80)
    return rgb


LAYOUTS = {
    "one raw strip": {},
    "deflate strips": {"rowsperstrip": 7, "compression": "zlib"},
    "jpeg tiles": {"tile": (64, 64), "compression": "jpeg"},
    "separate planes": {"planarconfig": "separate", "rowsperstrip": 16},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_tiff_region_reader_matches_the_whole_image(tmp_path, layout):
    rgb = _picture(150, 230)
    kw = dict(LAYOUTS[layout])
    data = np.moveaxis(rgb, -1, 0) if kw.get("planarconfig") == "separate" else rgb
    tifffile.imwrite(tmp_path / "a.tif", data, photometric="rgb",
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER", **kw)
    whole = tifffile.imread(tmp_path / "a.tif")
    whole = np.moveaxis(whole, 0, -1) if whole.shape[0] == 3 else whole
    with TiffRegionReader(tmp_path / "a.tif") as r:
        assert (r.width, r.height, r.channels) == (230, 150, 3)
        assert r.mpp == pytest.approx((0.5, 0.5))
        for x, y, w, h in [(0, 0, 230, 150), (17, 5, 40, 30), (200, 120, 30, 30),
                           (0, 60, 230, 1)]:
            np.testing.assert_array_equal(r.read(x, y, w, h), whole[y : y + h, x : x + w])
        thumb = r.thumbnail(max_edge=64)
        assert thumb.shape == (38, 58, 3)  # block means of 4 x 4


@pytest.mark.parametrize(("scale", "layout"), [(2, "deflate strips"), (4, "one raw strip"),
                                               (2, "jpeg tiles")])
def test_streamed_flat_tiff_equals_the_in_memory_result(tmp_path, scale, layout):
    rgb = _picture(130, 260)
    tifffile.imwrite(tmp_path / "in.tif", rgb, photometric="rgb", **LAYOUTS[layout])
    restorer = Restorer(LocalSR(scale), TASKS[f"sr-x{scale}"], tile=128, device="cpu",
                        guard=False)
    report = restore_stream(tmp_path / "in.tif", tmp_path / "out.tif", restorer,
                            skip_background=False)
    assert report.chunks_model > 1  # really cut into chunks
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.pages.first.is_tiled and tif.pages.first.compression == 8  # deflate
        assert len(tif.pages) == len(report.levels) >= 2  # a pyramid
        got = tif.pages.first.asarray()
    want = restorer.restore(read(tmp_path / "in.tif")).array[0]
    assert got.shape == want.shape == (130 * scale, 260 * scale, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # float sums of tiles


def test_streamed_rgba_png_keeps_alpha_and_equals_the_in_memory_result(tmp_path):
    rgb = _picture(140, 260)
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :40] = 0  # a transparent margin
    alpha[60:80] = 128
    PILImage.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "in.png")
    restorer = Restorer(LocalSR(), TASKS["sr-x2"], tile=128, device="cpu", guard=False)
    restore_stream(tmp_path / "in.png", tmp_path / "out.png", restorer)
    got = np.asarray(PILImage.open(tmp_path / "out.png"))
    image = read(tmp_path / "in.png")
    want = restorer.restore(image)
    assert got.shape == (280, 520, 4)
    write(want, tmp_path / "mem.png")
    mem = np.asarray(PILImage.open(tmp_path / "mem.png"))
    np.testing.assert_array_equal(got[..., 3], mem[..., 3])  # alpha: the same bicubic
    assert got[:110, :76, 3].max() == 0 and got[:, 90:, 3].min() >= 110  # clamped bicubic
    # the background (glass) took the bicubic path in the stream, the model in memory
    tissue = (slice(40, 240), slice(60, 300))
    assert np.abs(got[tissue][..., :3].astype(int) - mem[tissue][..., :3]).max() <= 1


def test_only_big_rgb_plain_images_stream(tmp_path, monkeypatch):
    tifffile.imwrite(tmp_path / "rgb.tif", _picture(130, 170), photometric="rgb")
    tifffile.imwrite(tmp_path / "grey.tif", np.zeros((130, 170), np.uint16))
    PILImage.fromarray(_picture(130, 170)).save(tmp_path / "rgb.jpg")
    sources = {s.path.name: s for s in find_inputs(tmp_path)}
    assert not any(streams(s) for s in sources.values())  # small: read whole
    monkeypatch.setattr(plain_stream, "STREAM_MIN_PIXELS", 1000)
    assert streams(sources["rgb.tif"]) and streams(sources["rgb.jpg"])
    assert not streams(sources["grey.tif"])
