"""Noise-aware models (RATConfig.noise_ref, issue 22): the slice's noise level as an input.

The estimate (ratcli.inference.noise), the model's noise channel, starting one from
weights without it, and the same level reaching the model in training and at inference.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ratcli.errors import UsageError
from ratcli.inference import Restorer
from ratcli.inference.noise import estimate_noise, pair_noise
from ratcli.io import Domain, Image
from ratcli.models import RATConfig, build_rat, load_checkpoint, save_checkpoint
from ratcli.phantoms import ct_phantom
from ratcli.tasks import get_task
from ratcli.training.config import TrainConfig
from ratcli.training.state import init_from
from ratcli.training.trainer import Trainer

SMALL = dict(width=8, num_groups=1, layers_per_group=1, enc_blocks=1, dec_blocks=1)
CT = get_task("ct")
REF = 20 / 4096  # 20 HU in the CT task's normalised units


def _model(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_rat(RATConfig(**SMALL, **kw)).eval()
    with torch.no_grad():  # a trained-looking model: zero-init scales would hide the body
        for name, p in model.named_parameters():
            if name.endswith(("beta", "gamma", "lambda_r", "lambda_w")):
                p.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize("sigma", [5.0, 20.0, 80.0])
def test_estimate_reads_white_noise_on_a_phantom_and_ignores_padding(sigma):
    rng = np.random.default_rng(0)
    clean = ct_phantom(256, 1, 3)[0].astype(np.float64)
    noisy = clean + rng.normal(0, sigma, clean.shape)
    assert estimate_noise(noisy) == pytest.approx(sigma, rel=0.12)
    padded = noisy.copy()
    padded[:, :90] = -3024.0  # a third of the slice outside the field of view
    assert estimate_noise(padded) == pytest.approx(sigma, rel=0.12)
    assert estimate_noise(noisy * 2) == pytest.approx(2 * estimate_noise(noisy), rel=1e-9)
    assert estimate_noise(clean) < 0.25 * sigma  # edges are not read as noise


def test_pair_noise_reads_the_added_noise_and_skips_untouched_pixels():
    rng = np.random.default_rng(4)
    target = ct_phantom(128, 1, 2)[0].astype(np.float64)
    noisy = target + rng.normal(0, 12.0, target.shape)
    noisy[:, :40] = target[:, :40]  # padding left as it was
    assert pair_noise(noisy, target) == pytest.approx(12.0, rel=0.05)
    assert pair_noise(target, target) == 0.0


def test_estimate_of_a_flat_slice_is_zero_and_bad_shapes_are_refused():
    assert estimate_noise(np.full((32, 32), -1000.0)) == 0.0
    with pytest.raises(ValueError, match="2D slice"):
        estimate_noise(np.zeros((4, 32)))


def test_noise_channel_changes_the_output_and_is_required():
    model = _model(noise_ref=REF, input_detail=10.0)
    assert model.stem.in_channels == 3  # intensity, detail, noise level
    with torch.no_grad():  # weights on the noise channel, as training would give it
        model.stem.weight[:, -1].normal_(0, 0.5)
    x = torch.rand(1, 1, 32, 32).expand(2, 1, 32, 32)  # the same image twice
    with torch.no_grad():
        low, high = model(x, None, torch.tensor([REF / 4, REF / 4])), model(
            x, None, torch.tensor([REF * 4, REF * 4]))
        assert not torch.allclose(low, high)
        # below the clamp (1/32 of noise_ref) every level reads the same
        tiny = model(x, None, torch.tensor([0.0, REF / 64]))
        torch.testing.assert_close(tiny[0], tiny[1])
        with pytest.raises(ValueError, match="noise-aware"):
            model(x, None)


def test_weights_without_the_channel_start_a_noise_aware_run_unchanged(tmp_path):
    plain = _model(input_detail=10.0)
    cfg = RATConfig(input_detail=10.0, **SMALL)
    save_checkpoint(tmp_path / "plain.pt", plain, cfg, meta={"task": "ct"})
    aware_cfg = replace(cfg, noise_ref=REF)
    aware = build_rat(aware_cfg).eval()
    init_from(aware, str(tmp_path / "plain.pt"), aware_cfg)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(aware(x, None, torch.tensor([REF * 3])), plain(x))
    # noise-aware weights never start a run with another reference level
    save_checkpoint(tmp_path / "aware.pt", aware, aware_cfg, meta={"task": "ct"})
    other = replace(aware_cfg, noise_ref=2 * REF)
    with pytest.raises(UsageError, match="differ"):
        init_from(build_rat(other), str(tmp_path / "aware.pt"), other)


def test_noise_aware_2d_weights_start_a_noise_aware_2_5d_run_unchanged(tmp_path):
    cfg = RATConfig(noise_ref=REF, input_detail=10.0, **SMALL)
    flat = _model(noise_ref=REF, input_detail=10.0)
    with torch.no_grad():  # a trained noise channel, which must keep its place (last)
        flat.stem.weight[:, -1].normal_(0, 0.5)
    save_checkpoint(tmp_path / "2d.pt", flat, cfg, meta={"task": "ct"})
    ctx_cfg = replace(cfg, context_slices=1)
    ctx = build_rat(ctx_cfg).eval()
    init_from(ctx, str(tmp_path / "2d.pt"), ctx_cfg)
    x, level = torch.rand(1, 1, 32, 32), torch.tensor([REF * 2])
    stacked = torch.cat([torch.rand_like(x), x, torch.rand_like(x)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(ctx(stacked, None, level), flat(x, None, level),
                                   rtol=1e-5, atol=1e-5)


class _Recorder(torch.nn.Module):
    """Identity model that records the noise levels it is given."""

    scale, multiple, in_channels, out_channels, noise_ref = 1, 16, 1, 1, REF

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []

    def forward(self, x, regions=None, noise=None):
        self.seen += noise.tolist()
        return x


@pytest.mark.parametrize("tile", [32, 256])
def test_restorer_gives_every_tile_its_whole_slice_level(tile):
    rng = np.random.default_rng(1)
    vol = ct_phantom(96, 2, 1).astype(np.float32)
    vol[0] += rng.normal(0, 10, vol[0].shape).astype(np.float32)
    vol[1] += rng.normal(0, 60, vol[1].shape).astype(np.float32)
    model = _Recorder()
    image = Image(vol, spacing=(0.7, 0.7, 2.5), domain=Domain.HU, modality="CT")
    Restorer(model, CT, device="cpu", tile=tile, batch_size=1).restore(image)
    norm = CT.normalize(vol, CT.norm_params(vol))
    want = [estimate_noise(norm[0]), estimate_noise(norm[1])]
    per_slice = len(model.seen) // 2
    np.testing.assert_allclose(model.seen, np.repeat(want, per_slice), rtol=1e-6)
    assert want[1] > 4 * want[0]


def test_noise_aware_model_trains_from_slice_levels_and_restores(tmp_path):
    cfg = TrainConfig(task="ct", data="synthetic:ct,volumes=3,slices=2,size=32", width=8,
                      patch=32, batch_size=2, regions="none", photons=1e5, iters=2,
                      val_every=2, log_every=1, noise_ref=REF)
    trainer = Trainer(cfg, tmp_path / "run")
    s = trainer.train_slices[0]
    assert s.noise == pytest.approx(estimate_noise(s.input[0])) and s.noise > 0
    *_, noise = trainer.dataset[0]
    assert noise.shape == () and float(noise) > 0
    result = trainer.fit()
    trainer.close()
    pair = Trainer(replace(cfg, noise_source="pair", iters=1), tmp_path / "pair")
    p = pair.train_slices[0]
    assert p.noise == pytest.approx(pair_noise(p.input[0], p.target[0])) and p.noise > 0
    pair.close()
    ckpt = load_checkpoint(result.model)
    assert ckpt.config.noise_ref == REF and ckpt.build().stem.in_channels == 2
    vol = ct_phantom(32, 2, 2).astype(np.float32) + 30
    image = Image(vol, spacing=(0.7, 0.7, 2.5), domain=Domain.HU, modality="CT")
    out = Restorer(ckpt.build(), CT, device="cpu").restore(image).array
    assert out.shape == vol.shape and np.isfinite(out).all()


def test_rgb_tasks_refuse_a_noise_aware_model():
    with pytest.raises(UsageError, match="greyscale"):
        TrainConfig(task="sr-x2", noise_ref=0.01)


def test_restore_told_the_noise_in_hu_gives_the_model_normalised_units():
    vol = ct_phantom(64, 3, 1).astype(np.float32)
    image = Image(vol, spacing=(0.7, 0.7, 2.5), domain=Domain.HU, modality="CT")
    model = _Recorder()
    Restorer(model, CT, device="cpu").restore(image, noise=20.0)
    np.testing.assert_allclose(model.seen, [20 / 4096] * 3, rtol=1e-6)
    model.seen.clear()
    Restorer(model, CT, device="cpu").restore(image, noise=[5.0, 10.0, 40.0])
    np.testing.assert_allclose(model.seen, np.array([5, 10, 40]) / 4096, rtol=1e-6)
    for bad in (-1.0, [1.0, 2.0], float("nan")):
        with pytest.raises(ValueError, match="noise must be"):
            Restorer(model, CT, device="cpu").restore(image, noise=bad)


def _aware_checkpoint(path) -> str:
    cfg = RATConfig(noise_ref=REF, input_detail=10.0, **SMALL)
    save_checkpoint(path, _model(noise_ref=REF, input_detail=10.0), cfg, meta={"task": "ct"})
    return str(path)


def _nifti(path, vol) -> str:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(vol), str(path))
    return str(path)


def test_denoise_noise_option_reaches_a_noise_aware_model_only(tmp_path):
    from typer.testing import CliRunner

    from ratcli.cli import app

    rng = np.random.default_rng(2)
    vol = (ct_phantom(32, 2, 1) + rng.normal(0, 30, (2, 32, 32))).astype(np.float32)
    src = _nifti(tmp_path / "ct.nii.gz", vol)
    aware = _aware_checkpoint(tmp_path / "aware.pt")
    runner = CliRunner()
    outs = {}
    for told in (None, "5", "80"):
        out = tmp_path / f"out-{told}.nii.gz"
        args = ["denoise", src, "-o", str(out), "--weights", aware, "--task", "ct",
                "--regions", "none", "--device", "cpu"]
        r = runner.invoke(app, args + ([] if told is None else ["--noise", told]))
        assert r.exit_code == 0, r.stderr
        outs[told] = sitk_array(out)
    assert not np.allclose(outs["5"], outs["80"])  # the level changes what it does
    plain = str(tmp_path / "plain.pt")
    save_checkpoint(plain, _model(input_detail=10.0), RATConfig(input_detail=10.0, **SMALL),
                    meta={"task": "ct"})
    r = runner.invoke(app, ["denoise", src, "-o", str(tmp_path / "p.nii.gz"), "--weights",
                            plain, "--task", "ct", "--noise", "20", "--regions", "none"])
    assert r.exit_code != 0 and "not noise-aware" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "p.nii.gz").exists()
    r = runner.invoke(app, ["denoise", src, "-o", str(tmp_path / "n.nii.gz"), "--weights",
                            aware, "--noise", "-3"])
    assert r.exit_code == 2 and "--noise -3" in r.stderr


def sitk_array(path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_evaluate_tells_the_added_noise_with_noise_pair(tmp_path):
    from ratcli.training.evaluate import evaluate

    aware = _aware_checkpoint(tmp_path / "aware.pt")
    runs = {}
    for noise in ("blind", "pair"):
        report = evaluate(CT, weights=[aware], data="synthetic:ct,volumes=1,slices=2,size=32",
                          out=tmp_path / noise, baselines=["input"], regions="none",
                          device="cpu", figures=0, noise=noise)
        runs[noise] = [r["psnr"] for r in report.rows if r["method"] == "aware"]
    assert len(runs["pair"]) == 2 and runs["pair"] != runs["blind"]
    assert report.methods[-1]["noise"] == "pair"  # the report says what it was told
    with pytest.raises(UsageError, match="--noise"):
        evaluate(CT, weights=[aware], data="synthetic:ct", out=tmp_path / "x", noise="oracle")
