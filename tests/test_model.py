"""The RAT network: task configs, odd sizes, padding, parameter count."""

from __future__ import annotations

import pytest
import torch

from ratcli.models import RATConfig, build_rat
from ratcli.models.rat import pad_to_multiple

SMALL = dict(width=8, num_heads=2, num_groups=1, layers_per_group=1)


@pytest.mark.parametrize(
    "cin,cout,scale",
    [(1, 1, 1), (3, 3, 2), (3, 3, 4)],
    ids=["denoise", "sr-x2", "sr-x4"],
)
def test_forward_backward_odd_sizes(cin, cout, scale):
    torch.manual_seed(0)
    model = build_rat(RATConfig(in_channels=cin, out_channels=cout, scale=scale, **SMALL))
    x = torch.randn(2, cin, 37, 53, requires_grad=True)
    regions = torch.randint(0, 6, (2, 37 * scale, 53 * scale))
    y = model(x, regions)
    assert y.shape == (2, cout, 37 * scale, 53 * scale)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_default_width_parameter_count():
    model = build_rat(RATConfig(width=64))
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 15.9e6) / 15.9e6 < 0.03, n


@pytest.mark.parametrize("width", [32, 16])
def test_smaller_widths_run(width):
    model = build_rat(RATConfig(width=width))
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_tiny_images_work():
    model = build_rat(RATConfig(**SMALL))
    for h, w in [(1, 1), (3, 5)]:
        assert model(torch.randn(1, 1, h, w)).shape == (1, 1, h, w)


def test_zero_init_scales_make_identity_at_init_for_denoise():
    # lambda/beta/gamma init 0 and the global residual: output = input + head(decoder)
    model = build_rat(RATConfig(**SMALL))
    for name, p in model.named_parameters():
        if name.endswith(("lambda_r", "lambda_w", "beta", "gamma")):
            assert torch.count_nonzero(p) == 0, name


def test_region_map_changes_output_and_none_means_one_region():
    torch.manual_seed(0)
    model = build_rat(RATConfig(**SMALL)).eval()
    for name, p in model.named_parameters():  # make the R-MSA branch active
        if name.endswith("lambda_r"):
            torch.nn.init.constant_(p, 1.0)
    x = torch.randn(1, 1, 32, 32)
    one = torch.zeros(1, 32, 32, dtype=torch.long)
    halves = one.clone()
    halves[:, :, 16:] = 1
    with torch.no_grad():
        assert torch.equal(model(x, None), model(x, one))
        assert not torch.allclose(model(x, one), model(x, halves))
        # labels are identities only: renaming them changes nothing
        assert torch.allclose(model(x, halves), model(x, halves * 7 - 3), atol=1e-6)


def test_region_map_shape_is_checked():
    model = build_rat(RATConfig(scale=2, in_channels=3, out_channels=3, **SMALL))
    with pytest.raises(ValueError, match="regions"):
        model(torch.randn(1, 3, 16, 16), torch.zeros(1, 16, 16, dtype=torch.long))


def test_ablation_has_no_region_attention():
    model = build_rat(RATConfig(region_attn=False, **SMALL))
    assert not any("rmsa" in n or "lambda_r" in n for n, _ in model.named_parameters())
    assert model(torch.randn(1, 1, 20, 20)).shape == (1, 1, 20, 20)


def test_pad_to_multiple_reflects_images_and_labels_alike():
    x = torch.arange(15.0).reshape(1, 3, 5)
    p = pad_to_multiple(x, 16)
    assert p.shape == (1, 16, 16)
    assert torch.equal(p[:, :3, :5], x)
    assert torch.equal(p[0, 3, :5], x[0, 1])  # reflect without repeating the edge
    labels = torch.tensor([[[-4, 9, 2]]])
    assert torch.equal(pad_to_multiple(labels, 4)[0, 0], torch.tensor([-4, 9, 2, 9]))
    assert torch.equal(pad_to_multiple(torch.ones(1, 1), 16), torch.ones(16, 16))


