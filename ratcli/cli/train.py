"""`rat train` and `rat evaluate`.

Both parse options, make one library call inside `guard()` (`Trainer.fit`,
`evaluate`) and report on stdout (a summary, or one JSON object with --json). Under
`torchrun` every rank runs this command; only rank 0 prints.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import typer

from ratcli.cli.app import (
    DeviceChoice,
    app,
    device_option,
    echo,
    emit_json,
    flag,
    guard,
    json_option,
    note_line,
    progress,
    quiet_option,
    state,
)
from ratcli.errors import UsageError

__all__ = ["train", "evaluate_command"]

# Settings a resumed run may change; everything else comes from the run's config.json.
RESUME_OVERRIDES = ("iters", "device", "workers", "val_every", "log_every")

_TASK = "ct | pet | sr (with --scale) | sr-x2 | sr-x4"
_DATA = ("DIR with low/ and full/ (paired), DIR of full-quality images (degraded by the "
         "simulator), or synthetic:ct|pet|he[,volumes=N][,slices=N][,size=N][,seed=N].")


def _opt(flag: str, text: str):
    """An option whose default None means "not given" (the config file or default wins)."""
    return typer.Option(None, flag, help=text)


_TRAIN_EPILOG = """
Defaults per task are the settings the shipped weights were trained with
(weights/recipes/TASK.toml, ratcli.training.config.RECIPE_DEFAULTS): width 16, lr 1e-3,
Adam betas (0.9, 0.999); ct: 5000 steps of 64-px patches with the input affine and
detail channel (input_shift 0.25, input_gain 4, input_detail 40); pet: 4000 steps of
64-px patches; sr-x2/sr-x4: 500 steps of 96-px patches, batch 4. --config and options
override them.
"""


@app.command(epilog=_TRAIN_EPILOG)
def train(
    task: str | None = _opt("--task", _TASK),
    data: str | None = _opt("--data", _DATA),
    val: str | None = _opt("--val", "Validation data (same forms as --data; default: hold "
                           "out the last 10% of volumes)."),
    scale: int | None = _opt("--scale", "SR factor for --task sr (2 or 4)."),
    width: int | None = _opt("--width", "Model width C (default: the task's recipe, 16)."),
    iters: int | None = _opt("--iters", "Optimiser steps (default: the task's recipe)."),
    batch_size: int | None = _opt("--batch-size", "Patches per step and process (default: "
                                  "the task's recipe)."),
    patch: int | None = _opt("--patch", "Target patch edge in pixels (default: the task's "
                             "recipe)."),
    lr: float | None = _opt("--lr", "Adam learning rate (default 1e-3), cosine decay to "
                            "1e-6."),
    focal_beta: float | None = _opt("--focal-beta", "Focal region loss beta (default 1.0); "
                                    "0 = L1."),
    regions: str | None = _opt("--regions", "none | classical | litemedsam | sam | auto (default "
                               "classical)."),
    region_attn: bool | None = _opt("--region-attn/--window-only", "Region attention, or "
                                    "window attention only (the ablation)."),
    context_slices: int | None = _opt("--context-slices", "2.5D: neighbouring slices on "
                                      "each side as extra input channels (CT/PET; default "
                                      "0 = 2D)."),
    dose: float | None = _opt("--dose", "Simulated dose fraction (default 0.25)."),
    photons: float | None = _opt("--photons", "CT: incident photons per ray at full dose "
                                 "(default 1e6)."),
    seed: int | None = _opt("--seed", "Seed of init, patches and simulation (default 0)."),
    val_every: int | None = _opt("--val-every", "Steps between validations (default: the "
                                 "task's recipe)."),
    log_every: int | None = _opt("--log-every", "Steps between log lines (default 50)."),
    workers: int | None = _opt("--workers", "DataLoader processes (default 0)."),
    device: DeviceChoice | None = _opt("--device", "auto (cuda, else mps, else cpu), cpu, "
                                       "cuda or mps (default auto)."),
    config: Path | None = _opt("--config", "TOML/JSON file of settings (keys as in "
                               "TrainConfig); options override it."),
    resume: Path | None = _opt("--resume", "Continue the run in this folder exactly where "
                               "its last.pt left off."),
    out: Path | None = typer.Option(None, "-o", "--output", "--out",
                                    help="Run folder (default runs/<task>)."),
    init: str | None = _opt("--init", "Start from these weights (path or manifest name) "
                            "instead of a fresh model: fine-tuning, e.g. rat-ct on your "
                            "scanner's data."),
    stop_at: int | None = _opt("--stop-at", "Stop at this step (saves last.pt; continue "
                               "later with --resume)."),
    overwrite: bool = flag("--overwrite", "Replace an earlier run in -o."),
    as_json: bool = json_option("Print one JSON object at the end."),
    quiet: bool = quiet_option(),
) -> None:
    """Train a RAT model (Adam, cosine decay, checkpoints, exact resume; torchrun for DDP)."""
    given = {k: v for k, v in dict(
        task=task, data=data, val=val, width=width, iters=iters, batch_size=batch_size,
        patch=patch, lr=lr, focal_beta=focal_beta, regions=regions, region_attn=region_attn,
        context_slices=context_slices, dose=dose, photons=photons, seed=seed,
        val_every=val_every, log_every=log_every, workers=workers,
        device=device and device.value, init=init).items() if v is not None}
    # under torchrun every rank runs this command; only rank 0 talks
    quiet = quiet or os.environ.get("RANK", "0") != "0"
    say = (lambda _msg: None) if quiet else note_line
    with guard():
        state.activity = "starting training"
        from ratcli.training.trainer import Trainer  # torch from here on

        cfg, run = _train_settings(given, scale=scale, config=config, resume=resume, out=out)
        with progress(disable=quiet) as bar:
            live = bar.live.is_started
            # from the first second: data loading can take minutes before step 1
            tid = bar.add_task(f"train {cfg.task}: loading data", total=None)
            if not live:
                say(f"train {cfg.task}: loading data ({cfg.data}) into {run}")
            state.activity = f"loading training data for {run}"
            started = time.monotonic()

            def on_progress(step: int, total: int, info: dict) -> None:
                state.activity = f"training {run} (step {step} of {total})"
                bar.update(tid, completed=step, total=total,
                           description=f"train {cfg.task}: loss {info['loss']:.4g}")
                if not live and (step % cfg.log_every == 0 or step in (1, total)):
                    say(f"step {step}/{total}  loss {info['loss']:.4g}  lr {info['lr']:.3g}  "
                        f"{time.monotonic() - started:.0f} s")

            trainer = Trainer(cfg, run, resume=resume is not None, overwrite=overwrite,
                              on_progress=on_progress, on_message=say)
            bar.update(tid, description=f"train {cfg.task}: step 1", total=cfg.iters)
            if not live:
                say(f"train {cfg.task}: data ready after {time.monotonic() - started:.0f} s; "
                    f"{cfg.iters} steps")
            try:
                result = trainer.fit(stop_at=stop_at)
            finally:
                trainer.close()
        state.activity = "finishing"
    if not trainer.ctx.is_main:
        return
    record = {"run": str(result.out), "step": result.step, "finished": result.finished,
              "best": result.best, "model": result.model and str(result.model),
              "sha256": result.sha256}
    if as_json:
        emit_json(record)
        return
    best = result.best or {}
    echo(f"run: {result.out} (step {result.step}/{cfg.iters})")
    if best:
        echo(f"best validation: step {best['step']}, loss {best['val_loss']:.5g}, "
             f"PSNR {best['val_psnr']:.2f} dB"
             + (f" (input {best['val_psnr_input']:.2f} dB)" if "val_psnr_input" in best
                else ""))
    if result.model:
        echo(f"model: {result.model}  sha256 {result.sha256}")


@app.command("evaluate")
def evaluate_command(
    task: str = typer.Option(..., "--task", help=_TASK, show_default=False),
    weights: list[str] = typer.Option([], "--weights", help="Checkpoint (path or manifest "
                                      "name); repeat to compare several."),
    data: str = typer.Option(..., "--data", help=_DATA, show_default=False),
    scale: int | None = typer.Option(None, "--scale", help="SR factor for --task sr."),
    out: Path | None = typer.Option(None, "-o", "--output", "--out", help="Report folder "
                                    "(default eval/<task>)."),
    baselines: str = typer.Option(
        "all", "--baselines", help="Comma list of input, nlm, tv, bm3d, tv-best, nlm-best, "
        "gauss-best, bm3d-best (denoising) or bicubic (SR); all (every one but bm3d-best); "
        "or none. nlm/tv/bm3d use the true noise sigma. The *-best ones are ORACLES that use "
        "the target: tv-best, nlm-best and bm3d-best take, per image, the strength (x sigma) "
        "with the best PSNR from a small grid; gauss-best (the clinical PET post-filter) the "
        "in-plane Gaussian FWHM (0-22.6 mm, image spacing) with the best mean PSNR per "
        "volume. No user can tune so: an upper bound for the classical filter. bm3d-best "
        "runs BM3D four times (about 2 minutes per 512^2 slice)."),
    regions: str | None = typer.Option(None, "--regions", help="Override each checkpoint's "
                                       "region method (none | classical | litemedsam | sam | "
                                       "auto)."),
    dose: float = typer.Option(0.25, "--dose", help="Simulated dose for single-quality data."),
    photons: float = typer.Option(1e6, "--photons", help="CT simulation: photons per ray at "
                                  "full dose."),
    sim_seed: int = typer.Option(99, "--sim-seed", help="Seed of the simulated degradation."),
    device: DeviceChoice = device_option(),
    figures: int = typer.Option(3, "--figures", help="Images in figure.png (0: none)."),
    overwrite: bool = flag("--overwrite", "Replace an earlier report."),
    allow_unpaired: bool = flag("--allow-unpaired", "Paired data (low/ + full/): leave out "
                                "files that have no partner, with a note (default: an error "
                                "naming each)."),
    noise: str = typer.Option("blind", "--noise", help="What noise-aware models are told: "
                              "blind (nothing, as `rat denoise`) or pair (each slice's added "
                              "noise std, as nlm/tv/bm3d are told it)."),
    as_json: bool = json_option("Print the summary as one JSON object."),
    quiet: bool = quiet_option(),
) -> None:
    """Evaluate models and classical baselines: PSNR/SSIM/RMSE per image and aggregated,
    and each model's paired difference to the best baseline (95 % CI, images ahead)."""
    with guard():
        state.activity = "starting the evaluation"
        from ratcli.tasks import get_task  # torch from here on
        from ratcli.training.config import resolve_task_name
        from ratcli.training.degrade import make_degradation
        from ratcli.training.evaluate import evaluate

        spec = get_task(resolve_task_name(task, scale))
        chosen = None if baselines == "all" else [
            b.strip() for b in baselines.split(",") if b.strip() and b.strip() != "none"]
        folder = out or Path("eval") / spec.name
        state.activity = f"evaluating into {folder}"
        with progress(disable=quiet) as bar:
            tid = bar.add_task(f"evaluate {spec.name}", total=None)
            report = evaluate(
                spec, weights=weights, data=data, out=folder,
                baselines=chosen, regions=regions, sim_seed=sim_seed, device=device.value,
                degradation=make_degradation(spec, dose=dose, photons=photons),
                figures=figures, overwrite=overwrite, allow_unpaired=allow_unpaired,
                noise=noise,
                on_progress=lambda done, total: bar.update(tid, completed=done, total=total))
        if not quiet:
            for note in report.notes:
                note_line(f"note: {note}")
        state.activity = "finishing"
    if as_json:
        emit_json({"task": report.task, "summary": report.summary,
                   "comparisons": report.comparisons,
                   **({"notes": report.notes} if report.notes else {}),
                   **({"volume_summary": report.volume_summary} if report.volumes else {}),
                   "files": {k: str(v) for k, v in report.files.items()}})
        return
    _print_table(report)


