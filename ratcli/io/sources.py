"""Finding inputs: a file or a folder tree -> one `Source` per image, series or slide.

DICOM files are recognised by their `DICM` preamble (any name, no extension needed) and
grouped into series by SeriesInstanceUID; everything else is recognised by suffix.
Only headers are read here; pixels are read later by `ratcli.io.read`.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ratcli.errors import InputFormatError, InputNotFoundError
from ratcli.io import formats

__all__ = [
    "Source",
    "find_inputs",
    "is_dicom_file",
    "is_slide",
    "output_suffix_for",
    "output_path_for",
    "SLIDE_SUFFIXES",
]

SLIDE_SUFFIXES = frozenset(formats.format_of_kind("slide").suffixes)
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
    """

    path: Path
    files: tuple[Path, ...]
    kind: str
    rel: Path
    series_uid: str | None = None


def find_inputs(path: str | Path) -> list[Source]:
    """All restorable inputs at `path` (a file, or a folder searched recursively).

    Hidden files and folders (name starting with '.') and files that are not images
    (by suffix, and no DICM preamble) are skipped, as are DICOM objects that hold no
    image (no Rows: structured reports, RT structures, DICOMDIR, ...). A `.dcm` file
    without a readable header is still returned (as its own source) so reading it
    reports the problem.
    Raises InputNotFoundError for a missing path, or a folder with nothing readable,
    and InputFormatError for a single file of an unsupported type.
    Returns sources sorted by `rel`.
    """
    root = Path(path)
    if not root.exists():
        raise InputNotFoundError(f"{root}: no such file or folder")
    if root.is_file():
        kind = _kind_of(root)
        if kind is None:
            raise InputFormatError(
                f"{root}: not a supported image (DICOM, NIfTI, PNG/TIFF/JPEG, whole-slide)"
            )
        if kind == "dicom":
            return [Source(root, (root,), "dicom", Path(root.name), _series_uid(root))]
        return [Source(root, (root,), kind, Path(root.name))]

    files = _walk(root)
    sources: list[Source] = []
    dicom: list[Path] = []
    for f in files:
        kind = _kind_of(f)
        if kind == "dicom":
            dicom.append(f)
        elif kind is not None:
            sources.append(Source(f, (f,), kind, _rel(f, root)))
    series, not_images = _group_series(dicom, root, taken={s.rel for s in sources})
    sources.extend(series)
    if not sources:
        skipped = ""
        if not_images:
            skipped = (f"; skipped {len(not_images)} DICOM file(s) without an image, "
                       f"e.g. {_rel(not_images[0], root)}")
        raise InputNotFoundError(
            f"{root}: no readable images found (DICOM, NIfTI, PNG/TIFF/JPEG, whole-slide)"
            f"{skipped}"
        )
    return sorted(sources, key=lambda s: str(s.rel))


def is_dicom_file(path: str | Path) -> bool:
    """True when the file carries the DICOM Part 10 preamble ('DICM' at byte 128)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_slide(path: str | Path) -> bool:
    """True for whole-slide formats: vendor suffixes, or a tiled TIFF that is larger
    than SLIDE_MIN_EDGE on a side or holds several resolution levels."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return True
    if suffix not in (".tif", ".tiff"):
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


def output_suffix_for(source: Source) -> str:
    """Suffix of the output for `source`: '' for a DICOM series folder, '.dcm' for a
    single DICOM file (one slice or multi-frame), the input's own NIfTI suffix, '.png'
    for PNG/JPEG, '.tif' for TIFF and whole-slide inputs."""
    return formats.output_suffix_for(source)


def output_path_for(source: Source, out_root: str | Path) -> Path:
    """`out_root / source.rel` with the input's suffix replaced by output_suffix_for."""
    rel = source.rel
    name = rel.name
    if source.kind == "nifti" and name.lower().endswith(".nii.gz"):
        stem = name[: -len(".nii.gz")]
    elif source.kind == "dicom" and not source.path.is_file():
        stem = name  # a series folder: no suffix to strip (folder names may hold dots)
    else:
        stem = rel.stem if rel.suffix.lower() in formats.input_suffixes() else name
    return Path(out_root) / rel.parent / f"{stem}{output_suffix_for(source)}"


