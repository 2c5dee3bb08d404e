"""Checks of run options shared by the CLI (which runs them before importing torch or
numpy), `api.Session` and `inference.Restorer`, so that a bad value fails the same way
wherever it is given."""

from __future__ import annotations

from ratcli.errors import UsageError

__all__ = ["check_tiling"]


def check_tiling(tile: int | None, overlap: float | None, batch_size: int | None) -> None:
    """Tile edge in input pixels (None: the task's) at least 16, overlap a fraction of a
    tile in [0, 0.5] (None: the task's), batch size (tiles per forward pass; None:
    automatic) at least 1. Raises UsageError."""
    if tile is not None and tile < 16:
        raise UsageError(f"--tile {tile}: must be at least 16 pixels")
    if overlap is not None and not 0.0 <= overlap <= 0.5:
        raise UsageError(f"--overlap {overlap}: must be a fraction between 0 and 0.5")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be at least 1")
