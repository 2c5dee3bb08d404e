"""The table of file formats: how each one is recognised, read and written.

Each format module declares one `Format` as its module attribute `FORMAT`, and
`_MODULES` below lists those modules, so a new format is one new module plus one line
here. `register` / `unregister` add and remove a format at run time (plugins, tests).
Everything that needs to know about formats (input discovery, `io.read` / `io.write`,
output names, "is this an image suffix?") asks this table instead of keeping its own
suffix list:

    fmt = format_for(Path("scan.nii.gz"))     # Format "nifti", or None
    input_suffixes()                          # every suffix an input may have
    output_suffixes()                         # every suffix `io.write` takes
    output_suffix_for(source)                 # the output suffix for one input
    file_outputs("dicom")                     # suffixes one output file may have
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ratcli.errors import InputFormatError, UsageError

if TYPE_CHECKING:
    from ratcli.io.image import Image
    from ratcli.io.inputs import Source

__all__ = [
    "Format",
    "WriteFn",
    "register",
    "unregister",
    "all_formats",
    "format_for",
    "format_of_kind",
    "writer_for",
    "input_suffixes",
    "output_suffixes",
    "output_suffix_for",
    "file_outputs",
]

# Built-in format modules, in the order files are recognised (the first match wins):
# a tiled pyramid .tif is a slide before it is a plain TIFF, and a file without a known
# suffix is tried as DICOM last.
_MODULES = ("ratcli.io.nifti", "ratcli.io.wsi", "ratcli.io.plain", "ratcli.io.dicom")


class WriteFn(Protocol):
    """Write `image` to `path` atomically; returns the path written."""

    def __call__(self, image: Image, path: Path, *, overwrite: bool = False,
                 provenance: dict | None = None) -> Path: ...


@dataclass(frozen=True)
class Format:
    """One file format.

    name: what its reader puts in `Image.meta["format"]` (the table's key).
    kind: the `Source.kind` of its inputs ("dicom", "nifti", "image", "slide").
    label: how messages name it ("NIfTI").
    suffixes: lower-case input name endings, dot included (".nii.gz").
    read: (Source, max_pixels=None) -> Image (whole image in memory); max_pixels: the
        largest image it decodes (None: RAT_MAX_PIXELS or io.checks.DEFAULT_MAX_PIXELS).
    write: the writer, or None for a read-only format.
    output_suffix: suffix of the output written for an input of this format ("" = a
        folder), or a function of the Source when it depends on the input.
    writes: lower-case output name endings `write` takes.
    converts_to: names of other formats an input of this one may also be written as
        (a DICOM series as one NIfTI volume); see `file_outputs`.
    sniff: content test that recognises a file whatever its suffix (DICM preamble,
        tiled pyramid TIFF); None = by suffix only.
    own_images_only: the writer only writes images this format read (it copies their
        metadata), so it is not chosen for other images when another writer fits.
    writes_folders: the writer also takes a path without a known suffix (a series folder).
    open_stream: Source -> streaming reader, for inputs too large to read whole
        (whole slides; see `ratcli.io.wsi.SlideReader`); None when not streamed.
    write_stream: tiles -> file, the streaming writer matching `open_stream`.
    streams_source: Source -> bool, which of its inputs stream (None: all of them, when
        open_stream is set); the others are read whole (big RGB PNG/TIFF stream).
    """

    name: str
    kind: str
    label: str
    suffixes: tuple[str, ...]
    read: Callable[..., Image]
    write: WriteFn | None = None
    output_suffix: str | Callable[[Source], str] = ""
    writes: tuple[str, ...] = ()
    converts_to: tuple[str, ...] = ()
    sniff: Callable[[Path], bool] | None = None
    own_images_only: bool = False
    writes_folders: bool = False
    open_stream: Callable[[Source], Any] | None = None
    write_stream: Callable[..., Any] | None = None
    streams_source: Callable[[Source], bool] | None = None

    def matches(self, path: Path) -> bool:
        """True when `path` is a file of this format (by suffix, then content)."""
        return _ends_with(path, self.suffixes) or (self.sniff is not None and self.sniff(path))


def register(fmt: Format, *, first: bool = False) -> None:
    """Add `fmt` to the table (recognised after the built-ins, or before them with
    `first`). Raises UsageError when its name is taken."""
    table = _table()
    if any(f.name == fmt.name for f in table):
        raise UsageError(f"format {fmt.name!r} is already registered")
    table.insert(0, fmt) if first else table.append(fmt)


def unregister(name: str) -> None:
    """Remove the format called `name` (UsageError when there is none)."""
    table = _table()
    for i, f in enumerate(table):
        if f.name == name:
            del table[i]
            return
    raise UsageError(f"no format {name!r} is registered")


def all_formats() -> tuple[Format, ...]:
    """Every registered format, in recognition order."""
    return tuple(_table())


def format_for(path: str | Path) -> Format | None:
    """The format of the file at `path` (first match in table order), or None."""
    p = Path(path)
    return next((f for f in _table() if f.matches(p)), None)


def format_of_kind(kind: str, *, where: str | Path = "input") -> Format:
    """The format that reads Sources of `kind`; InputFormatError naming `where` when
    none does."""
    for f in _table():
        if f.kind == kind:
            return f
    raise InputFormatError(f"{where}: unknown input kind {kind!r} (no format reads it)")


def writer_for(image: Image, path: str | Path) -> Format:
    """The format `io.write(image, path)` uses.

    By the path's suffix; when several formats write it, the format that read the image
    wins (a slide stays a pyramid), else the first that writes any image. A path without
    a known suffix goes to the image's own format when that writes folders (a DICOM
    series). Raises UsageError naming every output suffix when nothing fits.
    """
    out = Path(path)
    own = _format_named(str(image.meta.get("format", "")))
    fits = [f for f in _table() if f.write is not None and _ends_with(out, f.writes)]
    if own in fits:
        return own
    general = [f for f in fits if not f.own_images_only]
    if general or fits:
        # With only an own-images writer left, it is called so that it can say why it
        # cannot write this image (e.g. DICOM output needs a DICOM input).
        return (general or fits)[0]
    if own is not None and own.write is not None and own.writes_folders:
        return own
    folders = " or ".join(f"a folder for a {f.label} series"
                          for f in _table() if f.writes_folders)
    raise UsageError(f"{out}: unknown output format; use one of "
                     f"{', '.join(output_suffixes())}" + (f" ({folders})" if folders else ""))


def input_suffixes() -> tuple[str, ...]:
    """Every input suffix the table knows, in table order, without repeats."""
    return _unique(s for f in _table() for s in f.suffixes)


def output_suffixes(*, any_image: bool = False) -> tuple[str, ...]:
    """Every suffix `io.write` takes; with `any_image`, only those of writers that
    take any image (not only images they read: label maps, overlays)."""
    return _unique(s for f in _table() if f.write is not None
                   and not (any_image and f.own_images_only) for s in f.writes)


def output_suffix_for(source: Source) -> str:
    """Suffix of the output for `source`: '' for a DICOM series folder, '.dcm' for a
    single DICOM file, the input's own NIfTI suffix, '.png' for PNG/JPEG, '.tif' for
    TIFF and whole-slide inputs (each format declares its own)."""
    suffix = format_of_kind(source.kind, where=source.path).output_suffix
    return suffix if isinstance(suffix, str) else suffix(source)


def file_outputs(kind: str, *, any_image: bool = False) -> tuple[str, ...]:
    """The suffixes one output file may have for an input of `kind` (else the output
    is a folder): the `writes` of the format that reads it and of the formats it
    `converts_to` (DICOM: .dcm, .nii, .nii.gz; NIfTI: .nii, .nii.gz; PNG/TIFF: .png,
    .tif, .tiff; slides: .tif, .tiff). any_image: only those a writer of any image
    takes (label maps and other images rat makes itself, not restored from the input)."""
    own = format_of_kind(kind)
    fits = [own, *(f for f in _table() if f.name in own.converts_to)]
    general = output_suffixes(any_image=True)
    return _unique(s for f in fits if f.write is not None for s in f.writes
                   if not any_image or s in general)


def _format_named(name: str) -> Format | None:
    """The format whose reader writes `name` into Image.meta["format"], or None."""
    return next((f for f in _table() if f.name == name), None)


_FORMATS: list[Format] | None = None


def _table() -> list[Format]:
    """The table, filled from _MODULES on first use (format modules import only numpy
    and rat itself at module level; their heavy libraries load when used)."""
    global _FORMATS
    if _FORMATS is None:
        _FORMATS = [importlib.import_module(m).FORMAT for m in _MODULES]
    return _FORMATS


def _ends_with(path: Path, suffixes: tuple[str, ...]) -> bool:
    return bool(suffixes) and path.name.lower().endswith(suffixes)


def _unique(items) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