def _walk(root: Path) -> list[Path]:
    """Files under root, skipping hidden entries, sorted for a stable order."""
    out: list[Path] = []
    for p in sorted(root.rglob("*")):
        rel_parts = p.relative_to(root).parts
        if any(part.startswith(".") for part in rel_parts):
            continue
        if p.is_file():
            out.append(p)
    # A .vms slide index lists JPEG files beside it; they are part of the slide.
    vms_dirs = {p.parent for p in out if p.suffix.lower() == ".vms"}
    return [p for p in out if not (p.parent in vms_dirs and p.suffix.lower() in (".jpg", ".jpeg"))]


def _kind_of(p: Path) -> str | None:
    fmt = formats.format_for(p)
    return None if fmt is None else fmt.kind


def _rel(p: Path, root: Path) -> Path:
    return p.relative_to(root)


def _series_uid(f: Path) -> str | None:
    return _series_header(f)[0]


def _series_header(f: Path) -> tuple[str | None, str | None, bool]:
    """(SeriesInstanceUID, SeriesNumber, is_image) from the header; (None, None, True)
    if unreadable (so reading it reports the problem)."""
    import pydicom

    try:
        ds = pydicom.dcmread(
            f, stop_before_pixels=True,
            specific_tags=["SeriesInstanceUID", "SeriesNumber", "Rows"],
        )
    except Exception:
        return None, None, True
    uid, number = ds.get("SeriesInstanceUID"), ds.get("SeriesNumber")
    return (
        str(uid) if uid else None,
        None if number in (None, "") else str(number),
        "Rows" in ds,
    )


def _group_series(
    files: list[Path], root: Path, *, taken: set[Path]
) -> tuple[list[Source], list[Path]]:
    """DICOM files -> (one Source per SeriesInstanceUID, files skipped as non-images).
    Files with unreadable headers become Sources of their own.

    A series of one file is that file; a larger one is the folder that holds all its
    files. When several outputs would share that folder name, each series gets a
    suffix `_s<SeriesNumber>` (or `_<uid hash>` when numbers clash or are missing).
    """
    by_uid: dict[str, list[Path]] = defaultdict(list)
    number_of: dict[str, str | None] = {}
    singles: list[Source] = []
    not_images: list[Path] = []
    for f in files:
        uid, number, is_image = _series_header(f)
        if not is_image:
            not_images.append(f)
        elif uid is None:
            singles.append(Source(f, (f,), "dicom", _rel(f, root)))
        else:
            by_uid[uid].append(f)
            number_of.setdefault(uid, number)

    series: list[tuple[str, list[Path], Path]] = []
    for uid, group in by_uid.items():
        if len(group) == 1:
            singles.append(Source(group[0], (group[0],), "dicom", _rel(group[0], root), uid))
        else:
            series.append((uid, group, _common_folder(group)))

    folders = defaultdict(list)
    for uid, group, folder in series:
        folders[folder].append((uid, group))
    other_rels = taken | {s.rel for s in singles}
    out = list(singles)
    for folder, members in folders.items():
        base = _rel(folder, root) if folder != root else Path(root.resolve().name)
        shared = len(members) > 1 or any(_is_within(r, base) for r in other_rels)
        numbers = [number_of[uid] for uid, _ in members]
        unique = None not in numbers and len(set(numbers)) == len(numbers)
        for (uid, group), number in zip(members, numbers, strict=True):
            rel = base
            if shared:
                tag = f"s{number}" if unique else hashlib.sha1(uid.encode()).hexdigest()[:8]
                rel = base.with_name(f"{base.name}_{tag}")
            out.append(Source(folder, tuple(group), "dicom", rel, uid))
    return out, not_images


def _common_folder(files: list[Path]) -> Path:
    parents = [f.parent for f in files]
    common = parents[0]
    while not all(p == common or common in p.parents for p in parents):
        common = common.parent
    return common


def _is_within(rel: Path, base: Path) -> bool:
    return rel == base or base in rel.parents
