"""Options for running one batch as many processes (`--shard`, `--skip-existing`,
`--log`), shared by `rat denoise`, `rat sr` and `rat regions`, and `rat report`, which
sums the logs of a run's shards. See docs/cluster.md; the logic is in ratcli.shard and
ratcli.joblog. Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ratcli.cli.app import app, echo, emit_json, guard, json_option, note_line

__all__ = ["report", "shard_option", "skip_existing_option", "log_option", "cluster_options",
           "share_printer", "finish_shard"]


def shard_option() -> Any:
    return typer.Option(None, "--shard", metavar="I/N", help="Run the I-th of N shares of "
                        "the inputs, balanced by pixel count; every shard plans and checks "
                        "all outputs (default: from torchrun's RANK/WORLD_SIZE or a SLURM "
                        "array task, else everything; --shard 1/1 runs everything).")


def skip_existing_option() -> Any:
    return typer.Option(False, "--skip-existing", help="Keep outputs that are complete "
                        "(status exists) and restore the rest: rerun the same command to "
                        "finish a run that was stopped or killed.")


def log_option() -> Any:
    return typer.Option(None, "--log", "--job-log", metavar="PATH.jsonl", help="Append "
                        "every input's JSON record, with shard, host, device and seconds, "
                        "to this file ({shard} in it: the shard's number); sum logs with "
                        "`rat report`. Under torchrun write --job-log (torchrun takes --log "
                        "for its own --log-dir).")


def cluster_options(shard: str | None, skip_existing: bool, log: Path | None, *,
                    reads_stdin: bool = False) -> dict[str, Any]:
    """The library keywords for the three options (the shard from --shard, else from
    the environment). Raises UsageError for a bad --shard or environment, and for a
    list on stdin (`reads_stdin`) under torchrun, whose ranks all share one stdin."""
    from ratcli.errors import UsageError
    from ratcli.shard import resolve_shard

    found = resolve_shard(shard)
    if reads_stdin and found is not None and found.local_rank is not None:
        raise UsageError("-: under torchrun every rank reads the same stdin, so each would "
                         "get part of the list; give the paths or a folder as arguments")
    return {"shard": found, "skip_existing": skip_existing, "log": log}


def share_printer(quiet: bool) -> Any:
    """on_plan callback: one stderr line naming this shard's share, even when quiet
    (a share taken from the environment must never pass unnoticed); without a shard,
    the outputs --skip-existing kept, unless quiet."""

    def on_plan(plan: Any) -> None:
        share = plan.share
        if share is not None and (share.shard is not None or (share.exists and not quiet)):
            note_line(share.describe())

    return on_plan


def finish_shard(*, failed: bool) -> None:
    """At the end of a run under torchrun: a rank with failed inputs waits for the other
    ranks before it exits 1, since torchrun stops them all when one exits non-zero."""
    from ratcli.shard import torchrun_finished

    torchrun_finished(failed=failed)


@app.command()
def report(
    logs: list[Path] = typer.Argument(..., metavar="LOG...", show_default=False,
                                      help="Job logs written with --log (one per shard, "
                                           "or one shared)."),
    as_json: bool = json_option("One JSON object on stdout: done, exists, skipped, failed, "
                                "seconds, wall, to_rerun, ..."),
) -> None:
    """Sum the job logs of a run: done, exists, skipped, failed, time, and the failures
    to rerun. Exit 1 while a job's latest record is a failure."""
    with guard():
        from ratcli.joblog import summarize_logs

        summary = summarize_logs(logs)
        if as_json:
            emit_json(summary.to_dict())
        else:
            _print(summary)
    if summary.failures:
        raise typer.Exit(1)


def _print(summary: Any) -> None:
    c = summary.counts
    echo(f"{summary.lines} records: {c['ok']} done, {c['exists']} exists, {c['skipped']} "
         f"skipped, {c['error']} failed")
    wall = f", wall {summary.wall:.1f} s" if summary.wall is not None else ""
    where = (f" on {len(summary.shards)} shard(s)" if summary.shards else "") + (
        f", {len(summary.hosts)} host(s)" if summary.hosts else "")
    echo(f"time: {summary.seconds:.1f} s of work{wall}{where}")
    if summary.unreadable:
        echo(f"unreadable lines: {summary.unreadable} (a line cut short by a kill)")
    if summary.failures:
        echo(f"to rerun ({len(summary.failures)}; the same command with --skip-existing "
             "redoes these and anything not done):")
        for rec in summary.failures:
            echo(f"  {rec.get('input')}: {rec.get('error')}")
