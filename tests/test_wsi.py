"""Slides: pyramid writer read back by OpenSlide, reader, streaming restoration."""

import numpy as np
import openslide
import pytest
import torch
import torch.nn.functional as F
from helpers import LocalSR

from ratcli.errors import InputFormatError, OutputExistsError, UsageError
from ratcli.inference import Restorer
from ratcli.inference.slide import restore_slide, restore_stream
from ratcli.inference.tissue import TissueMap, tissue_mask
from ratcli.io import SLIDE_WRITER, find_inputs, read, write
from ratcli.io.wsi import (
    PyramidWriter,
    SlideReader,
    SlideWriterConfig,
    pyramid_shapes,
    slide_tiles,
)
from ratcli.models import RATConfig, build_rat
from ratcli.phantoms import he_tile
from ratcli.tasks import TASKS


def _gradient(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                     np.full_like(xx, 180)], -1).astype(np.uint8)


def _slide(path, h=300, w=420, *, tissue=(40, 60, 128), mpp=(0.5, 0.5)):
    """Glass (243) with one square of H&E-like tissue at (y, x) of edge `size`."""
    rgb = np.full((h, w, 3), 243, np.uint8)
    y, x, size = tissue
    rgb[y : y + size, x : x + size] = he_tile(size=size)
    PyramidWriter(path, width=w, height=h, mpp=mpp).write(slide_tiles(rgb, 256))
    return rgb


def test_pyramid_lossless_roundtrip_levels_and_mpp(tmp_path):
    rgb = _gradient(600, 777)
    path = tmp_path / "p.tif"
    shapes = PyramidWriter(path, width=777, height=600, mpp=(0.25, 0.3),
                           config=SlideWriterConfig(compression="lossless"),
                           description="rat test").write(
        slide_tiles(rgb, 256))
    assert shapes == [(600, 777), (300, 389), (150, 195)]
    s = openslide.OpenSlide(path)
    assert openslide.OpenSlide.detect_format(path) == "generic-tiff"
    assert s.level_count == 3 and s.dimensions == (777, 600)
    assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    assert float(s.properties["openslide.mpp-y"]) == pytest.approx(0.3)
    level0 = np.asarray(s.read_region((0, 0), 0, (777, 600)))[..., :3]
    np.testing.assert_array_equal(level0, rgb)
    level1 = np.asarray(s.read_region((0, 0), 1, (389, 300)))[..., :3].astype(int)
    padded = np.pad(rgb, ((0, 0), (0, 1), (0, 0)), mode="edge").astype(int)
    halved = (padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2]
              + padded[1::2, 1::2] + 2) // 4
    np.testing.assert_array_equal(level1, halved)


def test_pyramid_jpeg_is_close_and_small_images_still_get_two_levels(tmp_path):
    rgb = _gradient(100, 120)
    path = tmp_path / "j.tif"
    PyramidWriter(path, width=120, height=100).write(slide_tiles(rgb, 256))
    s = openslide.OpenSlide(path)
    assert s.level_count == 2  # OpenSlide needs >= 2 levels for a pyramid
    got = np.asarray(s.read_region((0, 0), 0, (120, 100)))[..., :3].astype(int)
    assert np.abs(got - rgb).mean() < 2.0
    assert "openslide.mpp-x" not in s.properties  # no MPP given, none invented


def test_pyramid_shapes_halve_until_one_tile():
    assert pyramid_shapes(4000, 3000, tile_px=512) == [(4000, 3000), (2000, 1500),
                                                       (1000, 750), (500, 375)]
    assert pyramid_shapes(10, 10, tile_px=256) == [(10, 10), (5, 5)]


def test_pyramid_writer_rejects_wrong_tiles(tmp_path):
    w = PyramidWriter(tmp_path / "bad.tif", width=300, height=100)
    with pytest.raises(ValueError, match="expected"):
        w.write(iter([np.zeros((100, 300, 3), np.uint8)]))
    with pytest.raises(ValueError, match="got 1 tiles"):
        PyramidWriter(tmp_path / "few.tif", width=300, height=100).write(
            iter([np.zeros((100, 256, 3), np.uint8)]))


@pytest.mark.parametrize(("option", "match"), [({"tile_px": 300}, "256 or 512"),
                                               ({"min_levels": 0}, "at least 1"),
                                               ({"quality": 0}, "between 1 and 100")])
def test_slide_writer_config_refuses_bad_values_with_usage_error(option, match):
    with pytest.raises(UsageError, match=match):
        SlideWriterConfig(**option)


