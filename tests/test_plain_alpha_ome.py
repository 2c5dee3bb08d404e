"""What `rat sr` keeps of a plain image besides its pixels (issue 25 items 8 and 9): alpha
(resized with the image, clamped) and the physical pixel size (OME-XML for an OME-TIFF,
TIFF resolution tags otherwise), scaled with the image, whole or streamed."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from helpers import SMALL
from PIL import Image as PILImage

from ratcli.api import restore_path
from ratcli.io import plain_stream
from ratcli.io.plain_meta import ome_spacing_mm
from ratcli.models import RATConfig, build_rat, save_checkpoint
from ratcli.phantoms import he_tile


@pytest.fixture(scope="module")
def sr_x2(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("w") / "sr2.pt"
    torch.manual_seed(0)
    cfg = RATConfig(in_channels=3, out_channels=3, scale=2, **SMALL)
    save_checkpoint(path, build_rat(cfg), cfg, meta={"task": "sr-x2"})
    return str(path)


@pytest.fixture(params=["whole", "streamed"])
def how(request, monkeypatch) -> str:
    """Both paths of `rat sr`: the image in memory, or streamed (any size streams)."""
    if request.param == "streamed":
        monkeypatch.setattr(plain_stream, "STREAM_MIN_PIXELS", 0)
    return request.param


def _sr(src: Path, out: Path, weights: str) -> Path:
    restore_path(src, out, mode="sr", scale=2, weights=weights, device="cpu", tile=32)
    return out


def test_rgba_png_keeps_its_alpha_resized(tmp_path, sr_x2, how):
    rgb = he_tile(size=48)
    alpha = np.full((48, 48), 255, np.uint8)
    alpha[:, :16] = 0  # transparent left third
    alpha[30:, 30:] = 100
    PILImage.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "in.png")
    out = _sr(tmp_path / "in.png", tmp_path / "out.png", sr_x2)
    with PILImage.open(out) as im:
        assert im.mode == "RGBA" and im.size == (96, 96)
        got = np.asarray(im)[..., 3]
    want = np.asarray(PILImage.fromarray(alpha).resize((96, 96), PILImage.Resampling.BICUBIC))
    np.testing.assert_array_equal(got, want)
    assert got[:, :30].max() == 0 and got[:56, 36:].min() == 255  # still see-through


def test_opaque_rgba_is_written_as_rgb(tmp_path, sr_x2):
    PILImage.fromarray(np.dstack([he_tile(size=32), np.full((32, 32), 255, np.uint8)])).save(
        tmp_path / "in.png")
    with PILImage.open(_sr(tmp_path / "in.png", tmp_path / "out.png", sr_x2)) as im:
        assert im.mode == "RGB"


def test_ome_tiff_physical_size_is_scaled_in_ome_xml(tmp_path, sr_x2, how):
    meta = {"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": 0.4, "PhysicalSizeYUnit": "µm"}
    tifffile.imwrite(tmp_path / "in.ome.tif", he_tile(size=40), photometric="rgb", ome=True,
                     metadata=meta)
    out = _sr(tmp_path / "in.ome.tif", tmp_path / "out.ome.tif", sr_x2)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome
        assert tif.series[0].shape == (80, 80, 3)
        y_mm, x_mm = ome_spacing_mm(tif.ome_metadata)
        # resolution tags say the same, for readers that ignore OME-XML
        rx, ry = tif.pages.first.get_resolution("MILLIMETER")
    assert (x_mm * 1000, y_mm * 1000) == pytest.approx((0.25, 0.2))
    assert (1 / rx, 1 / ry) == pytest.approx((x_mm, y_mm))


def test_tiff_resolution_tags_are_scaled(tmp_path, sr_x2, how):
    tifffile.imwrite(tmp_path / "in.tif", he_tile(size=40), photometric="rgb",
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")  # 0.5 µm
    out = _sr(tmp_path / "in.tif", tmp_path / "out.tif", sr_x2)
    with tifffile.TiffFile(out) as tif:
        assert not tif.is_ome
        assert tif.pages.first.get_resolution("CENTIMETER") == pytest.approx((4e4, 4e4))
        assert tif.pages.first.shape == (80, 80, 3)