def _train_settings(given: dict, *, scale: int | None, config: Path | None,
                    resume: Path | None, out: Path | None) -> tuple[Any, Path]:
    """The run's TrainConfig and folder from options, a config file or a resumed run;
    a new run starts from its task's recipe defaults."""
    from ratcli.training.config import (
        RECIPE_DEFAULTS,
        TrainConfig,
        load_config_file,
        resolve_task_name,
    )

    if resume is not None:
        if config is not None or out is not None:
            raise UsageError("--resume continues a run in its own folder with its saved "
                             "settings; drop --config and --out")
        fixed = sorted(set(given) - set(RESUME_OVERRIDES))
        if fixed or scale is not None:
            raise UsageError(f"--resume keeps the run's settings; --{(fixed or ['scale'])[0]} "
                             f"cannot change (allowed: {', '.join(RESUME_OVERRIDES)})")
        saved = resume / "config.json"
        if not saved.is_file():
            raise UsageError(f"{resume}: not a training run (no config.json)")
        values = json.loads(saved.read_text())["config"] | given
        return TrainConfig.from_dict(values, source=str(saved)), resume
    values = (load_config_file(config) if config else {}) | given
    if scale is not None or values.get("task") == "sr":
        values["task"] = resolve_task_name(values.get("task", "sr"), scale)
    name = resolve_task_name(values.get("task", TrainConfig.task))
    values = RECIPE_DEFAULTS.get(name, {}) | values
    cfg = TrainConfig.from_dict(values, source=str(config or "options"))
    return cfg, out or Path("runs") / cfg.task


