"""The training loop: data, model, Adam + cosine decay, checkpoints, exact resume, DDP.

    trainer = Trainer(TrainConfig(task="ct", data="synthetic:ct", iters=2000), "runs/ct")
    result = trainer.fit()          # -> TrainResult (final model path and sha256)
    trainer.close()

A run folder holds `config.json` (the settings), `metrics.jsonl` (one JSON object per
log line: training loss, learning rate and grad norm every `log_every` steps; validation
loss and PSNR every `val_every` steps), `last.pt` and `best.pt` (full training states,
see state.py; best = lowest validation loss, never test data), and when the run ends
`model.pt` (the best weights in the rat checkpoint format, with task, normalisation
and provenance in its meta) plus `model.pt.sha256`. Under torchrun only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from ratcli import __version__
from ratcli.errors import OutputExistsError, UsageError
from ratcli.inference.device import autocast, autocast_dtype, resolve_device
from ratcli.io.atomic import atomic_output
from ratcli.losses import focal_region_loss, overshoot_loss
from ratcli.models import build_rat, save_checkpoint
from ratcli.training.config import TrainConfig
from ratcli.training.data import load_pairs, parse_data_spec, split_pairs
from ratcli.training.distributed import barrier, init_distributed, shutdown, unwrap, wrap_model
from ratcli.training.patches import PatchDataset, TrainSlice, prepare_slices
from ratcli.training.runlog import RunLog
from ratcli.training.state import (
    capture_rng,
    init_from,
    load_state,
    restore_rng,
    save_state,
    seed_everything,
)
from ratcli.training.validate import validate

__all__ = ["Trainer", "TrainResult", "RUN_FILES", "ProgressFn"]

RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt", "model.pt", "model.pt.sha256")

# (step, total steps, {"loss": ..., "lr": ...}); called on rank 0 after every step
ProgressFn = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class TrainResult:
    """out: the run folder; step: steps done; finished: step == iters; best: the best
    validation record; model / sha256: the exported model (None until finished)."""

    out: Path
    step: int
    finished: bool
    best: dict | None
    model: Path | None
    sha256: str | None


class Trainer:
    """One training run of `config` in folder `out`.

    resume: continue from `out/last.pt` (exactly: same batches, same RNG, same schedule).
    overwrite: replace the run files of an earlier run in `out` (else OutputExistsError).
    on_progress: progress callback (rank 0 only); on_message: one-line notices (rank 0).
    """

    def __init__(
        self,
        config: TrainConfig,
        out: str | Path,
        *,
        resume: bool = False,
        overwrite: bool = False,
        on_progress: ProgressFn | None = None,
        on_message: Callable[[str], None] | None = None,
    ) -> None:
        self.config, self.out = config, Path(out)
        self.ctx, self.device = init_distributed(resolve_device(config.device))
        self.on_progress = on_progress if self.ctx.is_main else None
        self.on_message = (on_message or (lambda _msg: None)) if self.ctx.is_main else _silent
        self.log = RunLog(self.out, enabled=self.ctx.is_main)
        if not resume:
            # every rank checks, before anyone writes, so that all stop or none does
            self._check_out(overwrite)
        barrier(self.ctx)
        seed_everything(config.seed)
        self.region_method = config.regions
        self.data_record = self._load_data()
        model = build_rat(config.model_config())
        if config.init:
            init_from(model, config.init, config.model_config())
        elif config.identity_init:
            _zero_output_layer(model)
        self.model = wrap_model(model.to(self.device), self.ctx, self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr,
                                          betas=config.betas, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _cosine(config.lr_min / config.lr, config.iters))
        self.amp_dtype = autocast_dtype(self.device) if config.amp else None
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.step, self.best = 0, None
        if resume:
            self._resume()
        elif self.ctx.is_main:
            self._start_out()  # made only now that the data loaded without error
        barrier(self.ctx)

    def fit(self, stop_at: int | None = None) -> TrainResult:
        """Train until `config.iters` steps (or until step `stop_at`, for a run in chunks).

        Validates every `val_every` steps and at the end, saves `last.pt` after each
        validation and when stopping, `best.pt` on a new best validation loss, and exports
        `model.pt` once all `iters` steps are done.
        """
        cfg = self.config
        end = cfg.iters if stop_at is None else min(stop_at, cfg.iters)
        batches = self._batches(self.step)
        started = time.monotonic()
        while self.step < end:
            loss, grad_norm = self._train_step(next(batches))
            self.step += 1
            lr = self.scheduler.get_last_lr()[0]
            if self.step % cfg.log_every == 0 or self.step == end:
                loss = self._mean_across_ranks(loss)
                self.log.append({"step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                           "seconds": round(time.monotonic() - started, 3)})
            if self.on_progress is not None:
                self.on_progress(self.step, cfg.iters, {"loss": loss, "lr": lr})
            if self.step % cfg.val_every == 0 or self.step == cfg.iters:
                self._validate_and_save()
        if self.step % cfg.val_every and self.step != cfg.iters:
            self._save("last.pt")  # stopped between validations: keep the exact state
        finished = self.step >= cfg.iters
        model, sha = self._export() if finished else (None, None)
        barrier(self.ctx)
        return TrainResult(self.out, self.step, finished, self.best, model, sha)

    def close(self) -> None:
        """Leave the process group (distributed runs)."""
        shutdown(self.ctx)

    # -- set-up, in call order -----------------------------------------------------------

    def _check_out(self, overwrite: bool) -> None:
        existing = [name for name in RUN_FILES if (self.out / name).exists()]
        if existing and not overwrite:
            raise OutputExistsError(f"{self.out}: holds a training run ({existing[0]}); use "
                                    "--resume to continue it or --overwrite to start over")

    def _load_data(self) -> dict:
        """Build the patch dataset and validation slices; returns the provenance record."""
        cfg, spec = self.config, self.config.spec
        degradation = cfg.degradation()
        data = parse_data_spec(cfg.data)
        pairs = load_pairs(data, spec, degradation=degradation, seed=cfg.seed,
                           realizations=cfg.realizations)
        if cfg.val is None:
            train, val = split_pairs(pairs)
            val_record: dict = {"kind": "held-out", "volumes": [p.name for p in val]}
        else:
            train = pairs
            val_data = parse_data_spec(cfg.val)
            # a different simulation seed, so validation noise never equals training noise
            val = load_pairs(val_data, spec, degradation=degradation, seed=cfg.seed + 1)
            val_record = val_data.describe()
        # the task sets the partitioner's view (LiteMedSAM's CT window), as at inference
        kw = {"partitioner": self._partitioner().for_task(spec), "noise_source": cfg.noise_source,
              "context": cfg.context_slices}  # context: k 2.5D neighbours on each side
        self.train_slices = prepare_slices(train, spec, **kw)
        val_slices = prepare_slices(val, spec, **kw)
        keep = np.unique(np.linspace(0, len(val_slices) - 1, cfg.val_max).round().astype(int))
        self.val_slices: list[TrainSlice] = [val_slices[i] for i in keep]
        self.dataset = PatchDataset(
            self.train_slices, patch=cfg.patch, scale=spec.scale, seed=cfg.seed,
            length=max(len(self.train_slices), 256, cfg.batch_size * self.ctx.world_size))
        self.sampler = DistributedSampler(self.dataset, num_replicas=self.ctx.world_size,
                                          rank=self.ctx.rank, shuffle=True, seed=cfg.seed,
                                          drop_last=True)
        return {
            "train": {**data.describe(), "volumes": [p.name for p in train],
                      "slices": len(self.train_slices)},
            "val": {**val_record, "slices": len(self.val_slices)},
            "degradation": None if data.kind == "paired" else degradation.describe(),
            "regions": self.region_method,
        }

    def _partitioner(self):
        from ratcli.regions import make_partitioner

        part = make_partitioner(self.config.regions, cache=True)
        if part.fallback:
            self.on_message(part.fallback)
        self.region_method = part.name if hasattr(part, "name") else self.config.regions
        return part

    def _start_out(self) -> None:
        """Make the run folder, drop an overwritten run's files, write config.json."""
        self.out.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            (self.out / name).unlink(missing_ok=True)
        with atomic_output(self.out / "config.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps({"config": self.config.to_dict(),
                                       "data": self.data_record}, indent=2) + "\n")

    def _resume(self) -> None:
        state = load_state(self.out / "last.pt")
        saved = TrainConfig.from_dict(state["config"])
        if saved.model_config() != self.config.model_config():
            raise UsageError(f"{self.out / 'last.pt'}: the saved model differs from this config")
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.best = int(state["step"]), state["best"]
        restore_rng(state["rng"])
        if self.ctx.is_main:
            self.log.truncate_after(self.step)
            self.on_message(f"resumed {self.out} at step {self.step}")

    # -- the loop, in call order ---------------------------------------------------------

    def _batches(self, start: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """Batches from step `start` on; epoch and position follow from the step alone."""
        b = self.config.batch_size
        per_epoch = len(self.sampler) // b
        epoch, skip = divmod(start, per_epoch)
        while True:
            self.sampler.set_epoch(epoch)
            self.dataset.set_epoch(epoch)
            order = list(self.sampler)
            steps = [order[i * b:(i + 1) * b] for i in range(skip, per_epoch)]
            yield from DataLoader(self.dataset, batch_sampler=steps,
                                  num_workers=self.config.workers)
            epoch, skip = epoch + 1, 0

    def _train_step(self, batch: tuple[torch.Tensor, ...]) -> tuple[float, float]:
        inp, tgt, regions, noise = (t.to(self.device, non_blocking=True) for t in batch)
        self.model.train()
        with autocast(self.device, self.amp_dtype):
            pred = self.model(inp, regions, noise)
        loss = focal_region_loss(pred.float(), tgt, regions, beta=self.config.focal_beta)
        if self.config.overshoot_weight > 0:
            loss = loss + self.config.overshoot_weight * overshoot_loss(pred.float(), tgt)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach()), float(grad_norm)

    def _mean_across_ranks(self, value: float) -> float:
        if not self.ctx.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t) / self.ctx.world_size

    def _validate_and_save(self) -> None:
        if self.ctx.is_main:
            record = validate(unwrap(self.model), self.val_slices, task=self.config.spec,
                              device=self.device, dtype=self.amp_dtype)
            record = {"step": self.step, **record}
            self.log.append(record)
            improved = self.best is None or record["val_loss"] < self.best["val_loss"]
            if improved:
                self.best = record
            self._save("last.pt")
            if improved:
                with atomic_output(self.out / "best.pt", overwrite=True) as tmp:
                    shutil.copyfile(self.out / "last.pt", tmp)
        barrier(self.ctx)

    def _save(self, name: str) -> None:
        if not self.ctx.is_main:
            return
        save_state(self.out / name, {
            "config": self.config.to_dict(),
            "model_config": self.config.model_config().to_dict(),
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "step": self.step,
            "best": self.best,
            "rng": capture_rng(),
        })

    def _export(self) -> tuple[Path, str]:
        """model.pt from the best validation state, with provenance; returns (path, sha256)."""
        path = self.out / "model.pt"
        if not self.ctx.is_main:
            return path, ""
        best = load_state(self.out / "best.pt")
        cfg, spec = self.config, self.config.spec
        meta = {
            "task": spec.name,
            "normalisation": {"norm": str(spec.norm), "window": list(spec.window),
                              "percentile": spec.percentile},
            "regions": self.region_method,
            "provenance": {
                "data": self.data_record,
                "steps": self.step,
                "best_step": best["step"],
                "validation": self.best,
                "world_size": self.ctx.world_size,
                "train_config": cfg.to_dict(),
                "rat_version": __version__,
                "torch_version": str(torch.__version__),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        }
        sha = save_checkpoint(path, best["model"], cfg.model_config(), meta)
        with atomic_output(self.out / "model.pt.sha256", overwrite=True) as tmp:
            tmp.write_text(f"{sha}  model.pt\n")
        return path, sha


def _cosine(floor: float, iters: int) -> Callable[[int], float]:
    """LR factor at step s: cosine from 1 at s = 0 down to `floor` at s = iters."""
    return lambda s: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * s / iters))


def _zero_output_layer(model: torch.nn.Module) -> None:
    """Zero the head conv: with the global residual the network starts as the identity
    (NAFBlocks and RAT layers start as identities through their zero-initialised residual
    scales), so early training refines the input, not the noise of a random head."""
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)


def _silent(_message: str) -> None:
    pass
