from __future__ import annotations

import torch

from ratcli.losses import focal_region_loss, l1_loss, region_weights


def test_hand_computed_example():
    # one image, 1x4 pixels, two regions {0,1} and {2,3}
    pred = torch.tensor([[[[1.0, 3.0, 0.0, 0.0]]]])
    target = torch.zeros_like(pred)
    regions = torch.tensor([[[5, 5, 9, 9]]])
    # e = [1, 3, 0, 0]; region means: 2 and 0; normalised by max 2 -> w = [1, 1, 0, 0]
    # loss = mean([1*2, 3*2, 0, 0]) = 2.0 with beta = 1
    assert torch.isclose(focal_region_loss(pred, target, regions, beta=1.0), torch.tensor(2.0))
    # beta = 0.5: mean([1.5, 4.5, 0, 0]) = 1.5
    assert torch.isclose(focal_region_loss(pred, target, regions, beta=0.5), torch.tensor(1.5))


def test_batch_normalisation_uses_batch_maximum():
    pred = torch.tensor([[[[2.0, 2.0]]], [[[1.0, 1.0]]]])  # image 1 error half of image 0
    target = torch.zeros_like(pred)
    regions = torch.zeros(2, 1, 2, dtype=torch.long)
    w = region_weights((pred - target).abs(), regions)
    assert torch.allclose(w.flatten(), torch.tensor([1.0, 1.0, 0.5, 0.5]))


def test_no_gradient_through_weights():
    pred = torch.tensor([[[[1.0, 3.0, 0.5, 0.25]]]], requires_grad=True)
    target = torch.zeros_like(pred)
    regions = torch.tensor([[[0, 0, 1, 1]]])
    loss = focal_region_loss(pred, target, regions, beta=1.0)
    loss.backward()
    # With w constant, d/dpred mean(|e| (1 + w)) = sign(e) (1 + w) / N
    w = region_weights((pred - target).abs(), regions).flatten()
    assert torch.allclose(pred.grad.flatten(), (1 + w) / 4)
    assert not region_weights((pred - target).abs(), regions).requires_grad


def test_beta_zero_is_l1():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    regions = torch.randint(0, 4, (2, 8, 8), generator=g)
    assert torch.isclose(focal_region_loss(pred, target, regions, beta=0.0), l1_loss(pred, target))


def test_zero_error_gives_zero_loss():
    x = torch.randn(1, 1, 4, 4)
    assert focal_region_loss(x, x.clone(), torch.zeros(1, 4, 4, dtype=torch.long)) == 0


def test_overshoot_loss_counts_only_what_leaves_the_local_target_range():
    from ratcli.losses import overshoot_loss

    target = torch.zeros(1, 1, 8, 8)
    target[..., 4:] = 1.0  # an edge
    assert overshoot_loss(target.clone(), target) == 0
    inside = target.clone()
    inside[..., 3] = 0.5  # between the neighbours' min and max: blur, not ringing
    assert overshoot_loss(inside, target) == 0
    halo = target.clone()
    halo[..., 5] = 1.5  # a bright halo beside the edge: 0.5 over the 3x3 max
    halo.requires_grad_(True)
    loss = overshoot_loss(halo, target)
    assert torch.isclose(loss, torch.tensor(0.5 * 8 / 64))
    loss.backward()
    assert halo.grad[..., 5].gt(0).all() and halo.grad[..., :5].eq(0).all()
