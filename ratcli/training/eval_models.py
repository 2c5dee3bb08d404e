"""The checkpoints `rat evaluate` compares (ratcli.training.evaluate): loaded once,
named uniquely, each with its Restorer built on first use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ratcli.tasks import TaskSpec
from ratcli.training.baselines import BASELINES

if TYPE_CHECKING:
    from ratcli.inference import Restorer
    from ratcli.models import Checkpoint

__all__ = ["EvalModel", "load_model", "name_models"]


@dataclass
class EvalModel:
    """A checkpoint to evaluate; `restorer(device)` builds its Restorer once."""

    name: str
    path: Path
    checkpoint: Checkpoint
    regions: str
    task: TaskSpec
    _restorer: Restorer | None = None

    @property
    def raw_name(self) -> str:
        """Its raw network output's name (reported beside it when the task has a guard)."""
        return f"{self.name}-raw"

    def restorer(self, device: str) -> Restorer:
        if self._restorer is None:
            from ratcli.inference import Restorer
            from ratcli.regions import make_partitioner

            part = make_partitioner(self.regions, cache=True)
            model = self.checkpoint.build("cpu")
            # whole images in one tile: evaluation images are small and it is exact;
            # the task's guard is applied by the caller, which reports both outputs
            self._restorer = Restorer(model, self.task, tile=4096, overlap=0.0, batch_size=1,
                                      device=device, partitioner=part, guard=False)
        return self._restorer

    def records(self) -> list[dict]:
        """Report entries: the model (with the task's output guard) and, when there is
        a guard, its raw network output."""
        base = {"kind": "model", "weights": str(self.path), "sha256": self.checkpoint.sha256,
                "regions": self.regions,
                "provenance": self.checkpoint.meta.get("provenance", {}).get("data")}
        if not self.task.guard:
            return [{"name": self.name, **base}]
        return [{"name": self.name, "guard": self.task.guard, **base},
                {"name": self.raw_name, "guard": "none", **base}]


def load_model(weights: str | Path, task: TaskSpec, regions: str | None) -> EvalModel:
    from ratcli.models import load_checkpoint
    from ratcli.weights import resolve_weights

    path = resolve_weights(weights)
    ckpt = load_checkpoint(path)
    task.check_weights(ckpt)
    method = regions or ckpt.meta.get("regions") or "none"
    name = path.parent.name if path.name == "model.pt" else path.stem
    return EvalModel(name, path, ckpt, method, task)


def name_models(models: list[EvalModel]) -> None:
    """Make model names unique (and distinct from baseline names) by numbering repeats."""
    seen: dict[str, int] = {}
    for m in models:
        base = f"rat-{m.name}" if m.name in BASELINES else m.name
        seen[base] = seen.get(base, 0) + 1
        m.name = base if seen[base] == 1 else f"{base}-{seen[base]}"
