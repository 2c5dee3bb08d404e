"""The checkpoints shipped in weights/: manifest checksums, loading, and restoring.

`rat weights verify` must report every shipped RAT file as "ok"; each checkpoint must
load, describe its task and training data, and restore a small image so that it gets
closer to the clean reference than the degraded input was (CT, PET) or than bicubic
interpolation is (SR).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

from ratcli.api import restore
from ratcli.cli import app
from ratcli.io import Domain, Image, read
from ratcli.models import load_checkpoint
from ratcli.phantoms import he_tile, pet_phantom
from ratcli.tasks import get_task
from ratcli.training.baselines import run_baseline
from ratcli.training.degrade import make_degradation
from ratcli.training.metrics import psnr
from ratcli.weights import REPO_WEIGHTS_DIR, load_manifest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHIPPED = {"rat-ct": "ct", "rat-ct-window-only": "ct", "rat-ct-noise": "ct", "rat-pet": "pet",
           "rat-sr-x2": "sr-x2", "rat-sr-x4": "sr-x4"}


@pytest.fixture(autouse=True)
def _bundled_manifest(monkeypatch, tmp_path):
    """The repository's manifest and weights only (no user weights dir)."""
    monkeypatch.delenv("RAT_MANIFEST", raising=False)
    monkeypatch.setenv("RAT_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("RAT_CACHE", str(tmp_path / "cache"))  # region maps (auto: classical)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_rat_weights_verify_passes_on_the_shipped_files():
    result = CliRunner().invoke(app, ["weights", "verify", "--json"])
    assert result.exit_code == 0, result.output
    status = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    for name in SHIPPED:
        assert status[name]["status"] == "ok", status[name]
        assert status[name]["path"].startswith(str(REPO_WEIGHTS_DIR))


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_manifest_entry_matches_the_checkpoint(name):
    entry = load_manifest()[name]
    ckpt = load_checkpoint(REPO_WEIGHTS_DIR / entry.file)
    assert entry.kind == "rat" and entry.task == SHIPPED[name] == ckpt.meta["task"]
    assert ckpt.sha256 == entry.sha256
    assert ckpt.meta["storage"] == "fp16"
    assert all(v.dtype == torch.float16 for v in ckpt.state_dict.values()
               if v.is_floating_point())
    prov = ckpt.meta["provenance"]
    assert prov["steps"] == prov["train_config"]["iters"]
    assert prov["train_config"]["region_attn"] is (name != "rat-ct-window-only")
    assert (ckpt.config.noise_ref > 0) is (name == "rat-ct-noise")  # the one noise-aware
    assert (REPO_WEIGHTS_DIR / entry.file).stat().st_size < 8 * 2**20  # small files


def _denoise_case(task: str, seed: int = 3) -> tuple[Image, np.ndarray]:
    """A degraded slice and its clean reference.

    CT: the middle slice of examples/ct_series (real chest CT, 1/4 dose simulated on the
    whole slice) cropped to the box of examples/ct_reference.nii.gz, its full-dose pixels.
    PET: a 64 px phantom blurred like a scanner PSF at quarter dose through the count
    simulator.
    """
    rng = np.random.default_rng(seed)
    if task == "ct":
        ref = read(EXAMPLES / "ct_reference.nii.gz")
        series = read(EXAMPLES / "ct_series")
        noisy = series.array[1:2, 160:288, 96:224]  # make_real_examples.REF_CROP
        assert np.allclose(series.origin[2] + series.spacing[2], ref.origin[2])
        return Image(noisy, spacing=ref.spacing, domain=Domain.HU, modality="CT"), ref.array
    clean = gaussian_filter(pet_phantom(64, 1, seed) * 3.0, (0, 1.5, 1.5)).astype(np.float32)
    sim = make_degradation(get_task("pet"))
    low = np.stack([sim(s, rng) for s in clean]).astype(np.float32)
    return Image(low, spacing=(2.0, 2.0, 2.0), domain=Domain.ACTIVITY, modality="PT"), clean


@pytest.mark.parametrize("name", ["rat-ct", "rat-ct-window-only", "rat-ct-noise", "rat-pet"])
def test_denoiser_restores_a_small_image(name):
    task = SHIPPED[name]
    low, clean = _denoise_case(task)
    out = restore(low, mode="denoise", task=task, weights=name, device="cpu")
    assert out.array.shape == clean.shape and np.isfinite(out.array).all()
    span = 4096.0 if task == "ct" else float(clean.max() - clean.min())
    before, after = psnr(low.array, clean, span), psnr(out.array, clean, span)
    assert after > before + (5.0 if task == "ct" else 3.0), (before, after)


@pytest.mark.parametrize("name", ["rat-sr-x2", "rat-sr-x4"])
def test_super_resolver_restores_a_small_image(name):
    spec = get_task(SHIPPED[name])
    target = he_tile(64, seed=5)[None]  # (1, 64, 64, 3) uint8
    sim = make_degradation(spec)
    low = sim(target[0], np.random.default_rng(0))[None]
    image = Image(low, spacing=(0.0005 * spec.scale,) * 2 + (1.0,), domain=Domain.RGB8,
                  modality="SM")
    out = restore(image, mode="sr", scale=spec.scale, weights=name, device="cpu")
    assert out.array.shape == target.shape and out.array.dtype == np.uint8
    bicubic = run_baseline("bicubic", low, task=spec)
    ours, base = psnr(out.array, target, 255.0), psnr(bicubic, target, 255.0)
    assert math.isfinite(ours) and ours > base, (ours, base)
