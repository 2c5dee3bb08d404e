"""`rat evaluate`: models and classical baselines on paired data, metrics per image and
aggregated, written as CSV + JSON + a PNG figure.

    report = evaluate(get_task("ct"), weights=["runs/ct/model.pt"], data="eval/",
                      out="eval-report/")
    report.summary["model"]["psnr"]["mean"]

Data: a data spec as in data.py (paired `low/` + `full/` folders, single-quality data
degraded by the simulator with `sim_seed`, or `synthetic:...`). Models run through
`ratcli.inference.Restorer` on whole volumes (one normalisation per volume, as
`rat denoise` does), with the region method recorded in the checkpoint unless `regions`
overrides it. Where the task has an output guard (inference/guards.py: PET, SR x2), each
model is reported as `rat denoise`/`rat sr` writes it (guard applied) and as its raw
network output (`<name>-raw`). Metrics are computed per 2D slice (an "image") in
physical units; see metrics.py for their definitions and report.py for the file columns.
The grid baselines (tv-best, nlm-best, gauss-best; oracle.py) choose their setting with
the target: an upper bound for their filter. Each model's paired difference to the best
baseline (95 % t interval, images ahead) is in `comparisons` (stats.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ratcli.errors import OutputExistsError, UsageError
from ratcli.inference.guards import apply_guard
from ratcli.inference.noise import NOISE_SOURCES, pair_noise
from ratcli.tasks import TaskSpec
from ratcli.training.activity import VOLUME_COLUMNS, find_hot_spots, volume_metrics
from ratcli.training.baselines import GRID_BASELINES, baselines_for, run_baseline
from ratcli.training.data import VolumePair, load_pairs, parse_data_spec
from ratcli.training.degrade import Degradation, make_degradation
from ratcli.training.eval_models import EvalModel, load_model, name_models
from ratcli.training.metrics import METRIC_COLUMNS, definitions, image_metrics
from ratcli.training.metrics import summarize as summarize_values
from ratcli.training.oracle import GRIDS, run_best
from ratcli.training.stats import compare_to_best

__all__ = ["evaluate", "EvalReport", "REPORT_FILES"]

REPORT_FILES = {"csv": "metrics.csv", "summary": "summary.csv", "json": "report.json",
                "figure": "figure.png"}

ProgressFn = Callable[[int, int], None]  # (volumes x methods done, total)


@dataclass
class EvalReport:
    """rows: one dict per image and method (report.IMAGE_COLUMNS keys); summary:
    {method: {metric: {n, mean, std, ci95_low, ci95_high}}}; methods: one dict per
    method (name, kind, weights, sha256, regions); files: {"csv"|"summary"|"json"|
    "figure": path}. PET only: volumes, one dict per volume and method (activity.py's
    VOLUME_COLUMNS: min, total activity and hot-spot changes), and volume_summary, their
    {method: {column: stats}}. comparisons: stats.compare_to_best's records (each model
    against the best baseline, per PSNR metric). notes: what the user should read
    (unpaired files left out, grid baselines at their grid's edge)."""

    task: str
    rows: list[dict]
    summary: dict[str, dict[str, dict]]
    methods: list[dict]
    definitions: dict[str, str]
    files: dict[str, Path] = field(default_factory=dict)
    volumes: list[dict] = field(default_factory=list)
    volume_summary: dict[str, dict[str, dict]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    comparisons: list[dict] = field(default_factory=list)


def evaluate(
    task: TaskSpec,
    *,
    weights: Sequence[str | Path] = (),
    data: str | Path,
    out: str | Path,
    baselines: Sequence[str] | None = None,
    regions: str | None = None,
    degradation: Degradation | None = None,
    sim_seed: int = 99,
    device: str = "auto",
    figures: int = 3,
    overwrite: bool = False,
    allow_unpaired: bool = False,
    noise: str = "blind",
    on_progress: ProgressFn | None = None,
) -> EvalReport:
    """Evaluate `weights` (checkpoint paths or manifest names) and baselines on `data`.

    baselines: names from baselines.BASELINES (None: all that apply but bm3d-best; []:
    none; *-best choose their setting with the target). regions: none | classical |
    sam | auto, overriding each checkpoint's own.
    degradation: simulator for single-quality/synthetic data (default: the task's).
    sim_seed: seeds that simulation (differs from training's default seeds 0 and 1).
    figures: images shown in figure.png (0: no figure). Writes REPORT_FILES into `out`.
    allow_unpaired: paired data with files on one side only is evaluated on the pairs,
    the others named in report.notes (else InputNotFoundError lists every one).
    noise: what noise-aware models are told: "blind" (nothing: each estimates its input's
    noise, as `rat denoise` does) or "pair" (each slice's added noise std, from the target,
    as nlm/tv/bm3d are told it).
    """
    if noise not in NOISE_SOURCES:
        raise UsageError(f"--noise {noise}: choose blind or pair")
    out = Path(out)
    _refuse_existing(out, overwrite, figures)
    names = baselines_for(task, None if baselines is None else list(baselines))
    models = [load_model(w, task, regions) for w in weights]
    name_models(models)
    if not names and not models:
        raise UsageError("nothing to evaluate: give --weights or at least one baseline")
    spec = parse_data_spec(data)
    degradation = degradation or make_degradation(task)
    notes: list[str] = []
    pairs = load_pairs(spec, task, degradation=degradation, seed=sim_seed,
                       allow_unpaired=allow_unpaired, on_note=notes.append)

    rows: list[dict] = []
    volumes: list[dict] = []
    shown: list[tuple[str, dict]] = []
    total, done = len(pairs) * (len(names) + len(models)), 0
    picks = _figure_picks(pairs, figures)
    records = [r | ({"noise": noise} if m.checkpoint.config.noise_ref else {})
               for m in models for r in m.records()]  # guarded and raw outputs
    model_names = [r["name"] for r in records]
    at_edge = dict.fromkeys(names, 0)  # images whose grid choice is at the grid's edge
    for pair in pairs:
        outputs: dict[str, np.ndarray] = {}
        seconds: dict[str, float] = {}
        settings: dict[str, list[str]] = {}
        for name in names:
            t0 = time.perf_counter()
            if name in GRID_BASELINES:
                choice = run_best(name, pair.input.array, task=task,
                                  target=pair.target.array, spacing=pair.input.spacing)
                outputs[name], settings[name] = choice.output, choice.settings
                at_edge[name] += choice.at_edge
            else:
                outputs[name] = run_baseline(name, pair.input.array, task=task,
                                             target=pair.target.array)
            seconds[name] = time.perf_counter() - t0
            done += 1
            _tick(on_progress, done, total)
        told = None if noise == "blind" or task.scale != 1 else [
            pair_noise(i, t) for i, t in zip(pair.input.array, pair.target.array, strict=True)]
        for m in models:
            t0 = time.perf_counter()
            raw = m.restorer(device).restore(pair.input, noise=told).array
            if task.guard:  # what users get, and the raw network output beside it
                raw_seconds = time.perf_counter() - t0
                outputs[m.name] = apply_guard(task.guard, pair.input.array, raw, task.scale)
                outputs[m.raw_name], seconds[m.raw_name] = raw, raw_seconds
            else:
                outputs[m.name] = raw
            seconds[m.name] = time.perf_counter() - t0
            done += 1
            _tick(on_progress, done, total)
        rows += _image_rows(pair, outputs, seconds, settings, task, set(model_names))
        if task.modality == "PT":
            volumes += _volume_rows(pair, outputs)
        shown += [(f"{pair.name}[{z}]", _panels(pair, outputs, z, models, names))
                  for z in picks.get(pair.name, [])]

    kinds = {n: "baseline" for n in names} | dict.fromkeys(model_names, "model")
    summary = {method: {c: summarize_values([r[c] for r in rows if r["method"] == method])
                        for c in METRIC_COLUMNS} for method in kinds}
    methods = [_baseline_record(n) for n in names] + records
    notes += [f"{n}: {k} image(s) chose the grid's edge setting; the best may lie outside "
              f"its grid" for n, k in at_edge.items() if k]
    metrics = ("psnr", "psnr_y8") if task.kind == "sr" else ("psnr", "psnr_window")
    report = EvalReport(task.name, rows, summary, methods, definitions(task), volumes=volumes,
                        volume_summary={method: {c: summarize_values(
                            [r[c] for r in volumes if r["method"] == method])
                            for c in VOLUME_COLUMNS} for method in kinds} if volumes else {},
                        notes=notes, comparisons=compare_to_best(
                            rows, models=model_names, baselines=names, metrics=metrics))
    _write(report, out, kinds, shown, task, spec.describe(),
           None if spec.kind == "paired" else degradation.describe())
    return report


# -- private helpers, in call order -----------------------------------------------------


def _baseline_record(name: str) -> dict:
    """A baseline's entry in report.methods: how its strength was set."""
    if name not in GRID_BASELINES:
        return {"name": name, "kind": "baseline", "sigma": "true (from the target)"}
    return {"name": name, "kind": "baseline", "grid": list(GRIDS[name]),
            "setting": "oracle: the grid value with the best PSNR against the target, per "
                       + ("volume" if name == "gauss-best" else "image")}


def _refuse_existing(out: Path, overwrite: bool, figures: int) -> None:
    for key, name in REPORT_FILES.items():
        if key == "figure" and figures == 0:
            continue
        if (out / name).exists() and not overwrite:
            raise OutputExistsError(f"{out / name}: output exists (use --overwrite to replace it)")


def _figure_picks(pairs: list[VolumePair], count: int) -> dict[str, list[int]]:
    """{volume name: slice indices} of `count` images spread evenly over the data set."""
    flat = [(p.name, z) for p in pairs for z in range(p.target.num_slices)]
    if count <= 0:
        return {}
    picks: dict[str, list[int]] = {}
    for i in np.unique(np.linspace(0, len(flat) - 1, min(count, len(flat))).round().astype(int)):
        name, z = flat[i]
        picks.setdefault(name, []).append(z)
    return picks


def _tick(on_progress: ProgressFn | None, done: int, total: int) -> None:
    if on_progress is not None:
        on_progress(done, total)


def _image_rows(pair: VolumePair, outputs: dict[str, np.ndarray], seconds: dict[str, float],
                settings: dict[str, list[str]], task: TaskSpec,
                model_names: set[str]) -> list[dict]:
    rows = []
    Z = pair.target.num_slices
    for z in range(Z):
        target = pair.target.array[z]
        for method, volume in outputs.items():
            rows.append({"image": f"{pair.name}[{z}]", "method": method,
                         "kind": "model" if method in model_names else "baseline",
                         **image_metrics(volume[z], target, task=task),
                         "seconds": seconds[method] / Z,
                         "setting": settings[method][z] if method in settings else ""})
    return rows


def _volume_rows(pair: VolumePair, outputs: dict[str, np.ndarray]) -> list[dict]:
    """PET: activity.py's volume metrics of each method, hot spots found once per target."""
    spots = find_hot_spots(pair.target.array)
    return [{"volume": pair.name, "method": method,
             **volume_metrics(volume, pair.target.array, spots)}
            for method, volume in outputs.items()]


def _panels(pair: VolumePair, outputs: dict[str, np.ndarray], z: int, models: list[EvalModel],
            names: list[str]) -> dict[str, np.ndarray]:
    """Figure columns for one image: input, outputs (models, else the first non-input
    baseline), target, and the |error| map of each output shown."""
    shown = [m.name for m in models] or [n for n in names if n != "input"][:1] or names[:1]
    target = pair.target.array[z]
    panels = {"input": pair.input.array[z]}
    panels |= {name: outputs[name][z] for name in shown}
    panels["target"] = target
    for name in shown:
        panels[f"|err| {name}"] = np.abs(outputs[name][z].astype(np.float64)
                                         - target.astype(np.float64))
    return panels


def _write(report: EvalReport, out: Path, kinds: dict[str, str],
           shown: list[tuple[str, dict]], task: TaskSpec, data: dict,
           degradation: dict | None) -> None:
    """Write the four report files, each to a temp name then renamed into place."""
    from ratcli.io.atomic import atomic_output
    from ratcli.training.figure import save_figure
    from ratcli.training.report import (
        figure_display,
        write_image_csv,
        write_json,
        write_summary_csv,
    )

    window, error_top = figure_display(task, shown)
    writers = {
        "csv": lambda p: write_image_csv(p, report.rows),
        "summary": lambda p: write_summary_csv(p, report.summary, kinds),
        "json": lambda p: write_json(p, {
            "task": report.task, "data": data, "degradation": degradation,
            "methods": report.methods, "definitions": report.definitions,
            "display": {"window": window, "error_top": error_top},
            "summary": report.summary, "comparisons": report.comparisons,
            "images": report.rows,
            **({"notes": report.notes} if report.notes else {}),
            **({"volume_summary": report.volume_summary, "volumes": report.volumes}
               if report.volumes else {})}),
    }
    if shown:
        writers["figure"] = lambda p: save_figure(p, shown, window=window, error_top=error_top)
    for key, write in writers.items():
        with atomic_output(out / REPORT_FILES[key], overwrite=True) as tmp:
            write(tmp)
        report.files[key] = out / REPORT_FILES[key]

