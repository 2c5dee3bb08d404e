"""What the DICOM reader and the derived-series writer share: `DicomMeta` (the source
series kept in `Image.meta["dicom"]`), `rescale_of` (stored -> real values), and where
each DICOM frame lies: per-frame positions, orientations and pixel spacing
(classic single-frame, classic multi-frame and enhanced functional groups), and the
slice order and (spacing, origin, direction) of a series sorted along its normal, as
GDCM/SimpleITK do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ratcli.errors import GeometryMismatchError, InputFormatError

__all__ = ["DicomMeta", "Frame", "frames_of", "geometry", "off_grid_mm", "check_one_grid",
           "rescale_of"]

# Positions closer than this (mm) along the normal are "the same slice".
_SAME_POSITION_MM = 1e-3


@dataclass
class DicomMeta:
    """What the derived-series writer needs, stored in `Image.meta["dicom"]`.

    datasets: the source datasets (pixel data removed), in file order.
    files: their paths, same order.
    frames: for each output slice z (sorted by position), (dataset index, frame index).
    multiframe: True when the source is one multi-frame file.
    geometry: (spacing, origin, direction) as read, to tell whether an output grid
        still matches the source (then geometry tags are copied verbatim).
    off_grid_mm: how far the farthest slice lies from where that grid puts it (uneven
        gaps, gantry-tilt shear); the derived DICOM keeps every position, a format
        with one regular grid (NIfTI) cannot (`check_one_grid`).
    """

    datasets: list
    files: list[Path]
    frames: list[tuple[int, int]]
    multiframe: bool
    geometry: tuple
    off_grid_mm: float = 0.0


@dataclass
class Frame:
    """One 2D frame: where it is and how its stored values map to real values."""

    ds_index: int
    frame_index: int
    position: np.ndarray | None  # ImagePositionPatient (3,), mm
    orientation: np.ndarray | None  # ImageOrientationPatient (6,)
    pixel_spacing: tuple[float, float] | None  # (row spacing = y, column spacing = x), mm
    instance: int


def frames_of(ds, ds_index: int) -> list[Frame]:
    """Per-frame geometry of one dataset (enhanced functional groups, classic
    multi-frame offsets, or the single frame of a classic image)."""
    n = int(ds.get("NumberOfFrames") or 1)
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    top_iop = _floats(ds.get("ImageOrientationPatient"))
    top_ipp = _floats(ds.get("ImagePositionPatient"))
    top_ps = _floats(ds.get("PixelSpacing"))
    out: list[Frame] = []
    for i in range(n):
        groups = [g for g in (item_at(per_frame, i), shared) if g is not None]
        ipp = _from_groups(groups, "PlanePositionSequence", "ImagePositionPatient")
        iop = _from_groups(groups, "PlaneOrientationSequence", "ImageOrientationPatient")
        ps = _from_groups(groups, "PixelMeasuresSequence", "PixelSpacing")
        iop = iop if iop is not None else top_iop
        ps = ps if ps is not None else top_ps
        if ipp is None and top_ipp is not None:
            ipp = top_ipp + _frame_offset(ds, i, top_iop)
        out.append(Frame(
            ds_index=ds_index,
            frame_index=i,
            position=ipp,
            orientation=iop,
            pixel_spacing=None if ps is None else (float(ps[0]), float(ps[1])),
            instance=int(ds.get("InstanceNumber") or 0) * n + i,
        ))
    return out


def _frame_offset(ds, i: int, iop: np.ndarray | None) -> np.ndarray:
    """Offset of frame i from the top-level position for classic multi-frame images:
    RT dose GridFrameOffsetVector, else i * SpacingBetweenSlices along the normal."""
    if i == 0 or iop is None:
        return np.zeros(3)
    normal = np.cross(iop[:3], iop[3:])
    offsets = ds.get("GridFrameOffsetVector")
    if offsets is not None and len(offsets) > i:
        return normal * float(offsets[i])
    step = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0
    return normal * float(step) * i


def geometry(frames: list[Frame], first, label: Path):
    """Sort frames along the normal; return (order, spacing, origin, direction)."""
    iop = frames[0].orientation
    row = iop[:3] if iop is not None else np.array([1.0, 0.0, 0.0])
    col = iop[3:] if iop is not None else np.array([0.0, 1.0, 0.0])
    normal = np.cross(row, col)
    ps = frames[0].pixel_spacing
    if ps is None:
        imager = _floats(first.get("ImagerPixelSpacing"))
        ps = (1.0, 1.0) if imager is None else (float(imager[0]), float(imager[1]))
    if all(f.position is not None for f in frames):
        dist = np.array([float(np.dot(normal, f.position)) for f in frames])
        order = [int(k) for k in np.argsort(dist, kind="stable")]
        gaps = np.diff(dist[order])
        if gaps.size and gaps.min() < _SAME_POSITION_MM:
            k = int(np.argmin(gaps))
            raise InputFormatError(
                f"{label}: several slices at position {dist[order][k]:.3f} mm "
                "(more than one acquisition in the series?)"
            )
        origin = tuple(float(v) for v in frames[order[0]].position)
    else:
        order = sorted(range(len(frames)), key=lambda k: frames[k].instance)
        gaps = np.array([])
        origin = (0.0, 0.0, 0.0)
    if gaps.size:
        dz = float(np.median(gaps))
    else:
        dz = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    spacing = (float(ps[1]), float(ps[0]), dz)
    # SimpleITK direction: row-major 3x3 whose columns are the x, y, z axis vectors.
    direction = tuple(float(v) for v in np.column_stack([row, col, normal]).ravel())
    return order, spacing, origin, direction


def off_grid_mm(frames: list[Frame], order: list[int], spacing, origin, direction) -> float:
    """Largest distance (mm) of a slice position from origin + k * spacing_z * normal."""
    if any(f.position is None for f in frames):
        return 0.0
    normal = np.asarray(direction, dtype=float).reshape(3, 3)[:, 2]
    grid = np.asarray(origin) + np.outer(np.arange(len(order)), normal * spacing[2])
    actual = np.stack([frames[k].position for k in order])
    return float(np.linalg.norm(actual - grid, axis=1).max())


def check_one_grid(image, out: Path) -> None:
    """Refuse to write a DICOM-derived image whose slices lie off its regular grid (by
    more than 1 % of a slice gap) into a format that stores one grid: those slices
    would be put where they are not, silently."""
    meta = image.meta.get("dicom")
    if not isinstance(meta, DicomMeta) or image.num_slices != len(meta.frames):
        return
    off, dz = meta.off_grid_mm, float(meta.geometry[0][2])
    if off > 0.01 * dz + 1e-3:
        raise GeometryMismatchError(
            f"{out}: the source DICOM slices are not on one regular grid (a slice lies "
            f"{off:.2f} mm off it: uneven gaps or gantry tilt); write a DICOM output "
            "(a folder) to keep every slice position"
        )


def first_item(ds, keyword: str):
    seq = ds.get(keyword)
    return seq[0] if seq else None


def item_at(seq, i: int):
    return seq[i] if seq is not None and len(seq) > i else None


def _from_groups(groups: list, seq_kw: str, kw: str) -> np.ndarray | None:
    for g in groups:
        seq = g.get(seq_kw)
        if seq and seq[0].get(kw) is not None:
            return _floats(seq[0].get(kw))
    return None


def _floats(value) -> np.ndarray | None:
    if value is None or value == "":
        return None
    try:
        return np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None


def rescale_of(ds, i: int) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) for frame i: per-frame group, shared group,
    then top level, then (1, 0)."""
    groups = [
        g for g in (item_at(ds.get("PerFrameFunctionalGroupsSequence"), i),
                    first_item(ds, "SharedFunctionalGroupsSequence"))
        if g is not None
    ] + [ds]
    for g in groups:
        seq = g.get("PixelValueTransformationSequence")
        src = seq[0] if seq else g
        if src.get("RescaleSlope") is not None:
            return float(src.RescaleSlope), float(src.get("RescaleIntercept") or 0.0)
    return 1.0, 0.0
