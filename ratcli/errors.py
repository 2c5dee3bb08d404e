"""User-facing failures. Each message names the file (or option) and the problem.

`cli.py` catches `RatError` once and prints its message as a single line; `--debug`
re-raises so the traceback is available.
"""

from __future__ import annotations

__all__ = [
    "RatError",
    "InputFormatError",
    "ImageTooLargeError",
    "InputNotFoundError",
    "GeometryMismatchError",
    "ChecksumError",
    "OutputExistsError",
    "OutputNotWritableError",
    "WeightsNotFoundError",
    "CheckpointError",
    "DownloadError",
    "DeviceError",
    "UsageError",
    "TaskMismatchError",
]


class RatError(Exception):
    """Base class for every error that is the user's input, not a bug in rat."""

    exit_code: int = 1


class UsageError(RatError):
    """Bad combination of options (exit code 2, like other usage errors)."""

    exit_code = 2


class TaskMismatchError(UsageError):
    """Weights that cannot run the chosen task (trained for another, other channels or
    scale), or a task the command cannot run; exit code 2 like other usage errors."""


class InputNotFoundError(RatError):
    """An input path does not exist or holds nothing rat can read."""


class InputFormatError(RatError):
    """A file exists but is not a readable image of a supported format."""


class ImageTooLargeError(InputFormatError):
    """An image's header claims more pixels than the pixel limit (checked before decoding)."""


class GeometryMismatchError(RatError):
    """Images or region maps that must share a grid do not."""


class ChecksumError(RatError):
    """A file's sha256 is not the one the manifest expects."""


class OutputExistsError(RatError):
    """The output exists and `--overwrite` was not given."""


class OutputNotWritableError(RatError):
    """The output location cannot be written."""


class WeightsNotFoundError(RatError):
    """A named or default checkpoint is not available locally."""


class CheckpointError(RatError):
    """A checkpoint file is not a valid rat checkpoint."""


class DownloadError(RatError):
    """A download failed (server down, HTTP error, connection lost); rerun to resume."""

    exit_code = 3


class DeviceError(RatError):
    """The compute device failed, e.g. out of memory even with the smallest tile."""
