"""Integrity checks shared by the readers: a pixel limit applied to the header before
anything is decoded, and pixel data that must be as long as the header says.

    check_pixels(path, (z, y, x), max_pixels=None)   # ImageTooLargeError over the limit
    check_length(path, have=n_bytes, need=m_bytes)   # InputFormatError when cut short

The limit counts voxels (Z * Y * X; colour samples are not counted). It is, in order:
the reader's `max_pixels` keyword, the environment variable RAT_MAX_PIXELS, then
`DEFAULT_MAX_PIXELS`. 0 means no limit; a negative number is refused, from either place
(`max_pixels_limit`). Whole slides are not limited: they are read tile by tile.
"""

from __future__ import annotations

import os
from pathlib import Path

from ratcli.errors import ImageTooLargeError, InputFormatError, UsageError

__all__ = [
    "one_line",
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "max_pixels_limit",
    "check_pixels",
    "check_length",
]

# 2**29 voxels = 2 GiB as float32: room for a 1000 x 512 x 512 CT (2.6e8 voxels) or a
# 20000 x 20000 plain image (4e8), while a small file claiming 30000^2 (9e8) is refused.
DEFAULT_MAX_PIXELS = 1 << 29
MAX_PIXELS_ENV = "RAT_MAX_PIXELS"


def max_pixels_limit(max_pixels: int | None = None) -> int | None:
    """The limit in force: `max_pixels`, else RAT_MAX_PIXELS, else DEFAULT_MAX_PIXELS;
    None when it is 0 (no limit). UsageError naming --max-pixels or RAT_MAX_PIXELS for a
    negative or malformed value (one rule for both, so -5 never turns the limit off)."""
    where = f"--max-pixels {max_pixels}"
    if max_pixels is None:
        raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
        where = f"{MAX_PIXELS_ENV}={raw!r}"
        if raw:
            try:
                max_pixels = int(float(raw)) if "e" in raw.lower() else int(raw.replace("_", ""))
            except ValueError:
                raise UsageError(f"{MAX_PIXELS_ENV}={raw!r}: not a whole number of pixels "
                                 "(0 means no limit)") from None
        else:
            max_pixels = DEFAULT_MAX_PIXELS
    if max_pixels < 0:
        raise UsageError(f"{where}: must be a pixel count (0 = no limit)")
    return max_pixels or None


def check_pixels(path: str | Path, shape: tuple[int, ...], max_pixels: int | None = None) -> None:
    """Refuse an image whose header claims more voxels than the limit, before decoding.

    shape: the spatial sizes from the header, e.g. (frames, rows, columns)."""
    limit = max_pixels_limit(max_pixels)
    count = 1
    for n in shape:
        count *= max(int(n), 1)
    if limit is not None and count > limit:
        dims = " x ".join(str(int(n)) for n in shape)
        raise ImageTooLargeError(
            f"{path}: image of {dims} = {count:,} pixels is over the limit of {limit:,} "
            f"(raise it with --max-pixels or {MAX_PIXELS_ENV}, 0 = no limit)"
        )


def check_length(path: str | Path, *, have: int, need: int, what: str = "pixel data") -> None:
    """Refuse pixel data shorter than the header says (a truncated or cut-short file)."""
    if have < need:
        raise InputFormatError(
            f"{path}: truncated file: {what} holds {have:,} bytes, the header says {need:,}"
        )


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """A library's exception as one line for a user message (whitespace collapsed, at most
    `limit` characters); the exception's class name when it has no text."""
    return " ".join(str(exc).split())[:limit] or exc.__class__.__name__
