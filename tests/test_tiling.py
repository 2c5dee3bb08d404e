"""Tiling covers every pixel, blends to a partition of unity, and is exact for local models."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ratcli.errors import DeviceError, GeometryMismatchError, InputFormatError
from ratcli.inference import Restorer, TileGrid
from ratcli.inference.tiling import tile_starts
from ratcli.io.image import Domain, Image
from ratcli.models import RATConfig, build_rat
from ratcli.models.rat import pad_to_multiple
from ratcli.tasks import TASKS, TaskSpec

# Identity normalisation, so differences are measured in the model's own units.
UNIT = TaskSpec("unit", "denoise", 1, 1, "", "hu", "OT", window=(0.0, 1.0))
UNIT_SR = TaskSpec("unit-sr", "sr", 1, 2, "", "hu", "OT", window=(0.0, 1.0))


class LocalNet(nn.Module):
    """RAT's interface (reflect-pad to 16, optional bilinear SR, global residual) with
    `depth` 3x3 convs: receptive-field radius = depth pixels (at output resolution)."""

    multiple = 16

    def __init__(self, channels: int = 1, scale: int = 1, depth: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.scale, self.in_channels, self.out_channels = scale, channels, channels
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Conv2d(channels if i == 0 else 8,
                                    channels if i == depth - 1 else 8, 3, padding=1))
            if i < depth - 1:
                layers.append(nn.Tanh())
        self.body = nn.Sequential(*layers)
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor, regions: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        if self.scale > 1:
            x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        H, W = x.shape[-2:]
        xp = pad_to_multiple(x, self.multiple)
        return (xp + self.body(xp))[..., :H, :W]


def _image(h: int, w: int, seed: int = 0) -> Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    a = 0.5 + 0.3 * np.sin(yy / 7.0) * np.cos(xx / 11.0) + 0.1 * rng.standard_normal((h, w))
    return Image(a[None].astype(np.float32), source="phantom")


def _whole(model: nn.Module, image: Image) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(image.array)[None])[0].numpy()  # (1, H*s, W*s)


@pytest.mark.parametrize(("length", "tile", "overlap"),
                         [(513, 96, 24), (257, 128, 32), (100, 64, 32), (64, 64, 16), (7, 16, 4),
                          (1000, 208, 52), (17, 16, 8)])
def test_tiles_cover_every_pixel_and_overlap_enough(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, dtype=int)
    for s in starts:
        covered[s : s + tile] += 1
    assert covered.min() >= 1
    assert starts[0] == 0 and min(starts[-1] + tile, length) == length
    for a, b in zip(starts, starts[1:], strict=False):
        assert a + tile - b >= overlap  # neighbours share at least `overlap` pixels


@pytest.mark.parametrize(("h", "w", "tile", "overlap", "scale"),
                         [(513, 257, 96, 24, 1), (96, 80, 48, 12, 2), (40, 30, 64, 16, 4)])
def test_weights_partition_of_unity_with_zero_inner_margin(h, w, tile, overlap, scale):
    grid = TileGrid.plan(h, w, tile=tile, overlap=overlap, scale=scale)
    wy, wx = grid.weights()
    total = np.zeros((h * scale, w * scale))
    for i, y in enumerate(grid.ys):
        for j, x in enumerate(grid.xs):
            wt = np.outer(wy[i], wx[j])
            ty, tx = y * scale, x * scale
            total[ty : ty + wt.shape[0], tx : tx + wt.shape[1]] += wt
            margin = grid.overlap * scale // 4
            if margin and y > 0:  # an inner top edge: its first `margin` rows never count
                assert np.all(wt[:margin] == 0)
            if margin and x + grid.tile_w < w:
                assert np.all(wt[:, -margin:] == 0)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


@pytest.mark.parametrize("tile", [96, 128, 200])
def test_tiled_equals_whole_image_on_odd_size(tile):
    model = LocalNet(depth=4)  # radius 4 < overlap/4 for every tile here
    image = _image(513, 257)
    restorer = Restorer(model, UNIT, tile=tile, overlap=0.25, batch_size=3, device="cpu")
    got = restorer.restore(image)
    shapes = list(model.seen)
    assert got.array.shape == (1, 513, 257)
    ref = _whole(model, image)
    assert np.abs(got.array - ref).max() < 1e-5  # borders included
    assert len(shapes) >= 3  # really tiled, in batches of up to 3 equal-sized tiles
    assert all(s[0] <= 3 and s[-1] % 16 == 0 and s[-2] % 16 == 0 for s in shapes)


def test_tiled_sr_equals_whole_image():
    model = LocalNet(scale=2, depth=3)
    image = _image(160, 96, seed=1)
    got = Restorer(model, UNIT_SR, tile=64, overlap=0.25, device="cpu").restore(image)
    assert got.array.shape == (1, 320, 192)
    assert np.abs(got.array - _whole(model, image)).max() < 1e-5
    assert got.spacing[:2] == (0.5, 0.5)


def test_overlap_zero_still_covers_and_is_local_exact_away_from_seams():
    model = LocalNet(depth=1)
    image = _image(70, 50)
    got = Restorer(model, UNIT, tile=32, overlap=0.0, device="cpu").restore(image)
    assert got.array.shape == image.array.shape and np.isfinite(got.array).all()


def test_volume_restored_slice_by_slice_with_one_normalisation():
    task = TASKS["pet"]
    rng = np.random.default_rng(2)
    vol = (rng.random((3, 40, 36)) * 1000.0).astype(np.float32)
    vol[2] *= 5.0  # slices differ in scale: per-slice normalisation would hide this
    image = Image(vol, domain=Domain.ACTIVITY, modality="PT", spacing=(2.0, 2.0, 3.0))
    identity = LocalNet(depth=1)
    with torch.no_grad():
        for p in identity.body.parameters():
            p.zero_()
    got = Restorer(identity, task, tile=32, device="cpu").restore(image)
    np.testing.assert_allclose(got.array, vol, rtol=1e-5, atol=1e-3)
    assert got.spacing == (2.0, 2.0, 3.0)


def test_rgb_rat_restore_keeps_dtype_and_scales():
    cfg = RATConfig(in_channels=3, out_channels=3, width=8, num_groups=1, layers_per_group=1,
                    scale=2)
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (1, 37, 21, 3), dtype=np.uint8)
    image = Image(arr, domain=Domain.RGB8, modality="SM", spacing=(0.0005, 0.0005, 1.0))
    got = Restorer(build_rat(cfg), TASKS["sr-x2"], tile=32, device="cpu").restore(image)
    assert got.array.shape == (1, 74, 42, 3) and got.array.dtype == np.uint8
    assert got.spacing[:2] == (0.00025, 0.00025)


def test_partitioner_sees_whole_upsampled_slice_and_regions_reach_tiles():
    seen = []

    class Spy(LocalNet):
        def forward(self, x, regions=None):
            seen.append(None if regions is None else regions.clone())
            return super().forward(x, regions)

    def halves(slice2d: np.ndarray) -> np.ndarray:
        seen_shape.append(slice2d.shape)
        labels = np.zeros(slice2d.shape[:2], dtype=np.int32)
        labels[:, slice2d.shape[1] // 2 :] = 7
        return labels

    seen_shape: list = []
    image = _image(48, 64)
    Restorer(Spy(scale=2), UNIT_SR, tile=32, device="cpu", partitioner=halves).restore(image)
    assert seen_shape == [(96, 128)]  # once per slice, at output resolution
    labels = torch.cat([r.flatten() for r in seen])
    assert set(labels.unique().tolist()) == {0, 7}


def test_partitioner_with_wrong_shape_is_a_geometry_error():
    image = _image(20, 20)
    r = Restorer(LocalNet(), UNIT, device="cpu", partitioner=lambda s: np.zeros((3, 3)))
    with pytest.raises(GeometryMismatchError, match="phantom: region map"):
        r.restore(image)


def test_non_finite_input_is_refused():
    image = _image(20, 20)
    image.array[0, 3, 4] = np.nan
    image.array[0, 5, 5] = np.inf
    with pytest.raises(InputFormatError, match="phantom: 2 pixels are NaN or infinite"):
        Restorer(LocalNet(), UNIT, device="cpu").restore(image)


def test_tiny_images_work():
    for h, w in [(1, 1), (3, 5)]:
        got = Restorer(LocalNet(), UNIT, device="cpu").restore(_image(h, w))
        assert got.array.shape == (1, h, w) and np.isfinite(got.array).all()


class OOMNet(LocalNet):
    """Raises torch.OutOfMemoryError when a batch holds more than `limit` pixels."""

    def __init__(self, limit: int) -> None:
        super().__init__(depth=2)
        self.limit = limit

    def forward(self, x, regions=None):
        if x.numel() > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x, regions)


def test_out_of_memory_retries_with_smaller_batches_then_tiles():
    model = OOMNet(limit=32 * 32)
    image = _image(100, 90)
    r = Restorer(model, UNIT, tile=128, batch_size=4, overlap=0.25, device="cpu")
    got = r.restore(image)
    assert (r.batch_size, r.tile) == (1, 32)
    assert np.abs(got.array - _whole(LocalNet(depth=2), image)).max() < 1e-5


def test_out_of_memory_at_smallest_tile_is_a_device_error():
    r = Restorer(OOMNet(limit=10), UNIT, tile=64, batch_size=2, device="cpu")
    with pytest.raises(DeviceError, match="phantom: out of memory on cpu"):
        r.restore(_image(40, 40))


def test_device_and_precision_choices():
    from ratcli.errors import UsageError
    from ratcli.inference.device import autocast_dtype, is_out_of_memory, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(UsageError, match="--device cuda"):
            resolve_device("cuda")
    with pytest.raises(UsageError, match="--device tpu"):
        resolve_device("tpu")
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype(cpu) is None  # fp32 on CPU by default
    assert autocast_dtype(gpu, "fp16") is torch.float16
    assert autocast_dtype(gpu, "bf16") is torch.bfloat16
    assert autocast_dtype(torch.device("mps")) is torch.float16
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_mixed_precision_path_runs_and_stays_close():
    """The autocast path (bf16 here, on CPU) gives nearly the fp32 result."""
    model, image = LocalNet(depth=2), _image(80, 72)
    full = Restorer(model, UNIT, tile=32, device="cpu").restore(image)
    half = Restorer(model, UNIT, tile=32, device="cpu", precision="bf16").restore(image)
    assert half.array.dtype == np.float32
    assert np.abs(half.array - full.array).max() < 0.05
    assert np.abs(half.array - full.array).max() > 0  # really computed in bf16


def test_small_slices_share_forward_passes_and_match_one_by_one():
    rng = np.random.default_rng(5)
    vol = rng.random((6, 40, 36)).astype(np.float32)
    model = LocalNet(depth=2)
    got = Restorer(model, UNIT, tile=64, batch_size=4, device="cpu").restore(Image(vol))
    assert [s[0] for s in model.seen] == [4, 2]  # one tile per slice, 4 slices per pass
    for z in range(6):
        one = Restorer(LocalNet(depth=2), UNIT, tile=64, device="cpu").restore(Image(vol[z:z + 1]))
        np.testing.assert_allclose(got.array[z], one.array[0], atol=1e-6)


def test_waves_fill_whole_batches_within_the_caps():
    from ratcli.inference import restorer as restorer_module

    r = Restorer(LocalNet(), UNIT, tile=32, overlap=0.25, batch_size=4, device="cpu")
    assert len(TileGrid.plan(64, 64, tile=32, overlap=8)) == 9
    assert r._wave_size(64, 64) == 4  # 4 slices x 9 tiles = 9 full batches of 4
    assert r._wave_size(20, 20) == 4  # 1 tile per slice
    r.batch_size = 64
    assert r._wave_size(20, 20) == restorer_module.MAX_WAVE_SLICES
    big = Restorer(LocalNet(), UNIT, tile=512, batch_size=64, device="cpu")
    per_slice = 4 * 4096 * 4096
    assert big._wave_size(4096, 4096) == max(1, restorer_module.MAX_WAVE_BYTES // per_slice)


def test_tile_and_overlap_default_to_the_tasks():
    from ratcli.tasks import TASKS

    r = Restorer(LocalNet(), UNIT, device="cpu")
    assert (r.tile, r.overlap) == (UNIT.tile, UNIT.overlap)
    sr = Restorer(LocalNet(channels=3, scale=2), TASKS["sr-x2"], device="cpu")
    # SR tiles grew, the overlap in input pixels did not (64 px as with 256-px tiles)
    assert (sr.tile, round(sr.tile * sr.overlap)) == (512, 64)
    x4 = TASKS["sr-x4"]
    assert (x4.tile, round(x4.tile * x4.overlap)) == (256, 32)
    assert Restorer(LocalNet(), UNIT, overlap=0.5, device="cpu").overlap == 0.5


def test_automatic_batch_on_cpu_fills_a_pixel_budget():
    from ratcli.inference import restorer as restorer_module

    budget = restorer_module.CPU_BATCH_PIXELS
    big = LocalNet(depth=2)
    Restorer(big, UNIT, tile=256, device="cpu").restore(_image(600, 560))
    # 256^2 tiles (the budget) run one per pass: larger batches spill the caches
    assert len(big.seen) == 9 and {s[0] for s in big.seen} == {1}
    rng = np.random.default_rng(5)
    vol = rng.random((12, 40, 36)).astype(np.float32)
    small = LocalNet(depth=2)
    got = Restorer(small, UNIT, tile=512, device="cpu").restore(Image(vol))
    per_pass = min(restorer_module.MAX_AUTO_BATCH, budget // (48 * 48))  # padded to 16
    assert [s[0] for s in small.seen] == [per_pass, 12 - per_pass]
    one = Restorer(LocalNet(depth=2), UNIT, tile=512, batch_size=1, device="cpu")
    np.testing.assert_allclose(got.array, one.restore(Image(vol)).array, atol=1e-6)


@pytest.mark.parametrize(("option", "value", "words"), [
    ("overlap", 0.7, "--overlap 0.7: must be a fraction between 0 and 0.5"),
    ("tile", 8, "--tile 8: must be at least 16 pixels"),
    ("batch_size", 0, "--batch-size 0: must be at least 1"),
])
def test_tiling_options_fail_the_same_way_in_the_restorer_the_session_and_the_cli(
        tmp_path, option, value, words):
    from typer.testing import CliRunner

    from ratcli.api import Session
    from ratcli.cli import app
    from ratcli.errors import UsageError

    model = build_rat(RATConfig(width=8, num_groups=1, layers_per_group=1, enc_blocks=1,
                                dec_blocks=1))
    with pytest.raises(UsageError, match=words):
        Restorer(model, TASKS["ct"], device="cpu", **{option: value})
    with pytest.raises(UsageError, match=words):
        Session(device="cpu", partitioner="none", **{option: value})
    flag = "--" + option.replace("_", "-")
    result = CliRunner().invoke(app, ["denoise", "examples/pet.nii.gz", "-o",
                                      str(tmp_path / "o.nii.gz"), flag, str(value)])
    assert result.exit_code == 2 and words in result.stderr