def _print_table(report: Any) -> None:
    """One row per metric, one column per method: mean ± std and the 95 % CI, on stdout."""
    from rich.console import Console
    from rich.table import Table

    columns = [c for c in report.definitions if not all(
        math.isnan(s[c]["mean"]) for s in report.summary.values())]
    kinds = {m["name"]: m["kind"] for m in report.methods}
    table = Table(title=f"rat evaluate: {report.task}, mean ± std [95% CI] over "
                        f"{next(iter(report.summary.values()))['psnr']['n']} images")
    table.add_column("metric")
    for method in report.summary:
        table.add_column(f"{method}\n({kinds[method]})", justify="right")
    for c in columns:
        label = c + ("\n(paper-style)" if c.endswith("_y8") else "")
        table.add_row(label, *(_fmt(stats[c]) for stats in report.summary.values()))
    # a pipe or file gets a wide table instead of one squeezed to 80 columns
    out = Console() if Console().is_terminal else Console(width=200)
    out.print(table)
    if report.volumes:  # PET: activity and hot-spot quantification per volume
        volumes = len(report.volumes) // len(report.volume_summary)
        vt = Table(title=f"PET quantification over {volumes} volume(s): minimum, changes "
                         "against the target in %, hot spots found in the target")
        vt.add_column("measure")
        for method in report.volume_summary:
            vt.add_column(method, justify="right")
        for c in next(iter(report.volume_summary.values())):
            vt.add_row(c, *(_fmt(stats[c]) for stats in report.volume_summary.values()))
        out.print(vt)
    if report.comparisons:
        out.print(_comparison_table(report.comparisons))
        if any(c["baseline"].endswith("-best") for c in report.comparisons):
            out.print("*-best baselines are oracles tuned on the target: upper bounds for "
                      "their filter", highlight=False, soft_wrap=True)
    for c in columns:
        out.print(f"{c}: {report.definitions[c]}", highlight=False, soft_wrap=True)
    for key, path in report.files.items():
        out.print(f"{key}: {path}", highlight=False, soft_wrap=True)


