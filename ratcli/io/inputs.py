"""What an input is, and the content tests that recognise a file whatever its name.

A leaf below both the format table (`ratcli.io.formats`, whose DICOM and slide entries
sniff with `is_dicom_file` / `is_tiled_pyramid`) and input discovery
(`ratcli.io.sources`, which builds `Source`s by asking the table), so neither of those
imports the other's dependents back:

    Source(path, files, kind, rel)       # one image, series or slide to restore
    is_dicom_file(path)                  # 'DICM' at byte 128
    is_tiled_pyramid(path)               # a .tif/.tiff that is a whole slide
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ratcli.io.image import Image

__all__ = ["Source", "Skipped", "is_dicom_file", "is_tiled_pyramid", "for_writer",
           "SLIDE_MIN_EDGE"]

# A .tif/.tiff is a slide when tiled and either this large or multi-resolution.
SLIDE_MIN_EDGE = 4096


@dataclass(frozen=True)
class Source:
    """One input to restore.

    path: the file, or the series folder (DICOM series of several files).
    files: every file that makes up the input, in discovery order (the DICOM reader
        sorts slices by position itself).
    kind: "dicom" | "nifti" | "image" | "slide".
    rel: where the output goes relative to the output root: the path relative to the
        searched root (a file or series passed directly -> its own name); a series
        sharing its folder with other outputs gets a series-specific suffix.
    series_uid: SeriesInstanceUID for DICOM sources (None when the header is unreadable).
    modality: DICOM Modality for DICOM sources ("OT" when absent; None otherwise).
    """

    path: Path
    files: tuple[Path, ...]
    kind: str
    rel: Path
    series_uid: str | None = None
    modality: str | None = None


@dataclass(frozen=True)
class Skipped:
    """An object found among the inputs that is not a restorable image (a localizer, a
    dose report, a secondary capture, rat's own temp file, a symlink not followed, ...)
    and why."""

    path: Path
    reason: str


def for_writer(image: Image, source: Source) -> Image:
    """`image` (read from `source`, or made from it) as its writer should see it: a
    series forgets its folder, so the writer checks the output against the series' files
    only. The batch plan refused outputs inside folders given as inputs already; files
    named one by one may write beside themselves (`-o denoised` in the series folder)."""
    return replace(image, source=None) if len(source.files) > 1 else image


def is_dicom_file(path: str | Path) -> bool:
    """True when the file carries the DICOM Part 10 preamble ('DICM' at byte 128)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_tiled_pyramid(path: str | Path) -> bool:
    """True for a .tif/.tiff that is a whole slide: tiled, and larger than
    SLIDE_MIN_EDGE on a side or holding several resolution levels."""
    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff"):
        return False
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            page = tif.pages.first
            if not page.is_tiled:
                return False
            if max(page.shape[:2]) > SLIDE_MIN_EDGE or len(tif.series[0].levels) > 1:
                return True
            # A generic pyramid: further tiled pages, each smaller than level 0.
            for i in range(1, min(len(tif.pages), 4)):
                pg = tif.pages[i]
                if pg.is_tiled and pg.shape[0] < page.shape[0]:
                    return True
            return False
    except Exception:
        # Unreadable TIFFs are reported by the plain-image reader, which names the problem.
        return False
