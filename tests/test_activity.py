"""PET quantification checks (ratcli.training.activity) and their place in `rat evaluate`."""

from __future__ import annotations

import numpy as np
import pytest

from ratcli.tasks import get_task
from ratcli.training.activity import VOLUME_COLUMNS, find_hot_spots, volume_metrics
from ratcli.training.baselines import run_baseline


def _body_with_lesions() -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """(16, 64, 64) activity: a uniform body of 1000, two small hot spheres (4x, 6x), one
    organ-sized hot blob that is not a lesion."""
    z, y, x = np.meshgrid(np.arange(16), np.arange(64), np.arange(64), indexing="ij")
    vol = np.where((y - 32) ** 2 + (x - 32) ** 2 < 28**2, 1000.0, 0.0)
    centres = [(5, 20, 24), (10, 40, 40)]
    for (cz, cy, cx), ratio in zip(centres, (4.0, 6.0), strict=True):
        vol[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= 4] = 1000.0 * ratio
    vol[(y - 32) ** 2 + (x - 12) ** 2 < 8**2] = 5000.0  # organ: through every slice
    return vol.astype(np.float32), centres


def test_hot_spots_are_the_lesions_not_the_organ():
    vol, centres = _body_with_lesions()
    spots, background = find_hot_spots(vol)
    assert background == pytest.approx(1000.0)
    assert len(spots) == 2
    assert all(any(s.mask[c] for s in spots) for c in centres)
    assert all(s.voxels == 33 for s in spots)  # the 33 voxels of a radius-2 ball


def test_volume_metrics_measure_lesion_loss_and_total_activity():
    vol, _ = _body_with_lesions()
    same = volume_metrics(vol, vol)
    assert same["total_change_pct"] == 0.0 and same["spots"] == 2.0
    assert same["spot_mean_change_pct"] == 0.0 and same["spots_within_10pct"] == 1.0

    flattened = vol.copy()
    spots, _ = find_hot_spots(vol)
    for s in spots:
        flattened[s.mask] *= 0.8  # a denoiser that lowers lesion peaks by 20 %
    m = volume_metrics(flattened, vol)
    assert m["spot_mean_change_pct"] == pytest.approx(-20.0)
    assert m["spots_within_10pct"] == 0.0
    assert m["contrast_change_pct"] == pytest.approx(-20.0)
    assert m["total_change_pct"] < 0
    assert set(m) == set(VOLUME_COLUMNS)

    negative = vol - 50.0
    assert volume_metrics(negative, vol)["min"] == -50.0


def test_baselines_use_the_true_sigma_when_the_target_is_known():
    task = get_task("pet")
    rng = np.random.default_rng(0)
    clean = np.full((1, 48, 48), 100.0, np.float32)
    clean[:, 16:32, 16:32] = 300.0
    noisy = clean + rng.normal(0, 20, clean.shape).astype(np.float32)
    oracle = run_baseline("tv", noisy, task=task, target=clean)
    blind = run_baseline("tv", noisy, task=task)
    assert not np.allclose(oracle, blind)  # a different strength was used
    for out in (oracle, blind):
        assert np.abs(out - clean).mean() < np.abs(noisy - clean).mean()


def test_evaluate_reports_activity_metrics_for_pet(tmp_path):
    import json

    from ratcli.training.evaluate import evaluate

    report = evaluate(get_task("pet"), data="synthetic:pet,volumes=1,slices=4,size=48",
                      baselines=["input", "tv"], out=tmp_path, figures=0)
    assert {r["method"] for r in report.volumes} == {"input", "tv"}
    assert set(report.volume_summary["tv"]) == set(VOLUME_COLUMNS)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["volume_summary"]["input"]["total_change_pct"]["n"] == 1
    assert len(saved["volumes"]) == 2


def test_rat_evaluate_prints_the_pet_quantification(tmp_path):
    import json

    from typer.testing import CliRunner

    from ratcli.cli import app

    args = ["evaluate", "--task", "pet", "--data", "synthetic:pet,volumes=1,slices=2,size=48",
            "--baselines", "input", "-o", str(tmp_path / "ev"), "--figures", "0"]
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "PET quantification" in table.stdout and "total_change_pct" in table.stdout
    as_json = CliRunner().invoke(app, [*args, "--overwrite", "--json"])
    summary = json.loads(as_json.stdout)["volume_summary"]["input"]
    assert summary["min"]["mean"] >= 0 and "contrast_change_pct" in summary
