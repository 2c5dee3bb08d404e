"""The record of a batch run (`--log PATH.jsonl`) and its sum over shards (`rat report`).

    log = JobLog("logs/run-{shard}.jsonl", shard=shard, device="cuda:0", command="denoise")
    for result in log.record(results):   # writes each record, passes it on
        ...
    summary = summarize_logs(["logs/run-1.jsonl", "logs/run-2.jsonl"])

Each line is the job's `--json` record plus where and when it ran: shard ("I/N", None
without one), host, pid, device, command, and time (UTC, when the job ended). Lines
are appended, one `write` per line on a file opened for appending and locked while
writing, so shards may share one file on a local disk; on a network file system give
each shard its own file: `{shard}` in the path becomes the shard's number (1 .. N).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratcli.errors import InputNotFoundError, OutputNotWritableError

if TYPE_CHECKING:
    from ratcli.shard import Shard

__all__ = ["JobLog", "LogSummary", "summarize_logs", "STATUSES"]

# every status a job record can have, in the order a summary lists them
STATUSES = ("ok", "exists", "skipped", "error")


class JobLog:
    """Appends one JSON line per job to `path` (`{shard}` in it: the shard's number).

    shard: this process's shard (None: a plain run); device: where the jobs run;
    command: denoise, sr or regions. The file (and its folder) is created at once, so
    an unwritable log fails before any work (OutputNotWritableError).
    """

    def __init__(self, path: str | Path, *, shard: Shard | None = None, device: str = "cpu",
                 command: str = "") -> None:
        number = str(shard.index + 1) if shard is not None else "1"
        self.path = Path(str(path).replace("{shard}", number))
        self.fields = {"shard": shard.label if shard is not None else None,
                       "host": socket.gethostname(), "pid": os.getpid(),
                       "device": device, "command": command}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputNotWritableError(f"{self.path}: cannot write the log: "
                                         f"{exc.strerror or exc}") from None

    def write(self, record: dict[str, Any]) -> None:
        """Append `record` with this run's fields and the time."""
        line = {**record, **self.fields,
                "time": datetime.now(UTC).isoformat(timespec="milliseconds")}
        data = (json.dumps(line, default=str) + "\n").encode()
        _locked_append(self._fd, data)

    def record(self, results: Iterable[Any]) -> Iterator[Any]:
        """Write each result's `to_dict()` as it comes and pass the result on; closes
        the log at the end."""
        try:
            for result in results:
                self.write(result.to_dict())
                yield result
        finally:
            self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass
class LogSummary:
    """counts: lines per status (ok = done); seconds: the jobs' time summed; wall: from
    the first job's start to the last one's end (None without times); failures: the
    latest line of every job whose latest line is an error (one per input and output:
    those to rerun); logs, lines, unreadable: files and lines read, lines that were not
    JSON records (a line cut short); shards, hosts: the distinct values seen."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    seconds: float = 0.0
    wall: float | None = None
    failures: list[dict] = field(default_factory=list)
    logs: int = 0
    lines: int = 0
    unreadable: int = 0
    shards: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"done": self.counts["ok"], "exists": self.counts["exists"],
                "skipped": self.counts["skipped"], "failed": self.counts["error"],
                "jobs": self.lines, "seconds": round(self.seconds, 3),
                "wall": None if self.wall is None else round(self.wall, 3),
                "to_rerun": self.failures, "logs": self.logs, "unreadable": self.unreadable,
                "shards": self.shards, "hosts": self.hosts}


def summarize_logs(paths: Iterable[str | Path]) -> LogSummary:
    """Sum the job logs at `paths` (see LogSummary). Raises InputNotFoundError for a
    missing log."""
    summary = LogSummary()
    latest: dict[tuple, dict] = {}
    starts, ends = [], []
    records = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise InputNotFoundError(f"{p}: no such log file")
        summary.logs += 1
        for line in p.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                status = rec["status"]
            except (ValueError, KeyError, TypeError):
                summary.unreadable += 1
                continue
            records.append(rec)
            summary.lines += 1
            summary.counts[status] = summary.counts.get(status, 0) + 1
            summary.seconds += float(rec.get("seconds") or 0.0)
            end = _time(rec.get("time"))
            if end is not None:
                ends.append(end)
                starts.append(end - float(rec.get("seconds") or 0.0))
    for rec in sorted(records, key=lambda r: str(r.get("time") or "")):
        latest[(rec.get("input"), rec.get("output"))] = rec
    summary.failures = [r for r in latest.values() if r["status"] == "error"]
    summary.wall = max(ends) - min(starts) if ends else None
    summary.shards = sorted({str(r["shard"]) for r in records if r.get("shard")})
    summary.hosts = sorted({str(r["host"]) for r in records if r.get("host")})
    return summary


def _locked_append(fd: int, data: bytes) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: O_APPEND alone
        fcntl = None
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _time(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None