def test_batched_images_with_different_maps_match_one_by_one():
    # one RegionPlan covers the whole batch; images must not see each other's regions
    torch.manual_seed(0)
    model = build_rat(RATConfig(**SMALL)).eval()
    for name, p in model.named_parameters():
        if name.endswith(("lambda_r", "lambda_w", "beta", "gamma")):
            torch.nn.init.constant_(p, 0.5)
    x = torch.randn(3, 1, 48, 32)
    regions = torch.stack([torch.zeros(48, 32, dtype=torch.long),
                           torch.randint(0, 4, (48, 32)),
                           (torch.arange(48)[:, None] // 12).expand(48, 32) * 3])
    with torch.no_grad():
        batched = model(x, regions)
        single = torch.cat([model(x[i:i + 1], regions[i:i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-5)


def _active(model: torch.nn.Module) -> torch.nn.Module:
    for name, p in model.named_parameters():  # make every residual branch count
        if name.endswith(("lambda_r", "lambda_w", "beta", "gamma")):
            torch.nn.init.constant_(p, 0.5)
    return model.eval()


def test_region_block_equals_explicit_block_labels():
    # cutting regions by a 32-px grid is the same model as labels that encode the cell
    torch.manual_seed(0)
    blocked = _active(build_rat(RATConfig(region_block=32, **SMALL)))
    whole = build_rat(RATConfig(**SMALL)).eval()
    whole.load_state_dict(blocked.state_dict())
    x = torch.randn(2, 1, 80, 64)
    regions = torch.randint(-2, 3, (2, 80, 64))
    rows = (torch.arange(80) // 32)[:, None]
    cols = (torch.arange(64) // 32)[None, :]
    cells = regions * 100 + rows * 10 + cols
    with torch.no_grad():
        out = blocked(x, regions)
        assert torch.allclose(out, whole(x, cells), atol=1e-5)
        assert not torch.allclose(out, whole(x, regions), atol=1e-4)


def test_region_block_is_exact_on_patches_it_covers():
    # a model trained on 64-px patches gives the same outputs on them with region_block 64
    torch.manual_seed(0)
    blocked = _active(build_rat(RATConfig(region_block=64, **SMALL)))
    whole = build_rat(RATConfig(**SMALL)).eval()
    whole.load_state_dict(blocked.state_dict())
    x, regions = torch.randn(2, 1, 64, 64), torch.randint(0, 4, (2, 64, 64))
    with torch.no_grad():
        assert torch.allclose(blocked(x, regions), whole(x, regions), atol=1e-6)


@pytest.mark.parametrize("bad", [-16, 8, 40])
def test_region_block_must_be_a_multiple_of_16(bad):
    with pytest.raises(ValueError, match="region_block"):
        build_rat(RATConfig(region_block=bad, **SMALL))


def test_box_mean_matches_brute_force_boxes():
    from ratcli.models.blocks import box_mean, cell_mul

    y = torch.randn(2, 48, 72, 3, dtype=torch.float64)
    for k in (24, 32, 64):  # 64: taller than the image, so rows are averaged whole
        a = box_mean(y, k)
        h, w = a.shape[1:3]
        c, n = 48 // h, k // (48 // h)
        assert 72 // w == c
        for i in range(h):
            for j in range(w):
                # the box: n cells from (n - 1) // 2 cells before, shifted inside the image
                y0 = min(max((i - (n - 1) // 2) * c, 0), max(48 - k, 0))
                x0 = min(max((j - (n - 1) // 2) * c, 0), 72 - k)
                ref = y[:, y0 : y0 + k, x0 : x0 + k].mean((1, 2))
                assert torch.allclose(a[:, i, j], ref, atol=1e-12)
        expanded = a.repeat_interleave(c, 1).repeat_interleave(c, 2)
        assert torch.equal(cell_mul(y, a), y * expanded)
    assert box_mean(y, 0).shape == (2, 1, 1, 3)
    assert torch.allclose(box_mean(y, 72), y.mean((1, 2), keepdim=True), atol=1e-12)


def test_sca_window_is_exact_on_inputs_it_covers():
    # a model validated with whole-tile pooling on tiles <= sca_window is unchanged there
    torch.manual_seed(0)
    local = _active(build_rat(RATConfig(sca_window=64, **SMALL)))
    whole = build_rat(RATConfig(**SMALL)).eval()
    whole.load_state_dict(local.state_dict())
    for shape in [(2, 1, 64, 64), (1, 1, 48, 64)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            assert torch.equal(local(x), whole(x))


def test_sca_window_makes_the_output_independent_of_far_pixels():
    # with whole-tile pooling every output pixel depends on the whole tile; with a box
    # (and R-MSA cells) a change 128 px away leaves it alone, so tile size does not matter
    torch.manual_seed(0)
    local = _active(build_rat(RATConfig(sca_window=32, region_block=32, **SMALL)))
    whole = build_rat(RATConfig(region_block=32, **SMALL)).eval()
    whole.load_state_dict(local.state_dict())
    x = torch.randn(1, 1, 64, 256)
    far = x.clone()
    far[..., 192:] += 1.0
    with torch.no_grad():
        assert torch.allclose(local(x)[..., :64], local(far)[..., :64], atol=1e-6)
        assert not torch.allclose(whole(x)[..., :64], whole(far)[..., :64], atol=1e-3)


@pytest.mark.parametrize("bad", [-2, 7])
def test_sca_window_must_be_even_and_not_negative(bad):
    with pytest.raises(ValueError, match="sca_window"):
        build_rat(RATConfig(sca_window=bad, **SMALL))


def test_sca_window_under_autocast_keeps_the_dtype_and_stays_close():
    # the box sums run in float32 under bf16/fp16 autocast
    from ratcli.models.blocks import box_mean

    y = torch.rand(2, 96, 80, 4)
    low = box_mean(y.bfloat16(), 32)
    assert low.dtype == torch.bfloat16
    assert (low.float() - box_mean(y, 32)).abs().max() < 0.01
    torch.manual_seed(0)
    model = _active(build_rat(RATConfig(sca_window=32, **SMALL)))
    x = torch.rand(1, 1, 96, 80)
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(x)
    assert (half.float() - full).abs().max() < 0.1
    assert (half.float() - full).abs().max() > 0  # really ran in bf16
