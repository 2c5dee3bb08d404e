"""`rat train` and `rat evaluate`.

Both parse options, make one library call inside `guard()` (`Trainer.fit`,
`evaluate`) and report on stdout (a summary, or one JSON object with --json). Under
`torchrun` every rank runs this command; only rank 0 prints.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ratcli.cli.app import app, console, emit_json, guard, progress
from ratcli.errors import UsageError
from ratcli.training.config import TrainConfig, load_config_file, resolve_task_name

__all__ = ["train", "evaluate_command"]

# Settings a resumed run may change; everything else comes from the run's config.json.
RESUME_OVERRIDES = ("iters", "device", "workers", "val_every", "log_every")

_TASK = "ct | pet | sr (with --scale) | sr-x2 | sr-x4"
_DATA = ("DIR with low/ and full/ (paired), DIR of full-quality images (degraded by the "
         "simulator), or synthetic:ct|pet|he[,volumes=N][,slices=N][,size=N][,seed=N].")


def _opt(flag: str, text: str):
    """An option whose default None means "not given" (the config file or default wins)."""
    return typer.Option(None, flag, help=text)


@app.command()
def train(
    task: str | None = _opt("--task", _TASK),
    data: str | None = _opt("--data", _DATA),
    val: str | None = _opt("--val", "Validation data (same forms as --data; default: hold "
                           "out the last 10% of volumes)."),
    scale: int | None = _opt("--scale", "SR factor for --task sr (2 or 4)."),
    width: int | None = _opt("--width", "Model width C (default 32)."),
    iters: int | None = _opt("--iters", "Optimiser steps (default 20000)."),
    batch_size: int | None = _opt("--batch-size", "Patches per step and process (default 8)."),
    patch: int | None = _opt("--patch", "Target patch edge in pixels (default 128)."),
    lr: float | None = _opt("--lr", "Adam learning rate (default 2e-4), cosine decay to 1e-6."),
    focal_beta: float | None = _opt("--focal-beta", "Focal region loss beta (default 1.0); "
                                    "0 = L1."),
    regions: str | None = _opt("--regions", "none | classical | sam | auto (default "
                               "classical)."),
    region_attn: bool | None = _opt("--region-attn/--window-only", "Region attention, or "
                                    "window attention only (the ablation)."),
    dose: float | None = _opt("--dose", "Simulated dose fraction (default 0.25)."),
    photons: float | None = _opt("--photons", "CT: incident photons per ray at full dose "
                                 "(default 1e6)."),
    seed: int | None = _opt("--seed", "Seed of init, patches and simulation (default 0)."),
    val_every: int | None = _opt("--val-every", "Steps between validations (default 500)."),
    log_every: int | None = _opt("--log-every", "Steps between log lines (default 50)."),
    workers: int | None = _opt("--workers", "DataLoader processes (default 0)."),
    device: str | None = _opt("--device", "auto | cpu | cuda | mps (default auto)."),
    config: Path | None = _opt("--config", "TOML/JSON file of settings (keys as in "
                               "TrainConfig); options override it."),
    resume: Path | None = _opt("--resume", "Continue the run in this folder exactly where "
                               "its last.pt left off."),
    out: Path | None = _opt("--out", "Run folder (default runs/<task>)."),
    stop_at: int | None = _opt("--stop-at", "Stop at this step (saves last.pt; continue "
                               "later with --resume)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier run in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end."),
) -> None:
    """Train a RAT model (Adam, cosine decay, checkpoints, exact resume; torchrun for DDP)."""
    from ratcli.training.trainer import Trainer

    given = {k: v for k, v in dict(
        task=task, data=data, val=val, width=width, iters=iters, batch_size=batch_size,
        patch=patch, lr=lr, focal_beta=focal_beta, regions=regions, region_attn=region_attn,
        dose=dose, photons=photons, seed=seed, val_every=val_every, log_every=log_every,
        workers=workers, device=device).items() if v is not None}
    with guard():
        cfg, run = _train_settings(given, scale=scale, config=config, resume=resume, out=out)
        with progress() as bar:
            tid = bar.add_task("train", total=cfg.iters)
            trainer = Trainer(
                cfg, run, resume=resume is not None, overwrite=overwrite,
                on_progress=lambda step, total, info: bar.update(
                    tid, completed=step, description=f"train loss {info['loss']:.4g}"),
                on_message=lambda msg: console.print(msg, markup=False, highlight=False,
                                                     soft_wrap=True))
            try:
                result = trainer.fit(stop_at=stop_at)
            finally:
                trainer.close()
    if not trainer.ctx.is_main:
        return
    record = {"run": str(result.out), "step": result.step, "finished": result.finished,
              "best": result.best, "model": result.model and str(result.model),
              "sha256": result.sha256}
    if as_json:
        emit_json(record)
        return
    best = result.best or {}
    typer.echo(f"run: {result.out} (step {result.step}/{cfg.iters})")
    if best:
        typer.echo(f"best validation: step {best['step']}, loss {best['val_loss']:.5g}, "
                   f"PSNR {best['val_psnr']:.2f} dB"
                   + (f" (input {best['val_psnr_input']:.2f} dB)" if "val_psnr_input" in best
                      else ""))
    if result.model:
        typer.echo(f"model: {result.model}  sha256 {result.sha256}")


@app.command("evaluate")
def evaluate_command(
    task: str = typer.Option(..., "--task", help=_TASK),
    weights: list[str] = typer.Option([], "--weights", help="Checkpoint (path or manifest "
                                      "name); repeat to compare several."),
    data: str = typer.Option(..., "--data", help=_DATA),
    scale: int | None = typer.Option(None, "--scale", help="SR factor for --task sr."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Report folder "
                                    "(default eval/<task>)."),
    baselines: str = typer.Option("all", "--baselines", help="Comma list of input, nlm, tv, "
                                  "bm3d (denoising) or bicubic (SR); all; or none."),
    regions: str | None = typer.Option(None, "--regions", help="Override each checkpoint's "
                                       "region method (none | classical | sam | auto)."),
    dose: float = typer.Option(0.25, "--dose", help="Simulated dose for single-quality data."),
    photons: float = typer.Option(1e6, "--photons", help="CT simulation: photons per ray at "
                                  "full dose."),
    sim_seed: int = typer.Option(99, "--sim-seed", help="Seed of the simulated degradation."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps."),
    figures: int = typer.Option(3, "--figures", help="Images in figure.png (0: none)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier report."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Evaluate models and classical baselines: PSNR/SSIM/RMSE per image and aggregated."""
    from ratcli.tasks import get_task
    from ratcli.training.degrade import make_degradation
    from ratcli.training.evaluate import evaluate

    with guard():
        spec = get_task(resolve_task_name(task, scale))
        chosen = None if baselines == "all" else [
            b.strip() for b in baselines.split(",") if b.strip() and b.strip() != "none"]
        with progress() as bar:
            tid = bar.add_task("evaluate", total=None)
            report = evaluate(
                spec, weights=weights, data=data, out=out or Path("eval") / spec.name,
                baselines=chosen, regions=regions, sim_seed=sim_seed, device=device,
                degradation=make_degradation(spec, dose=dose, photons=photons),
                figures=figures, overwrite=overwrite,
                on_progress=lambda done, total: bar.update(tid, completed=done, total=total))
    if as_json:
        emit_json({"task": report.task, "summary": report.summary,
                   "files": {k: str(v) for k, v in report.files.items()}})
        return
    _print_table(report)


def _train_settings(given: dict, *, scale: int | None, config: Path | None,
                    resume: Path | None, out: Path | None) -> tuple[TrainConfig, Path]:
    """The run's TrainConfig and folder from options, a config file or a resumed run."""
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
    cfg = TrainConfig.from_dict(values, source=str(config or "options"))
    return cfg, out or Path("runs") / cfg.task


def _print_table(report) -> None:
    """One row per metric, one column per method: mean ± std and the 95 % CI, on stdout."""
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
    for c in columns:
        out.print(f"{c}: {report.definitions[c]}", highlight=False, soft_wrap=True)
    for key, path in report.files.items():
        out.print(f"{key}: {path}", highlight=False, soft_wrap=True)


def _fmt(s: dict) -> str:
    if math.isnan(s["mean"]):
        return "-"
    digits = 4 if abs(s["mean"]) < 1.5 else 2
    text = f"{s['mean']:.{digits}f}"
    if not math.isnan(s["std"]):
        lo, hi = s["ci95_low"], s["ci95_high"]
        text += f" ± {s['std']:.{digits}f}\n[{lo:.{digits}f}, {hi:.{digits}f}]"
    return text
