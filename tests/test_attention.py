"""R-MSA (sorted, per-region SDPA) must equal the dense-mask definition exactly."""

from __future__ import annotations

import pytest
import torch

from ratcli.models.attention import RegionPlan, region_attention


def dense_region_attention(q, k, v, labels):
    """Reference: full L x L scores with a -inf mask off-region (test-only, O(L^2))."""
    scale = q.shape[-1] ** -0.5
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, h, L, L)
    same = labels[:, None, :, None] == labels[:, None, None, :]
    scores = scores.masked_fill(~same, float("-inf"))
    return scores.softmax(-1) @ v


def _qkv(B, H, L, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, L, D, generator=g, dtype=torch.float64, requires_grad=True)
            for _ in range(3)]


def _check(labels, H=2, D=8, seed=0, big=64):
    B, L = labels.shape
    q, k, v = _qkv(B, H, L, D, seed)
    out = region_attention(q, k, v, labels, big=big)
    ref = dense_region_attention(q, k, v, labels)
    assert out.shape == q.shape
    assert (out - ref).abs().max().item() < 1e-6
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), (q, k, v))
    grads_ref = torch.autograd.grad((ref * g).sum(), (q, k, v))
    for a, b in zip(grads, grads_ref, strict=True):
        assert (a - b).abs().max().item() < 1e-6


def test_one_region_is_global_attention():
    labels = torch.zeros(1, 150, dtype=torch.long)
    _check(labels)
    q, k, v = _qkv(1, 2, 150, 8)
    out = region_attention(q, k, v, labels)
    glob = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(out, glob, atol=1e-10)


def test_every_token_its_own_region_returns_v():
    labels = torch.arange(97)[None]
    _check(labels)
    q, k, v = _qkv(1, 2, 97, 8)
    assert torch.allclose(region_attention(q, k, v, labels), v)


@pytest.mark.parametrize("n_regions", [2, 7, 30, 200])
def test_random_label_maps(n_regions):
    g = torch.Generator().manual_seed(n_regions)
    labels = torch.randint(0, n_regions, (1, 400), generator=g)
    _check(labels, seed=n_regions)


def test_mixed_sizes_cross_the_big_threshold():
    # a large region (> big), medium ones and singletons in shuffled order
    sizes = [150, 40, 17, 9, 3, 1, 1, 65]
    labels = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    _check(labels[None], big=32)


def test_non_contiguous_and_negative_labels():
    g = torch.Generator().manual_seed(3)
    values = torch.tensor([-7, -1, 0, 5, 1000, 2**40])
    labels = values[torch.randint(0, len(values), (1, 300), generator=g)]
    _check(labels)


def test_batch_with_different_maps_per_image():
    g = torch.Generator().manual_seed(4)
    labels = torch.stack([
        torch.randint(0, 3, (256,), generator=g),
        torch.randint(0, 50, (256,), generator=g),
        torch.zeros(256, dtype=torch.long),
    ])
    _check(labels)


def test_same_label_in_two_images_does_not_mix():
    # label 1 in image 0 and label 1 in image 1 must stay separate regions
    labels = torch.ones(2, 64, dtype=torch.long)
    q, k, v = _qkv(2, 2, 64, 8)
    out = region_attention(q, k, v, labels)
    per_image = torch.cat([region_attention(q[i:i + 1], k[i:i + 1], v[i:i + 1], labels[i:i + 1])
                           for i in range(2)])
    assert torch.allclose(out, per_image, atol=1e-12)


def test_label_shape_is_checked():
    q, k, v = _qkv(1, 2, 10, 4)
    with pytest.raises(ValueError, match="labels"):
        region_attention(q, k, v, torch.zeros(1, 11, dtype=torch.long))


def test_one_plan_serves_many_layers():
    # the plan is built once per forward and reused by every layer with new q, k, v
    g = torch.Generator().manual_seed(6)
    labels = torch.randint(0, 9, (2, 200), generator=g)
    plan = RegionPlan.build(labels, big=16)
    for seed in (0, 1):
        q, k, v = _qkv(2, 2, 200, 8, seed)
        qkv = torch.stack((q, k, v), 1).permute(0, 3, 1, 2, 4).reshape(400, 3, 2, 8)
        out = plan.attend(plan.group(qkv)).reshape(2, 200, 2, 8).transpose(1, 2)
        ref = dense_region_attention(q, k, v, labels)
        assert (out - ref).abs().max().item() < 1e-6


def test_plan_layout_calls_and_identity():
    # two whole images of one region each: one unpadded call, nothing reordered
    one = RegionPlan.build(torch.zeros(2, 100, dtype=torch.long), big=64)
    assert one.gather is None and one.unpack is None and one.rows == 200
    assert one.calls == ((0, 2, 100, None),)
    # big regions of different sizes are never padded
    two = RegionPlan.build(torch.tensor([[0] * 70 + [1] * 90]), big=64)
    assert sorted((G, S, m) for _, G, S, m in two.calls) == [(1, 70, None), (1, 90, None)]
    # sizes 4, 4 and 2: one call, the size-2 region padded to 4 and its pad keys masked
    plan = RegionPlan.build(torch.tensor([[0, 1, 0, 1, 2, 0, 1, 2, 0, 1]]), big=64)
    (start, G, S, mask), = plan.calls
    assert (start, G, S, plan.rows) == (0, 3, 4, 12)
    padded = [True, True, False, False]
    assert sorted(mask.reshape(3, 4).tolist()) == [padded, [True] * 4, [True] * 4]
    # thirty singletons and a 60-token region: padding the singletons to 60 would cost
    # far more than a second call
    mixed = RegionPlan.build(torch.tensor([[0] * 60 + list(range(1, 31))]), big=64)
    assert sorted((G, S) for _, G, S, _ in mixed.calls) == [(1, 60), (30, 1)]
    assert all(m is None for *_, m in mixed.calls) and mixed.rows == 90


def test_padded_head_dim_gives_the_same_region_msa():
    from ratcli.models.blocks import RegionMSA

    torch.manual_seed(0)
    msa = RegionMSA(16, 2).double()  # head_dim 8: zero-padded to 16 on CPU
    x = torch.randn(120, 16, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 5, (1, 120), generator=torch.Generator().manual_seed(1))
    out = msa(x, RegionPlan.build(labels, big=16))
    q, k, v = msa.qkv(x).view(120, 3, 2, 8).permute(1, 2, 0, 3)[:, None]  # (1, 2, 120, 8)
    ref = msa.proj(dense_region_attention(q, k, v, labels)[0].transpose(0, 1).reshape(120, 16))
    assert (out - ref).abs().max().item() < 1e-10
    g = torch.randn_like(out)
    params = (x, msa.qkv.weight, msa.proj.weight)
    for a, b in zip(torch.autograd.grad((out * g).sum(), params),
                    torch.autograd.grad((ref * g).sum(), params), strict=True):
        assert (a - b).abs().max().item() < 1e-9