def test_reader_region_thumbnail_and_bad_file(tmp_path):
    rgb = _slide(tmp_path / "s.tif")
    with SlideReader(tmp_path / "s.tif") as r:
        assert (r.width, r.height, r.mpp) == (420, 300, (0.5, 0.5))
        region = r.read(50, 30, 64, 48)
        assert region.shape == (48, 64, 3)
        assert np.abs(region.astype(int) - rgb[30:78, 50:114]).mean() < 4.0
        # Outside the slide OpenSlide returns transparent pixels: they become background.
        edge = r.read(400, 280, 40, 40)
        assert edge[25:, 25:].min() == 255
        assert max(r.thumbnail(64).shape[:2]) == 64
    (tmp_path / "fake.svs").write_bytes(b"not a slide at all")
    with pytest.raises(InputFormatError, match="fake.svs: not a readable whole-slide image"):
        SlideReader(tmp_path / "fake.svs")


def test_tissue_mask_finds_stained_square_not_glass():
    rgb = np.full((100, 100, 3), 243, np.uint8)
    rgb[20:50, 30:70] = he_tile(size=64)[:30, :40]
    mask = tissue_mask(rgb, grow=0)
    assert mask[25:45, 35:65].mean() > 0.7 and mask[60:, :].sum() == 0
    tm = TissueMap(mask, width=1000, height=1000)  # thumbnail at 1/10 scale
    assert tm.any(300, 200, 100, 100) and not tm.any(0, 700, 300, 300)


def _sr_restorer(scale: int = 2) -> Restorer:
    torch.manual_seed(0)
    cfg = RATConfig(in_channels=3, out_channels=3, width=8, num_groups=1, layers_per_group=1,
                    enc_blocks=1, dec_blocks=1, scale=scale)
    return Restorer(build_rat(cfg), TASKS[f"sr-x{scale}"], tile=64, device="cpu")


