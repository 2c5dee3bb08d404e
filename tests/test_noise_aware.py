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
from ratcli.inference.noise import estimate_noise
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
    ckpt = load_checkpoint(result.model)
    assert ckpt.config.noise_ref == REF and ckpt.build().stem.in_channels == 2
    vol = ct_phantom(32, 2, 2).astype(np.float32) + 30
    image = Image(vol, spacing=(0.7, 0.7, 2.5), domain=Domain.HU, modality="CT")
    out = Restorer(ckpt.build(), CT, device="cpu").restore(image).array
    assert out.shape == vol.shape and np.isfinite(out).all()


def test_rgb_tasks_refuse_a_noise_aware_model():
    with pytest.raises(UsageError, match="greyscale"):
        TrainConfig(task="sr-x2", noise_ref=0.01)
