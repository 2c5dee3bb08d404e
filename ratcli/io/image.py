"""The one image type every format reader returns and every writer takes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

import numpy as np

__all__ = ["Image", "Domain"]


class Domain(StrEnum):
    """Intensity domain of `Image.array`."""

    HU = "HU"  # CT Hounsfield units, float32
    ACTIVITY = "activity"  # PET activity (Bq/ml or the file's own unit), float32
    RGB8 = "rgb-uint8"  # pathology / photographs, uint8 RGB
    GREY = "grey"  # any other greyscale intensity, float32


@dataclass
class Image:
    """Pixels plus geometry plus where they came from.

    array: (Z, Y, X) float32 for greyscale (Z = 1 for a 2D image), or (Z, Y, X, 3) uint8
        for RGB. Z runs along the acquisition (slice) axis.
    spacing: (x, y, z) in mm (SimpleITK order); microns-per-pixel / 1000 for slides.
    origin: (x, y, z) in mm, patient coordinates (LPS) of the first voxel's centre.
    direction: 3x3 direction cosines, row-major, SimpleITK order (columns = axis vectors).
    domain: intensity domain of the array.
    modality: DICOM-style modality code (CT, PT, SM, OT).
    meta: source metadata the writer of the same format needs for a faithful output
        (e.g. the pydicom datasets of a series, NIfTI header fields, slide properties).
    source: the path the image was read from.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    domain: Domain = Domain.GREY
    modality: str = "OT"
    meta: dict = field(default_factory=dict)
    source: Path | None = None

    def __post_init__(self) -> None:
        a = self.array
        if self.domain is Domain.RGB8:
            if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
                raise ValueError(f"RGB image must be (Z, Y, X, 3) uint8, got {a.shape} {a.dtype}")
        elif a.ndim != 3:
            raise ValueError(f"greyscale image must be (Z, Y, X), got shape {a.shape}")

    @property
    def is_rgb(self) -> bool:
        return self.domain is Domain.RGB8

    @property
    def num_slices(self) -> int:
        return self.array.shape[0]

    @property
    def size_yx(self) -> tuple[int, int]:
        return self.array.shape[1], self.array.shape[2]

    def derived(self, array: np.ndarray, scale: int = 1, **changes) -> Image:
        """A copy with new pixels; in-plane spacing divided by `scale`, origin moved so
        the new pixel grid covers the same physical extent."""
        sx, sy, sz = self.spacing
        spacing = (sx / scale, sy / scale, sz)
        origin = self.origin
        if scale != 1:
            d = np.asarray(self.direction, dtype=float).reshape(3, 3)
            # old pixel centre 0 sits at new index (scale - 1) / 2
            shift = -(scale - 1) / 2.0
            origin = tuple(np.asarray(self.origin) + d[:, 0] * shift * spacing[0]
                           + d[:, 1] * shift * spacing[1])
        return replace(self, array=array, spacing=spacing, origin=origin, **changes)
