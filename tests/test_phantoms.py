"""Synthetic phantoms: deterministic, right dtype/shape, realistic values, vary along Z."""

import numpy as np
import pytest

from ratcli.phantoms import ct_phantom, he_tile, pet_phantom


def test_ct_phantom_is_deterministic_and_in_hu():
    a = ct_phantom(size=64, slices=3, seed=1)
    assert a.shape == (3, 64, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, ct_phantom(size=64, slices=3, seed=1))
    assert not np.array_equal(a, ct_phantom(size=64, slices=3, seed=2))
    assert a[0, 0, 0] == -1000.0  # air in the corner
    assert a.max() > 700.0  # bone
    lung = (a > -950) & (a < -700)
    soft = (a > -20) & (a < 100)
    assert lung.sum() > 50 and soft.sum() > 500
    # Texture inside soft tissue: not a flat cartoon.
    assert a[soft].std() > 5.0


def test_ct_phantom_varies_along_z():
    a = ct_phantom(size=64, slices=4)
    diffs = [np.abs(a[z] - a[0]).mean() for z in range(1, 4)]
    assert all(d > 10.0 for d in diffs)
    # The lungs shrink from first to last slice.
    lung = (a > -950) & (a < -700)
    assert lung[0].sum() > 2 * lung[-1].sum()


def test_pet_phantom_activity():
    a = pet_phantom(size=32, slices=6, seed=0)
    assert a.shape == (6, 32, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, pet_phantom(size=32, slices=6, seed=0))
    assert a.min() == 0.0 and a[:, 0, 0].max() == 0.0  # zero outside the body
    body = a > 0
    assert np.median(a[body]) < 2.0 < a.max()  # hot spots above a ~1 background
    assert a.max() > 7.0  # a lesion
    assert np.abs(a[0] - a[-1]).mean() > 0.05
    assert pet_phantom(size=32, slices=1).max() > 7.0  # a single slice still has a lesion


def test_he_tile_colours():
    t = he_tile(size=128, seed=3)
    assert t.shape == (128, 128, 3) and t.dtype == np.uint8
    np.testing.assert_array_equal(t, he_tile(size=128, seed=3))
    r, g, b = (t[..., c].astype(int) for c in range(3))
    white = (r > 235) & (g > 235) & (b > 235)
    purple = (b > r + 20) & (r < 140)
    pink = (r > 200) & (g < 190) & (b > g)
    for mask, lo, hi in ((white, 0.02, 0.5), (purple, 0.005, 0.4), (pink, 0.2, 0.95)):
        assert lo < mask.mean() < hi


@pytest.mark.parametrize("fn", [ct_phantom, pet_phantom, he_tile])
def test_rejects_tiny_size(fn):
    with pytest.raises(ValueError):
        fn(size=4)
