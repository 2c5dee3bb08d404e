"""Finding inputs: a file or a folder tree -> one `Source` per image, series or slide.

DICOM files are recognised by their `DICM` preamble (any name, no extension needed) and
grouped into series by SeriesInstanceUID; everything else is recognised by suffix.
Only headers are read here; pixels are read later by `ratcli.io.read`.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from ratcli.errors import InputFormatError, InputNotFoundError
from ratcli.io import formats
from ratcli.io.atomic import is_temp_name
from ratcli.io.dicom_header import DicomHeader, read_header
from ratcli.io.inputs import Skipped, Source, is_dicom_file

__all__ = [
    "Source",
    "Skipped",
    "find_inputs",
    "scan_inputs",
    "input_problem",
    "group_dicom_files",
    "is_dicom_file",
    "is_slide",
    "output_suffix_for",
    "output_path_for",
]


def find_inputs(path: str | Path) -> list[Source]:
    """All restorable inputs at `path` (a file, or a folder searched recursively).

    Hidden files and folders (name starting with '.', rat's temp files included), files
    that are not images (by suffix, and no DICM preamble), DICOMDIR index files and DICOM
    objects that are not restorable images (see `scan_inputs`) are left out. A `.dcm`
    file without a readable header is still returned (as its own source) so reading it
    reports the problem.
    Raises InputNotFoundError for a missing path, or one with nothing restorable, and
    InputFormatError for a single file of an unsupported type.
    Returns sources sorted by `rel`.
    """
    root = Path(path)
    sources, skipped = scan_inputs(root)
    if not sources:
        raise InputNotFoundError(
            f"{root}: no restorable images found; skipped {len(skipped)} object(s), e.g. "
            f"{skipped[0].path.name}: {skipped[0].reason}"
        )
    return sources


def scan_inputs(path: str | Path) -> tuple[list[Source], list[Skipped]]:
    """(sources sorted by `rel`, skipped objects) at `path`, a file or a folder tree.

    Skipped, with the reason: rat's temp files given by name; DICOM objects that are not
    restorable cross-sections (no pixel rows: structured/dose reports, presentation
    states, RT structures, key objects; secondary captures and screen saves; localizer
    (scout) images; RT dose grids and portal images).
    Raises InputNotFoundError for a missing path or a folder with nothing of either
    kind, InputFormatError for a single file of an unsupported type.
    """
    root = Path(path)
    problem = input_problem(root)
    if problem is not None:
        raise (InputFormatError if root.exists() else InputNotFoundError)(problem)
    if root.is_file():
        if is_temp_name(root):
            return [], [Skipped(root, "a temp file of an interrupted rat run")]
        kind = _kind_of(root)
        if kind == "dicom":
            return group_dicom_files([root])
        return [Source(root, (root,), kind, Path(root.name))], []

    sources: list[Source] = []
    dicom: list[Path] = []
    files, links = _walk(root)
    for f in files:
        kind = _kind_of(f)
        if kind == "dicom":
            dicom.append(f)
        elif kind is not None:
            sources.append(Source(f, (f,), kind, _rel(f, root)))
    series, skipped = _group_series(dicom, root, taken={s.rel for s in sources})
    sources.extend(series)
    skipped = links + skipped
    if not sources and not skipped:
        raise InputNotFoundError(
            f"{root}: no readable images found (DICOM, NIfTI, PNG/TIFF/JPEG, whole-slide)"
        )
    return sorted(sources, key=lambda s: str(s.rel)), skipped


def input_problem(path: str | Path) -> str | None:
    """Why `path` cannot be an input, in scan_inputs' words: it is missing, or a file of
    no supported format (by suffix, then content: the format table's sniffers, which need
    no torch); None otherwise (a folder is not searched here)."""
    p = Path(path)
    if not p.exists():
        return f"{p}: no such file or folder"
    if p.is_file() and not is_temp_name(p) and _kind_of(p) is None:
        return f"{p}: not a supported image (DICOM, NIfTI, PNG/TIFF/JPEG, whole-slide)"
    return None


def group_dicom_files(files: list[Path]) -> tuple[list[Source], list[Skipped]]:
    """DICOM files given one by one (arguments, stdin lines) -> one Source per series
    (SeriesInstanceUID), however they were passed, plus the skipped non-image objects.

    A series of one file is that file (rel: its name); a larger one is the folder that
    holds its files (rel: the folder's name, with a series suffix when two series would
    share it, see _group_series).
    """
    return _group_series(files, None, taken=set())


def is_slide(path: str | Path) -> bool:
    """True for whole-slide formats: vendor suffixes, or a tiled TIFF that is larger
    than inputs.SLIDE_MIN_EDGE on a side or holds several resolution levels."""
    fmt = formats.format_for(path)
    return fmt is not None and fmt.kind == "slide"


def output_suffix_for(source: Source) -> str:
    """Suffix of the output for `source`: '' for a DICOM series folder, '.dcm' for a
    single DICOM file (one slice or multi-frame), the input's own NIfTI suffix, '.png'
    for PNG/JPEG, '.tif' for TIFF and whole-slide inputs."""
    return formats.output_suffix_for(source)


def output_path_for(source: Source, out_root: str | Path) -> Path:
    """`out_root / source.rel` with the input's suffix replaced by output_suffix_for."""
    rel = source.rel
    name = rel.name
    stem = name  # a series folder keeps its name (folder names may hold dots)
    if source.path in source.files:  # a file: strip its longest input suffix (.nii.gz)
        suffix = max((s for s in formats.input_suffixes() if name.lower().endswith(s)),
                     key=len, default="")
        stem = name[: len(name) - len(suffix)]
    return Path(out_root) / rel.parent / f"{stem}{output_suffix_for(source)}"


def _walk(root: Path) -> tuple[list[Path], list[Skipped]]:
    """(files under root in sorted order, links and folders not searched, with why).

    Hidden entries (rat's own .rat-tmp-* temp outputs included) and DICOMDIR indexes are
    left out. Symlinked folders are followed (their files keep the link's path, so the
    output mirrors it), and every real folder is searched once: a link to a folder inside
    `root` (searched under its own name), a second link to a folder searched already and
    a link loop are each skipped with a note, as are broken links and unreadable folders.
    """
    out: list[Path] = []
    skipped: list[Skipped] = []
    inside = root.resolve()
    searched: dict[tuple[int, int], Path] = {}

    def visit(folder: Path) -> None:
        searched[_folder_key(folder)] = folder
        try:
            entries = sorted(folder.iterdir())
        except OSError as exc:
            skipped.append(Skipped(folder, f"folder cannot be searched ({exc.strerror})"))
            return
        for p in entries:
            if p.name.startswith("."):
                continue
            if p.is_dir():
                why = _not_followed(p, inside, searched) if p.is_symlink() else None
                first = searched.get(_folder_key(p))
                if why is None and first is not None:  # a real folder reached via a link
                    why = f"the folder {first}, searched already"
                if why is not None:
                    skipped.append(Skipped(p, why))
                else:
                    visit(p)
            elif p.is_file():
                if p.name.upper() != "DICOMDIR":  # the index of a DICOM medium
                    out.append(p)
            elif p.is_symlink():
                skipped.append(Skipped(p, "a broken symbolic link"))

    visit(root)
    # A .vms slide index lists JPEG files beside it; they are part of the slide.
    vms_dirs = {p.parent for p in out if p.suffix.lower() == ".vms"}
    files = [p for p in out if not (p.parent in vms_dirs and p.suffix.lower() in (".jpg", ".jpeg"))]
    return files, skipped


def _not_followed(link: Path, inside: Path, searched: dict[tuple[int, int], Path]
                  ) -> str | None:
    """Why the symlinked folder `link` is not searched, or None to follow it."""
    target = link.resolve()
    if target == inside or inside in target.parents:
        return f"a link to {target}, inside the input folder and searched there"
    first = searched.get(_folder_key(target))
    if first is not None:
        return (f"a link to {target}, searched already as {first} (a link loop or a "
                "second link to it)")
    return None


def _folder_key(folder: Path) -> tuple[int, int]:
    info = folder.stat()
    return info.st_dev, info.st_ino


def _kind_of(p: Path) -> str | None:
    fmt = formats.format_for(p)
    return None if fmt is None else fmt.kind


def _rel(p: Path, root: Path) -> Path:
    return p.relative_to(root)


def _group_series(
    files: list[Path], root: Path | None, *, taken: set[Path]
) -> tuple[list[Source], list[Skipped]]:
    """DICOM files -> (one Source per SeriesInstanceUID, skipped non-image objects).
    Files with unreadable headers become Sources of their own.

    A series of one file is that file; a larger one is the folder that holds all its
    files. rel: relative to `root`, or (root None: files passed one by one) the file's
    or folder's own name. When several outputs would share a series' rel, each series
    gets a suffix `_s<SeriesNumber>` (or `_<uid hash>` when numbers clash or are missing).
    """
    by_uid: dict[str, list[Path]] = defaultdict(list)
    header_of: dict[str, DicomHeader] = {}
    singles: list[Source] = []
    skipped: list[Skipped] = []

    def single(f: Path, uid: str | None, modality: str) -> Source:
        return Source(f, (f,), "dicom", Path(f.name) if root is None else _rel(f, root),
                      uid, modality)

    for f in files:
        h = read_header(f)
        if h.skip:
            skipped.append(Skipped(f, h.skip))
        elif h.uid is None:
            singles.append(single(f, None, h.modality))
        else:
            by_uid[h.uid].append(f)
            header_of.setdefault(h.uid, h)

    bases: dict[Path, list[tuple[str, list[Path], Path]]] = defaultdict(list)
    for uid, group in by_uid.items():
        if len(group) == 1:
            singles.append(single(group[0], uid, header_of[uid].modality))
            continue
        folder = _common_folder(group)
        base = (Path(_folder_name(folder)) if root is None or folder == root
                else _rel(folder, root))
        bases[base].append((uid, group, folder))
    other_rels = taken | {s.rel for s in singles}
    out = list(singles)
    for base, members in bases.items():
        shared = len(members) > 1 or any(_is_within(r, base) for r in other_rels)
        numbers = [header_of[uid].number for uid, _, _ in members]
        unique = None not in numbers and len(set(numbers)) == len(numbers)
        for (uid, group, folder), number in zip(members, numbers, strict=True):
            rel = base
            if shared:
                rel = base.with_name(f"{base.name}_{_tag(uid, number if unique else None)}")
            out.append(Source(folder, tuple(group), "dicom", rel, uid,
                              header_of[uid].modality))
    return out, skipped


def _tag(uid: str, number: str | None) -> str:
    """Series-specific name suffix: s<SeriesNumber>, else a short hash of the UID."""
    return f"s{number}" if number is not None else hashlib.sha1(uid.encode()).hexdigest()[:8]


def _folder_name(folder: Path) -> str:
    return folder.name or folder.resolve().name


def _common_folder(files: list[Path]) -> Path:
    parents = [f.parent for f in files]
    common = parents[0]
    while not all(p == common or common in p.parents for p in parents):
        common = common.parent
    return common


def _is_within(rel: Path, base: Path) -> bool:
    return rel == base or base in rel.parents
