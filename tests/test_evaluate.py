"""`rat evaluate`: documented CSV/JSON columns, a figure, metrics equal to scikit-image's
(issue 5, point 4)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image as PILImage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from typer.testing import CliRunner

from ratcli.cli import app
from ratcli.inference import Restorer
from ratcli.io import read
from ratcli.models import RATConfig, build_rat, load_checkpoint, save_checkpoint
from ratcli.phantoms import ct_phantom
from ratcli.tasks import get_task
from ratcli.training.baselines import run_baseline
from ratcli.training.evaluate import evaluate
from ratcli.training.metrics import METRIC_COLUMNS
from ratcli.training.report import IMAGE_COLUMNS, SUMMARY_COLUMNS


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("RAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAT_HOME", str(tmp_path / "home"))


def _checkpoint(path, *, task: str, channels: int = 1, scale: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    cfg = RATConfig(in_channels=channels, out_channels=channels, width=8, num_groups=1,
                    layers_per_group=1, scale=scale)
    save_checkpoint(path, build_rat(cfg), cfg, {"task": task, "regions": "none"})
    return path


@pytest.fixture
def ct_pairs(tmp_path):
    """Two paired NIfTI CT volumes (2 slices of 32x32 each): low = target + noise."""
    rng = np.random.default_rng(0)
    for i in range(2):
        full = ct_phantom(32, 2, seed=i)
        low = (full + rng.normal(0, 40, full.shape)).astype(np.float32)
        for kind, arr in (("low", low), ("full", full)):
            (tmp_path / "data" / kind).mkdir(parents=True, exist_ok=True)
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing((10.0, 10.0, 5.0))
            sitk.WriteImage(img, str(tmp_path / "data" / kind / f"case{i}.nii.gz"))
    return tmp_path / "data"


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_writes_documented_files_and_metrics_match_skimage(tmp_path, ct_pairs):
    ck = _checkpoint(tmp_path / "tiny.pt", task="ct")
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["evaluate", "--task", "ct", "--weights", str(ck), "--data",
                                   str(ct_pairs), "--out", str(out), "--baselines", "input,tv",
                                   "--figures", "2"])
    assert res.exit_code == 0, res.output
    assert "psnr_window" in res.stdout and "paper-style" in res.stdout

    rows = _rows(out / "metrics.csv")
    assert tuple(rows[0]) == IMAGE_COLUMNS
    assert len(rows) == 4 * 3  # 4 slices x (input, tv, tiny)
    assert {r["method"] for r in rows} == {"input", "tv", "tiny"}
    summary = _rows(out / "summary.csv")
    assert tuple(summary[0]) == SUMMARY_COLUMNS
    assert len(summary) == 3 * len(METRIC_COLUMNS)
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= {"task", "data", "methods", "definitions", "summary", "images"}
    assert report["summary"]["input"]["psnr"]["n"] == 4
    assert report["methods"][-1]["sha256"] == load_checkpoint(ck).sha256
    fig = PILImage.open(out / "figure.png")
    assert fig.format == "PNG" and fig.size[0] > 4 * 160  # input, output, target, error

    # recompute every input row and every model row with scikit-image directly
    task = get_task("ct")
    model = Restorer(load_checkpoint(ck).build(), task, tile=4096, overlap=0.0, device="cpu")
    for i in range(2):
        low = read(ct_pairs / "low" / f"case{i}.nii.gz")
        full = read(ct_pairs / "full" / f"case{i}.nii.gz").array.astype(np.float64)
        restored = model.restore(low).array.astype(np.float64)
        for z in range(2):
            for method, pred in (("input", low.array[z].astype(np.float64)),
                                 ("tiny", restored[z])):
                row = next(r for r in rows
                           if r["image"] == f"case{i}.nii.gz[{z}]" and r["method"] == method)
                want_psnr = peak_signal_noise_ratio(full[z], pred, data_range=4096.0)
                want_ssim = structural_similarity(
                    full[z], pred, data_range=4096.0, gaussian_weights=True, sigma=1.5,
                    use_sample_covariance=False)
                assert float(row["psnr"]) == pytest.approx(want_psnr, rel=1e-5)
                assert float(row["ssim"]) == pytest.approx(want_ssim, rel=1e-5, abs=1e-6)
                rmse = np.sqrt(np.mean((pred - full[z]) ** 2))
                assert float(row["rmse"]) == pytest.approx(rmse, rel=1e-5)
                assert row["psnr_window"] and row["psnr_y8"]
    # the noise is ~40 HU, so the input's RMSE says so
    rmse_in = report["summary"]["input"]["rmse"]["mean"]
    assert 35 < rmse_in < 45
    ci = report["summary"]["input"]["psnr"]
    assert ci["ci95_low"] < ci["mean"] < ci["ci95_high"]


def test_sr_evaluation_uses_bicubic_and_rgb_metrics(tmp_path):
    ck = _checkpoint(tmp_path / "sr.pt", task="sr-x2", channels=3, scale=2)
    report = evaluate(get_task("sr-x2"), weights=[ck], out=tmp_path / "rep",
                      data="synthetic:he,volumes=1,slices=2,size=48", figures=1)
    # sr-x2 has an output guard: the model is reported with it and raw
    assert [m["name"] for m in report.methods] == ["bicubic", "sr", "sr-raw"]
    assert [m.get("guard") for m in report.methods] == [None, "range", "none"]
    rows = _rows(report.files["csv"])
    assert len(rows) == 2 * 3
    assert all(r["psnr_window"] == "" and r["psnr_y8"] != "" for r in rows)
    # bicubic row against scikit-image on the same simulated pair
    from ratcli.training.data import load_pairs, parse_data_spec
    from ratcli.training.degrade import make_degradation

    task = get_task("sr-x2")
    (pair,) = load_pairs(parse_data_spec("synthetic:he,volumes=1,slices=2,size=48"), task,
                         degradation=make_degradation(task), seed=99)
    up = run_baseline("bicubic", pair.input.array, task=task)
    assert up.shape == pair.target.array.shape and up.dtype == np.uint8
    row = next(r for r in rows if r["method"] == "bicubic" and r["image"].endswith("[1]"))
    want = peak_signal_noise_ratio(pair.target.array[1], up[1])
    assert float(row["psnr"]) == pytest.approx(want, rel=1e-5)
    assert PILImage.open(report.files["figure"]).size[1] > 160


def test_existing_report_wrong_task_and_unknown_baseline_fail_in_one_line(tmp_path, ct_pairs):
    out = tmp_path / "report"
    args = ["evaluate", "--task", "ct", "--data", str(ct_pairs), "--out", str(out)]
    assert CliRunner().invoke(app, [*args, "--baselines", "input"]).exit_code == 0
    again = CliRunner().invoke(app, [*args, "--baselines", "input"])
    assert again.exit_code == 1 and "exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    pet = _checkpoint(tmp_path / "pet.pt", task="pet")
    wrong = CliRunner().invoke(app, [*args, "--overwrite", "--weights", str(pet)])
    assert wrong.exit_code == 2 and "trained for task pet" in wrong.stderr
    bad = CliRunner().invoke(app, [*args, "--overwrite", "--baselines", "bicubic"])
    assert bad.exit_code == 2 and "offers input, nlm, tv, bm3d" in bad.stderr


def test_cli_oracle_baselines_and_the_paired_comparison_to_the_best(tmp_path):
    """Issue 22 item 5: `--baselines tv-best,gauss-best` end to end on synthetic PET: the
    per-image settings in metrics.csv (gauss-best one FWHM per volume), and each model's
    paired difference to the best baseline in the table, --json and report.json."""
    ck = _checkpoint(tmp_path / "pet.pt", task="pet")
    out = tmp_path / "report"
    args = ["evaluate", "--task", "pet", "--weights", str(ck), "--data",
            "synthetic:pet,volumes=2,slices=2,size=32", "--out", str(out), "--figures", "0",
            "--baselines", "tv-best,gauss-best"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "best baseline" in res.stdout and "oracles tuned on the target" in res.stdout

    rows = _rows(out / "metrics.csv")
    assert tuple(rows[0]) == IMAGE_COLUMNS
    tv = [r for r in rows if r["method"] == "tv-best"]
    gauss = [r for r in rows if r["method"] == "gauss-best"]
    assert len(tv) == len(gauss) == 4 and all(r["setting"].endswith("x sigma") for r in tv)
    for volume in ("synthetic/pet-0", "synthetic/pet-1"):
        assert len({r["setting"] for r in gauss if r["image"].startswith(volume)}) == 1
    assert all(r["setting"] == "" for r in rows if r["kind"] == "model")

    report = json.loads((out / "report.json").read_text())
    psnr = {(r["method"], r["image"]): r["psnr"] for r in report["images"]}
    comps = [c for c in report["comparisons"] if c["metric"] == "psnr"]
    assert {(c["scope"], c["model"]) for c in comps} == {
        (s, m) for s in ("all", "synthetic/pet-0", "synthetic/pet-1") for m in ("pet", "pet-raw")}
    for c in comps:
        images = [i for m, i in psnr if m == "pet" and (c["scope"] == "all"
                                                       or i.startswith(c["scope"]))]
        means = {b: np.mean([psnr[b, i] for i in images]) for b in ("tv-best", "gauss-best")}
        assert c["baseline"] == max(means, key=means.get)
        d = [psnr[c["model"], i] - psnr[c["baseline"], i] for i in images]
        assert c["mean"] == pytest.approx(np.mean(d)) and c["n"] == len(d)
        assert c["ahead"] == sum(x > 0 for x in d)
        assert c["ci95_low"] < c["mean"] < c["ci95_high"]
    assert any(m.get("setting", "").startswith("oracle") for m in report["methods"])

    again = CliRunner().invoke(app, [*args, "--overwrite", "--json", "--quiet"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["comparisons"] == report["comparisons"]