def test_restore_slide_streams_a_pyramid_with_scaled_size_and_mpp(tmp_path):
    rgb = _slide(tmp_path / "in.tif", h=300, w=420, tissue=(40, 60, 48))
    done = []
    report = restore_slide(tmp_path / "in.tif", tmp_path / "out.tif", _sr_restorer(2),
                           chunk_tiles=1, on_progress=lambda d, t: done.append(d))
    s = openslide.OpenSlide(tmp_path / "out.tif")
    assert s.level_count >= 2
    assert s.dimensions == (840, 600)
    assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    assert float(s.properties["openslide.mpp-y"]) == pytest.approx(0.25)
    assert report.levels[0] == (600, 840) and report.mpp == (0.25, 0.25)
    # 3 tile rows x 4 chunks of one tile; the tissue lies in the first chunk only.
    assert (report.chunks_model, report.chunks_background) == (1, 11)
    assert done == list(range(1, 13))
    out = np.asarray(s.read_region((0, 0), 0, (840, 600)))[..., :3].astype(int)
    # Glass far from the tissue went the bicubic way: still glass.
    assert np.abs(out[300:, 300:] - 243).max() <= 6  # JPEG in, JPEG out
    # Tissue went through the (random) model: not the bicubic image, but the right place.
    bic = F.interpolate(torch.from_numpy(rgb).permute(2, 0, 1)[None].float(), scale_factor=2,
                        mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()
    assert np.abs(out[80:176, 120:216] - bic[80:176, 120:216]).mean() > 1.0


def test_restore_slide_without_mpp_and_background_skip_off(tmp_path):
    _slide(tmp_path / "in.tif", h=70, w=60, tissue=(10, 10, 32), mpp=None)
    report = restore_slide(tmp_path / "in.tif", tmp_path / "out.tif", _sr_restorer(4),
                           skip_background=False,
                           slide_writer=SlideWriterConfig(compression="lossless"))
    s = openslide.OpenSlide(tmp_path / "out.tif")
    assert s.dimensions == (240, 280) and s.level_count >= 2
    assert "openslide.mpp-x" not in s.properties and report.mpp is None
    assert report.chunks_background == 0


def test_restore_slide_refuses_a_greyscale_task(tmp_path):
    _slide(tmp_path / "in.tif", h=64, w=64, tissue=(0, 0, 32))
    cfg = RATConfig(width=8, num_groups=1, layers_per_group=1)
    r = Restorer(build_rat(cfg), TASKS["ct"], device="cpu")
    with pytest.raises(InputFormatError, match="in.tif: slides are RGB"):
        restore_slide(tmp_path / "in.tif", tmp_path / "out.tif", r)


def test_io_read_and_write_dispatch_for_slides(tmp_path):
    rgb = _slide(tmp_path / "big.tif", h=300, w=420, tissue=(40, 60, 128))
    (src,) = find_inputs(tmp_path / "big.tif")
    assert src.kind == "slide"
    image = read(src)
    assert image.array.shape == (1, 300, 420, 3) and image.meta["format"] == "slide"
    assert image.spacing[:2] == pytest.approx((0.0005, 0.0005))  # mm
    assert np.abs(image.array[0].astype(int) - rgb).mean() < 3.0
    out = write(image.derived(image.array, scale=1), tmp_path / "copy.tif",
                provenance={"task": "sr-x2"})
    s = openslide.OpenSlide(out)
    assert s.level_count >= 2 and float(s.properties["openslide.mpp-x"]) == pytest.approx(0.5)
    assert "task=sr-x2" in s.properties["tiff.ImageDescription"]
    with pytest.raises(OutputExistsError):
        write(image, tmp_path / "copy.tif")


@pytest.mark.parametrize(("restorer_tile", "scale"), [(256, 2), (128, 4), (64, 2)])
def test_chunk_plan_keeps_recomputation_low(restorer_tile, scale):
    from ratcli.inference.slide import plan_chunks
    from ratcli.inference.tiling import TileGrid
    from ratcli.io import SLIDE_WRITER

    overlap, halo = restorer_tile // 4, max(16, restorer_tile // 8)
    k = plan_chunks(restorer_tile, overlap, scale=scale, halo_px=halo)
    assert 1 <= k <= 8
    band = SLIDE_WRITER.tile_px // scale
    grid = TileGrid.plan(band + 2 * halo, k * band + 2 * halo, tile=restorer_tile,
                         overlap=overlap)
    computed = len(grid) * grid.tile_h * grid.tile_w / (band * band * k)
    # 25 % overlap alone costs (4/3)^2 = 1.78x; the halo adds a little on top.
    assert computed <= 2.1


def test_chunk_plan_prefers_narrow_chunks_within_five_percent():
    # the x2 default (512-px tiles sharing 64 px, 32 px halo): 7 tiles per chunk compute
    # 1.71x what they keep, 3 tiles 1.75x; the narrower chunk skips background finer
    from ratcli.inference.slide import plan_chunks
    from ratcli.tasks import TASKS

    task = TASKS["sr-x2"]
    overlap = round(task.tile * task.overlap)
    assert plan_chunks(task.tile, overlap, scale=2, halo_px=32, tile_px=256) == 3
    assert plan_chunks(task.tile, overlap, scale=2, halo_px=32, tile_px=256,
                       max_chunk_tiles=2) == 2  # 1.88x beats 2.25x


def test_restore_stream_writes_atomically_returns_its_report_and_counts_chunks_once(tmp_path):
    _slide(tmp_path / "in.tif", h=300, w=420, tissue=(40, 60, 48))
    (src,) = find_inputs(tmp_path / "in.tif")
    calls = []
    restorer = _sr_restorer(2)
    restorer.on_progress = lambda done, total: calls.append((done, total))
    report = restore_stream(src, tmp_path / "out.tif", restorer, chunk_tiles=1,
                            provenance={"task": "sr-x2"})
    # 600 x 840 output in 256 px tiles: 3 rows x 4 chunks. One total for the whole slide,
    # counted by chunk; the Restorer's own per-chunk tile counts never reach the callback.
    assert calls == [(k, 12) for k in range(1, 13)]
    assert restorer.on_progress is not None  # handed back after the run
    assert report.levels == [(600, 840), (300, 420), (150, 210)] and report.tile_px == 256
    assert report.chunks_model + report.chunks_background == 12
    s = openslide.OpenSlide(tmp_path / "out.tif")
    assert s.dimensions == (840, 600) and "task=sr-x2" in s.properties["tiff.ImageDescription"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "out.tif"]  # no temp left
    with pytest.raises(OutputExistsError):
        restore_stream(src, tmp_path / "out.tif", restorer)
    with pytest.raises(UsageError, match="streamed output must be one of .tif, .tiff"):
        restore_stream(src, tmp_path / "out.png", restorer)


@pytest.mark.slow
def test_streamed_and_in_memory_slide_outputs_share_one_pyramid_layout(tmp_path):
    """`rat sr` streams a slide, the Python API restores it in memory and io.write()s it:
    both give the same tile edge and levels (issue: 256 px / 4 levels against 512 / 3)."""
    import tifffile

    _slide(tmp_path / "in.tif", h=300, w=420, tissue=(40, 60, 48))
    restorer = _sr_restorer(2)
    restore_slide(tmp_path / "in.tif", tmp_path / "cli.tif", restorer)  # api.py's call today
    restore_stream(tmp_path / "in.tif", tmp_path / "stream.tif", restorer)
    write(restorer.restore(read(tmp_path / "in.tif")), tmp_path / "api.tif")
    layouts = []
    for name in ("cli.tif", "stream.tif", "api.tif"):
        with tifffile.TiffFile(tmp_path / name) as tif:
            layouts.append([(p.shape[:2], p.tilewidth, p.tilelength) for p in tif.pages])
    assert layouts[0] == layouts[1] == layouts[2]
    assert [shape for shape, _, _ in layouts[0]] == [(600, 840), (300, 420), (150, 210)]
    assert {(tw, tl) for _, tw, tl in layouts[0]} == {(SLIDE_WRITER.tile_px,) * 2}


def test_bands_of_several_tile_rows_give_the_in_memory_result(tmp_path):
    from ratcli.inference.slide import band_rows

    _slide(tmp_path / "in.tif", h=300, w=700, tissue=(40, 60, 200))
    restorer = Restorer(LocalSR(), TASKS["sr-x2"], tile=512, device="cpu", guard=False)
    # 512-px tiles hold three 128-row bands with their 32-px halo
    assert band_rows(512, scale=2, halo_px=32, width_px=1400) == 3
    assert band_rows(512, scale=2, halo_px=32, width_px=10**6) == 1  # memory cap
    report = restore_slide(tmp_path / "in.tif", tmp_path / "out.tif", restorer,
                           skip_background=False,
                           slide_writer=SlideWriterConfig(compression="lossless"))
    # one band of 3 rows; 6 tile columns in chunks of 3 (the last 3 need 348 input px
    # with the halo but the two together 700 > 512, so they stay apart)
    assert report.chunks_model == 2
    got = np.asarray(openslide.OpenSlide(tmp_path / "out.tif").read_region(
        (0, 0), 0, (1400, 600)))[..., :3]
    image = read(tmp_path / "in.tif")
    want = restorer.restore(image).array[0]
    assert got.shape == want.shape == (600, 1400, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # float sums of tiles


def test_chunk_spans_join_a_thin_remainder_that_fits_one_restorer_tile():
    from ratcli.inference.slide import chunk_spans

    kw = {"band_px": 128, "halo_px": 32, "limit_px": 512}
    # 4 tiles (512 px), steps of 3: the last tile joins, no halo at either slide edge
    assert chunk_spans(4, 3, extent_px=512, **kw) == [(0, 4)]
    # 513 px no longer fits: the remainder stays a chunk of its own
    assert chunk_spans(5, 3, extent_px=513, **kw) == [(0, 3), (3, 5)]
    # only the last pair can join; its left side needs the halo: 800 - 384 + 32 <= 512
    assert chunk_spans(7, 3, extent_px=800, **kw) == [(0, 3), (3, 7)]
    assert chunk_spans(7, 3, extent_px=800, max_step=3, **kw) == [(0, 3), (3, 6), (6, 7)]
    assert chunk_spans(8, 3, extent_px=1000, **kw) == [(0, 3), (3, 6), (6, 8)]  # 648 px
    assert chunk_spans(3, 3, extent_px=300, **kw) == [(0, 3)]
    assert chunk_spans(2, 1, extent_px=1000, band_px=128, halo_px=32, limit_px=128) == [
        (0, 1), (1, 2)]


def test_a_slide_within_one_restorer_tile_is_one_chunk_as_in_memory(tmp_path):
    _slide(tmp_path / "in.tif", h=300, w=420, tissue=(40, 60, 200))
    restorer = Restorer(LocalSR(), TASKS["sr-x2"], tile=512, device="cpu", guard=False)
    report = restore_slide(tmp_path / "in.tif", tmp_path / "out.tif", restorer,
                           skip_background=False,
                           slide_writer=SlideWriterConfig(compression="lossless"))
    assert report.chunks_model == 1  # 3 x 4 output tiles, one model call
    got = np.asarray(openslide.OpenSlide(tmp_path / "out.tif").read_region(
        (0, 0), 0, (840, 600)))[..., :3]
    want = restorer.restore(read(tmp_path / "in.tif")).array[0]
    assert np.array_equal(got, want)


@pytest.mark.parametrize(("scale", "h", "w"), [(2, 130, 515), (2, 130, 800), (2, 513, 260),
                                               (4, 200, 257), (4, 70, 700)])
def test_streamed_slides_of_any_size_match_the_in_memory_result(tmp_path, scale, h, w):
    # just over a tile; a thin last column that joins its neighbour (130 x 800: 7 tile
    # columns, the last 4 in one chunk with a halo); a thin last band (200 x 257 at x4)
    rng = np.random.default_rng(h * w)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    PyramidWriter(tmp_path / "in.tif", width=w, height=h, mpp=(0.5, 0.5)).write(
        slide_tiles(rgb, 256))
    restorer = Restorer(LocalSR(scale), TASKS[f"sr-x{scale}"], device="cpu", guard=False)
    restore_slide(tmp_path / "in.tif", tmp_path / "out.tif", restorer, skip_background=False,
                  slide_writer=SlideWriterConfig(compression="lossless"))
    got = np.asarray(openslide.OpenSlide(tmp_path / "out.tif").read_region(
        (0, 0), 0, (w * scale, h * scale)))[..., :3]
    want = restorer.restore(read(tmp_path / "in.tif")).array[0]
    assert got.shape == want.shape == (h * scale, w * scale, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