def _comparison_table(comparisons: list[dict]) -> Any:
    """Each model minus the best baseline (per metric and scope), paired over images."""
    from rich.table import Table

    table = Table(title="model - best baseline, paired over images: mean [95% CI]")
    for col in ("metric", "scope", "model", "best baseline (mean)", "model mean",
                "difference", "ahead/n"):
        table.add_column(col, justify="left" if col in ("metric", "scope") else "right")
    for c in comparisons:
        ci = ("" if math.isnan(c["ci95_low"])
              else f" [{c['ci95_low']:+.2f}, {c['ci95_high']:+.2f}]")
        table.add_row(c["metric"], c["scope"], c["model"],
                      f"{c['baseline']} {c['baseline_mean']:.2f}", f"{c['model_mean']:.2f}",
                      f"{c['mean']:+.2f}{ci}", f"{c['ahead']}/{c['n']}")
    return table


def _fmt(s: dict) -> str:
    if math.isnan(s["mean"]):
        return "-"
    digits = 4 if abs(s["mean"]) < 1.5 else 2
    text = f"{s['mean']:.{digits}f}"
    if not math.isnan(s["std"]):
        lo, hi = s["ci95_low"], s["ci95_high"]
        text += f" ± {s['std']:.{digits}f}\n[{lo:.{digits}f}, {hi:.{digits}f}]"
    return text
