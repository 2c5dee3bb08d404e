"""The run folder's metrics log, `metrics.jsonl`: one JSON object per line (training
steps and validations), written by the main process only."""

from __future__ import annotations

import json
from pathlib import Path

from ratcli.io.atomic import atomic_output

__all__ = ["RunLog"]


class RunLog:
    """metrics.jsonl in `folder`; a no-op on ranks other than the main one."""

    def __init__(self, folder: Path, *, enabled: bool = True) -> None:
        self.path = Path(folder) / "metrics.jsonl"
        self.enabled = enabled

    def append(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop lines written after the state being resumed (a crash left them)."""
        if not self.enabled or not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        keep = [ln for ln in lines if json.loads(ln)["step"] <= step]
        with atomic_output(self.path, overwrite=True) as tmp:
            tmp.write_text("".join(ln + "\n" for ln in keep))
