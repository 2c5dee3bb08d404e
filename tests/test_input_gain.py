"""RATConfig.input_shift / input_gain: a fixed affine of the input, undone on the output."""

from __future__ import annotations

import torch
from helpers import SMALL

from ratcli.models import RATConfig, build_rat, load_checkpoint, save_checkpoint


def test_gain_is_an_affine_change_of_units():
    torch.manual_seed(0)
    plain = build_rat(RATConfig(**SMALL)).eval()
    scaled = build_rat(RATConfig(**SMALL, input_shift=0.25, input_gain=10.0)).eval()
    scaled.load_state_dict(plain.state_dict())
    x = 0.25 + 0.01 * torch.randn(2, 1, 32, 32)
    regions = torch.zeros(2, 32, 32, dtype=torch.long)
    with torch.no_grad():
        want = plain((x - 0.25) * 10.0, regions) / 10.0 + 0.25
        got = scaled(x, regions)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_zero_head_with_gain_is_the_identity_and_sr_upsamples():
    for scale in (1, 2):
        model = build_rat(RATConfig(**SMALL, scale=scale, input_shift=0.25, input_gain=10.0))
        torch.nn.init.zeros_(model.head.weight)
        torch.nn.init.zeros_(model.head.bias)
        x = torch.rand(1, 1, 16, 16)
        with torch.no_grad():
            out = model.eval()(x)
        want = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bilinear",
                                               align_corners=False) if scale > 1 else x
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_gain_round_trips_through_checkpoints_and_old_files_default_to_one(tmp_path):
    cfg = RATConfig(**SMALL, input_shift=0.25, input_gain=10.0)
    save_checkpoint(tmp_path / "g.pt", build_rat(cfg), cfg)
    assert load_checkpoint(tmp_path / "g.pt").config == cfg
    old = {k: v for k, v in RATConfig(**SMALL).to_dict().items()
           if k not in ("input_shift", "input_gain")}
    torch.save({"format": "rat-checkpoint/1", "config": old,
                "state_dict": build_rat(RATConfig(**SMALL)).state_dict(), "meta": {}},
               tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt").config
    assert loaded.input_gain == 1.0 and loaded.input_shift == 0.0


def test_detail_channel_is_zero_mean_on_flat_areas_and_round_trips(tmp_path):
    cfg = RATConfig(**SMALL, input_shift=0.25, input_gain=10.0, input_detail=40.0)
    model = build_rat(cfg).eval()
    assert model.stem.in_channels == 2
    seen = []
    model.stem.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    x = torch.full((1, 1, 16, 16), 0.01)  # flat air, far from the shift
    x[..., 8:, :] = 0.5
    with torch.no_grad():
        assert model(x).shape == x.shape
    affine, detail = seen[0][0]
    torch.testing.assert_close(affine, (x[0, 0] - 0.25) * 10.0)
    assert detail[:5].abs().max() < 1e-4 and detail[11:].abs().max() < 1e-4  # flat: none
    torch.testing.assert_close(detail[7, 0], torch.tensor((0.01 - (3 * 0.01 + 2 * 0.5) / 5) * 40))
    save_checkpoint(tmp_path / "d.pt", model, cfg)
    assert load_checkpoint(tmp_path / "d.pt").config == cfg
