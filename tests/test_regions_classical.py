"""The SAM-free partitioner: SAM-like granularity, determinism, robustness."""

from __future__ import annotations

import numpy as np
import pytest

from ratcli.phantoms import ct_phantom, he_tile, pet_phantom
from ratcli.regions import ClassicalPartitioner, to_uint8
from ratcli.tasks import TASKS


def normalised(task: str, array: np.ndarray) -> np.ndarray:
    spec = TASKS[task]
    return spec.normalize(array, spec.norm_params(array))


@pytest.fixture(scope="module")
def ct_slice():
    return normalised("ct", ct_phantom(256, 1))[0]


def n_regions(labels: np.ndarray) -> int:
    return len(np.unique(labels))


def test_region_counts_on_ct_pet_and_he(ct_slice):
    part = ClassicalPartitioner()
    ct = part(ct_slice)
    he = part(he_tile(256))
    pet = part(normalised("pet", pet_phantom(256, 1))[0])
    for labels in (ct, he, pet):
        assert labels.shape == (256, 256) and labels.dtype == np.int32
        assert 5 <= n_regions(labels) <= 100
        # labels are 1..k with no gaps
        np.testing.assert_array_equal(np.unique(labels), np.arange(1, labels.max() + 1))


def test_regions_follow_anatomy(ct_slice):
    labels = ClassicalPartitioner()(ct_slice)
    # air outside the body (top rows, corners) is one region; the body centre is not
    air = labels[0, 0]
    assert (labels[:4, :] == air).all() and (labels[-4:, :] == air).all()
    assert labels[0, -1] == labels[-1, 0] == labels[-1, -1] == air
    assert labels[128, 128] != air
    # low-dose-like noise does not change the granularity much
    noisy = ct_slice + np.random.default_rng(0).normal(0, 0.01, ct_slice.shape)
    assert 5 <= n_regions(ClassicalPartitioner()(noisy.astype(np.float32))) <= 100


def test_deterministic_and_normalisation_invariant(ct_slice):
    a = ClassicalPartitioner()(ct_slice)
    b = ClassicalPartitioner()(ct_slice.copy())
    np.testing.assert_array_equal(a, b)
    # HU input windows to the same uint8 image as the normalised slice, up to rounding
    hu = ct_phantom(256, 1)[0]
    assert (to_uint8(hu).astype(int) - to_uint8(ct_slice).astype(int)).__abs__().max() <= 1


def test_settings_change_granularity(ct_slice):
    coarse = ClassicalPartitioner(threshold=1e-4)(ct_slice)
    fine = ClassicalPartitioner(threshold=1e-6)(ct_slice)
    assert n_regions(coarse) < n_regions(fine)
    assert ClassicalPartitioner(threshold=1e-4).settings["threshold"] == 1e-4
    with pytest.raises(ValueError):
        ClassicalPartitioner(n_segments=0)


def test_flat_tiny_and_rgb_inputs():
    part = ClassicalPartitioner()
    assert (part(np.zeros((32, 32), np.float32)) == 1).all()
    small = part(np.random.default_rng(0).random((7, 5)).astype(np.float32))
    assert small.shape == (7, 5) and small.min() >= 1
    with pytest.raises(ValueError, match=r"\(H, W\) greyscale or \(H, W, 3\) uint8"):
        part(np.zeros((8, 8, 3), np.float32))


def test_large_slices_are_partitioned_downsampled_with_the_same_anatomy():
    ct = normalised("ct", ct_phantom(512, 1))[0]
    fast = ClassicalPartitioner()(ct)  # work_size 256: partitioned at 256x256
    full = ClassicalPartitioner(work_size=0)(ct)
    assert fast.shape == full.shape == (512, 512)
    # nearest upsampling from the 256x256 map: labels are constant on 2x2 blocks
    blocks = fast.reshape(256, 2, 256, 2)
    assert (blocks == blocks[:, :1, :, :1]).all()
    assert not (full.reshape(256, 2, 256, 2) == full.reshape(256, 2, 256, 2)[:, :1, :, :1]).all()
    for labels in (fast, full):
        assert labels[0, 0] == labels[-1, -1] != labels[256, 256]  # air vs body
        assert 5 <= n_regions(labels) <= 100
    # on the 4x4 grid RAT reads, most pixels of each fast region lie in one full region
    assert purity(fast[2::4, 2::4], full[2::4, 2::4]) > 0.85


def purity(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose region in `a` mostly maps to their region in `b`."""
    pairs, counts = np.unique(a.ravel().astype(np.int64) * 100_000 + b.ravel(),
                              return_counts=True)
    best: dict[int, int] = {}
    for pair, c in zip((pairs // 100_000).tolist(), counts.tolist(), strict=True):
        best[pair] = max(best.get(pair, 0), c)
    return sum(best.values()) / a.size


def test_work_size_is_a_setting_of_the_cache_key(ct_slice):
    assert ClassicalPartitioner().settings["work_size"] == 256
    assert ClassicalPartitioner(work_size=0).settings != ClassicalPartitioner().settings
    # slices no larger than work_size are partitioned exactly as before
    np.testing.assert_array_equal(ClassicalPartitioner(work_size=256)(ct_slice),
                                  ClassicalPartitioner(work_size=0)(ct_slice))
    with pytest.raises(ValueError):
        ClassicalPartitioner(work_size=-1)
