"""2.5D input (issue 22, item 4): neighbouring slices as extra input channels.

The model (RATConfig.context_slices), the neighbour rule shared by training and inference
(ratcli.inference.context: replicate at the ends, for a lone slice and across large gaps),
training patches, the Restorer, and old (2D) checkpoints staying what they were.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ratcli.errors import UsageError
from ratcli.inference import Restorer
from ratcli.inference.context import neighbour_index, runs, slice_positions
from ratcli.io import Domain, Image, read
from ratcli.models import RATConfig, build_rat, load_checkpoint, save_checkpoint
from ratcli.models.checkpoint import FORMAT, save_tagged
from ratcli.phantom_dicom import save_datasets, synthetic_series
from ratcli.phantoms import ct_phantom
from ratcli.tasks import get_task
from ratcli.training.config import TrainConfig
from ratcli.training.patches import PatchDataset, TrainSlice
from ratcli.training.state import init_from
from ratcli.training.trainer import Trainer

# the smallest model with every part, as tests/helpers.SMALL
SMALL = dict(width=8, num_groups=1, layers_per_group=1, enc_blocks=1, dec_blocks=1)
CT = get_task("ct")


def _model(k: int, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_rat(RATConfig(context_slices=k, **SMALL, **kw)).eval()
    with torch.no_grad():  # a trained-looking head: zero-init scales would hide the body
        for name, p in model.named_parameters():
            if name.endswith(("beta", "gamma", "lambda_r", "lambda_w")):
                p.normal_(0.0, 0.5)
    return model


def _ct_volume(z: int = 5, size: int = 32, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vol = ct_phantom(size, z, seed).astype(np.float32)
    return vol + rng.normal(0, 40, vol.shape).astype(np.float32)  # HU


def _restore(model: torch.nn.Module, vol: np.ndarray, **kw) -> np.ndarray:
    image = Image(vol, spacing=(0.7, 0.7, 2.5), domain=Domain.HU, modality="CT")
    return Restorer(model, CT, device="cpu", **kw).restore(image).array


# -- the model -----------------------------------------------------------------------------


def test_old_checkpoints_load_as_2d_and_compute_the_same(tmp_path):
    """A checkpoint written before the field existed (no "context_slices" key) loads as
    context 0 and gives the very same output as the model it was saved from."""
    cfg = RATConfig(input_shift=0.25, input_gain=4.0, input_detail=40.0, **SMALL)
    model = _model(0, input_shift=0.25, input_gain=4.0, input_detail=40.0)
    old = {k: v for k, v in cfg.to_dict().items() if k != "context_slices"}
    save_tagged(tmp_path / "old.pt", FORMAT, {"config": old, "state_dict": model.state_dict(),
                                               "meta": {"task": "ct"}})
    ckpt = load_checkpoint(tmp_path / "old.pt")
    assert ckpt.config.context_slices == 0 and ckpt.config == cfg
    loaded = ckpt.build()
    assert loaded.stem.in_channels == 2  # the slice and its detail channel, as before
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_shipped_ct_weights_stay_2d():
    ckpt = load_checkpoint("weights/rat-ct.pt")
    assert ckpt.config.context_slices == 0
    assert ckpt.build().stem.weight.shape[1] == 2  # one slice + its detail channel


def test_context_model_stacks_slices_and_restores_the_centre():
    model = _model(1, input_detail=10.0)
    assert model.stem.in_channels == 3 * 2  # 3 slices, each with its detail channel
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 1, 32, 32)
        model.head.weight.zero_()
        model.head.bias.zero_()
        # identity start (TrainConfig.identity_init): the residual returns the centre slice
        torch.testing.assert_close(model(x), x[:, 1:2])
    with pytest.raises(ValueError, match="3 channels"):
        model(torch.rand(1, 1, 32, 32))


@pytest.mark.parametrize("detail", [0.0, 10.0])
def test_2d_weights_start_a_2_5d_run_computing_the_2d_model(tmp_path, detail):
    """init_from inflates a 2D checkpoint (inflate_2d): its stem on the centre slice's
    channels (and their detail channels), zeros on the neighbours'."""
    flat = _model(0, input_detail=detail)
    cfg2d = RATConfig(input_detail=detail, **SMALL)
    save_checkpoint(tmp_path / "2d.pt", flat, cfg2d, meta={"task": "ct"})
    cfg = replace(cfg2d, context_slices=2)
    ctx = build_rat(cfg).eval()
    init_from(ctx, str(tmp_path / "2d.pt"), cfg)
    x = torch.rand(1, 1, 32, 32)
    stacked = torch.cat([torch.rand_like(x), torch.rand_like(x), x, torch.rand_like(x),
                         torch.rand_like(x)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(ctx(stacked), flat(x), rtol=1e-5, atol=1e-5)
    # 2.5D weights never start a run with another context
    save_checkpoint(tmp_path / "k2.pt", ctx, cfg, meta={"task": "ct"})
    other = replace(cfg, context_slices=1)
    with pytest.raises(UsageError, match="differ"):
        init_from(build_rat(other), str(tmp_path / "k2.pt"), other)


def test_checkpoint_round_trip_records_context(tmp_path):
    cfg = RATConfig(context_slices=2, **SMALL)
    model = _model(2)
    save_checkpoint(tmp_path / "c.pt", model, cfg, meta={"task": "ct"})
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    assert payload["config"]["context_slices"] == 2
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt.config == cfg and ckpt.build().stem.in_channels == 5
    x = torch.rand(1, 5, 32, 32)
    with torch.no_grad():
        assert torch.equal(ckpt.build()(x), model(x))


def test_2_5d_is_refused_for_sr_and_rgb():
    with pytest.raises(ValueError, match="2.5D"):
        build_rat(RATConfig(context_slices=1, scale=2, **SMALL))
    with pytest.raises(ValueError, match="2.5D"):
        build_rat(RATConfig(context_slices=1, in_channels=3, out_channels=3, **SMALL))
    with pytest.raises(UsageError, match="2.5D"):
        TrainConfig(task="sr-x2", context_slices=1)
    with pytest.raises(UsageError, match="context_slices must be >= 0"):
        TrainConfig(task="ct", context_slices=-1)

    class FakeSR(torch.nn.Module):  # a model that claims 2.5D for an RGB task
        in_channels, out_channels, scale, context_slices = 3, 3, 2, 1

    with pytest.raises(UsageError, match="2.5D"):
        Restorer(FakeSR(), get_task("sr-x2"), device="cpu")


# -- which slices: the neighbour rule ------------------------------------------------------


def test_neighbours_replicate_at_the_ends_and_for_a_single_slice():
    even = np.arange(5) * 2.5
    np.testing.assert_array_equal(neighbour_index(even, 0), np.arange(5)[:, None])
    np.testing.assert_array_equal(neighbour_index(even, 2), [
        [0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 4], [1, 2, 3, 4, 4], [2, 3, 4, 4, 4]])
    np.testing.assert_array_equal(neighbour_index(np.zeros(1), 1), [[0, 0, 0]])


def test_uneven_gaps_join_up_to_twice_the_median_and_cut_beyond():
    # gaps 1, 1, 1, 2 (one missing slice: kept), 1, 3 (cut), 1; rounding noise is harmless
    positions = np.array([0.0, 1.0, 2.001, 3.0, 5.0, 6.0, 9.0, 10.0])
    np.testing.assert_array_equal(runs(positions), [0, 0, 0, 0, 0, 0, 1, 1])
    idx = neighbour_index(positions, 1)
    np.testing.assert_array_equal(idx[3], [2, 3, 4])  # across the 2 mm gap
    np.testing.assert_array_equal(idx[5], [4, 5, 5])  # the 3 mm gap: itself instead
    np.testing.assert_array_equal(idx[6], [6, 6, 7])
    # a slice alone between two large gaps sees only itself
    np.testing.assert_array_equal(neighbour_index(np.array([0, 1, 2, 9, 16, 17.0]), 1)[3],
                                  [3, 3, 3])
    # descending positions: the same rule on absolute gaps
    np.testing.assert_array_equal(runs(-positions), runs(positions))


def test_dicom_positions_drive_the_rule(tmp_path):
    vol = _ct_volume(5)
    dss = synthetic_series(vol, spacing=(0.7, 0.7, 2.0))
    dss[3].ImagePositionPatient = [0, 0, 20.0]  # slices at 0, 2, 4, 20, 22 mm
    dss[4].ImagePositionPatient = [0, 0, 22.0]
    save_datasets(dss, tmp_path / "uneven")
    image = read(tmp_path / "uneven")
    np.testing.assert_allclose(slice_positions(image), [0, 2, 4, 20, 22])
    np.testing.assert_array_equal(neighbour_index(slice_positions(image), 1)[:, [0, 2]],
                                  [[0, 1], [0, 2], [1, 2], [3, 4], [3, 4]])
    # a NIfTI-like image (no per-slice positions) lies on its regular grid
    plain = Image(vol, spacing=(1.0, 1.0, 3.0), domain=Domain.HU, modality="CT")
    np.testing.assert_allclose(slice_positions(plain), [0, 3, 6, 9, 12])
    # a subset of the slices that no longer matches the frames falls back to the grid
    part = replace(image, array=image.array[:2])
    np.testing.assert_allclose(slice_positions(part), [0, 2])

    # the Restorer reads the same positions: slice 2 no longer depends on slice 3
    model = _model(1)
    out = Restorer(model, CT, device="cpu").restore(image).array
    changed = image.array.copy()
    changed[3] += 300.0
    out2 = Restorer(model, CT, device="cpu").restore(replace(image, array=changed)).array
    np.testing.assert_array_equal(out2[:3], out[:3])
    assert not np.allclose(out2[4], out[4])


# -- inference -----------------------------------------------------------------------------


@pytest.mark.parametrize("tiles", [{}, {"tile": 16, "overlap": 0.25}])
def test_restorer_uses_the_neighbours_and_nothing_further(tiles):
    model, vol = _model(1), _ct_volume(5)
    out = _restore(model, vol, **tiles)
    near, far = vol.copy(), vol.copy()
    near[3] += 300.0  # the neighbour of slice 2
    far[0] += 300.0  # two slices away
    assert np.abs(_restore(model, near, **tiles)[2] - out[2]).max() > 1.0
    np.testing.assert_array_equal(_restore(model, far, **tiles)[2], out[2])


def test_ends_and_a_lone_slice_see_themselves_replicated():
    model, vol = _model(1), _ct_volume(3)
    out = _restore(model, vol)
    # slice 0 sees (0, 0, 1): what slice 1 of (0, 0, 1, 2) sees
    padded = _restore(model, np.concatenate([vol[:1], vol]))
    np.testing.assert_allclose(out[0], padded[1], atol=1e-3)
    # a single slice (one DICOM file, a 2D image) sees (0, 0, 0)
    lone = _restore(model, vol[1:2])
    assert lone.shape == (1, 32, 32)
    triple = _restore(model, np.repeat(vol[1:2], 3, axis=0))
    np.testing.assert_allclose(lone[0], triple[1], atol=1e-3)


# -- training ------------------------------------------------------------------------------


def test_patches_stack_neighbours_at_the_same_place_and_turn():
    """Each slice z holds base + z (target base + 100 z): a patch's channel differences
    are constants only if every slice was cut at the same (y, x) and turned alike."""
    base = np.random.default_rng(0).random((1, 40, 40)).astype(np.float32)
    planes = [base + z for z in range(4)]
    slices = []
    for z in range(4):
        stack = tuple(planes[min(max(i, 0), 3)] for i in (z - 1, z, z + 1))
        slices.append(TrainSlice(planes[z], base + 100 * z, np.zeros((40, 40), np.int64),
                                 f"v[{z}]", stack))
    data = PatchDataset(slices, patch=16, seed=3, length=32)
    for i in range(32):
        inp, tgt, reg, _ = data[i]
        assert inp.shape == (3, 16, 16) and tgt.shape == (1, 16, 16) and reg.shape == (16, 16)
        for c, allowed in ((0, (-1, 0)), (2, (0, 1))):  # 0 where replicated at an end
            d = (inp[c] - inp[1]).numpy()
            assert round(float(d.flat[0])) in allowed
            np.testing.assert_allclose(d, round(float(d.flat[0])), atol=1e-5)
        d = (tgt[0] - inp[1]).numpy()  # 99 z: the target is the centre slice's
        assert round(float(d.flat[0])) in (0, 99, 198, 297)
        np.testing.assert_allclose(d, round(float(d.flat[0])), atol=1e-4)
    assert inp.dtype == torch.float32


def test_context_model_trains_exports_and_restores(tmp_path):
    cfg = TrainConfig(task="ct", data="synthetic:ct,volumes=3,slices=3,size=32", width=8,
                      patch=32, batch_size=2, regions="none", photons=1e5, iters=3,
                      val_every=3, log_every=1, context_slices=1, input_detail=10.0)
    trainer = Trainer(cfg, tmp_path / "run")
    inp, tgt, _, _ = trainer.dataset[0]
    assert inp.shape == (3, 32, 32) and tgt.shape == (1, 32, 32)
    assert trainer.val_slices[0].model_input().shape == (3, 32, 32)
    result = trainer.fit()
    trainer.close()
    assert result.finished and np.isfinite(result.best["val_loss"])
    ckpt = load_checkpoint(result.model)
    assert ckpt.config.context_slices == 1 and ckpt.config == cfg.model_config()
    model = ckpt.build()
    assert model.stem.in_channels == 6
    out = _restore(model, _ct_volume(4))
    assert out.shape == (4, 32, 32) and np.isfinite(out).all()


def test_denoise_a_dicom_series_and_a_lone_dicom_file(tmp_path):
    """`rat denoise` with 2.5D weights, end to end: a series and one file of it alone."""
    from ratcli.api import restore_path

    cfg = RATConfig(context_slices=1, **SMALL)
    weights = tmp_path / "ct25.pt"
    save_checkpoint(weights, _model(1), cfg, meta={"task": "ct"})
    vol = _ct_volume(4)
    save_datasets(synthetic_series(vol, spacing=(0.7, 0.7, 2.0)), tmp_path / "series")
    lone = sorted((tmp_path / "series").iterdir())[0]
    for src, out, z in ((tmp_path / "series", tmp_path / "out-series", 4),
                        (lone, tmp_path / "out-lone", 1)):
        (result,) = restore_path(src, out, weights=str(weights), device="cpu")
        restored = read(result.output)
        assert restored.array.shape == (z, 32, 32) and np.isfinite(restored.array).all()
