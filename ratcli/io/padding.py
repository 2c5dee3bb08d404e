"""Padding outside the field of view: which pixels it is, what the network sees there,
and putting the input's own values back afterwards.

Scanners fill the area outside the reconstruction circle with a padding value that is
not attenuation (-2000, -2048, -3024 HU, ...). Fed to a network as tissue it makes a
cliff of thousands of HU at the circle's edge, which changes the pixels inside it. The
rule, the same for every format and for the region partitioner:

- padding is every pixel the DICOM tags name (PixelPaddingValue, or the range from it to
  PixelPaddingRangeLimit, both in stored values, mapped through the frame's rescale);
- and, for tasks with `TaskSpec.padding_below` (CT: -1024 HU), a region of one constant
  value below it that touches the slice border (the fill outside the circle, with or
  without the tag; NIfTI has no tag). Scattered noisy air pixels below -1024 HU, common
  in low-dose scans (5 % of the example slices), are not padding: they are denoised;
- the network sees `TaskSpec.padding_fill` there (CT: air, -1000 HU), and the output
  gets the input's padding pixels back exactly, so a writer stores the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ratcli.io.dicom_geometry import DicomMeta, rescale_of

if TYPE_CHECKING:
    from ratcli.io.image import Image
    from ratcli.tasks import TaskSpec

__all__ = ["Padding", "find_padding", "restate_padding", "PADDING_TAGS"]

PADDING_TAGS = ("PixelPaddingValue", "PixelPaddingRangeLimit")

# A constant-valued border region smaller than this (pixels) is not taken for padding.
MIN_REGION = 64


@dataclass(frozen=True)
class Padding:
    """The padding pixels of one image.

    mask: (Z, Y, X) bool, True where a pixel is padding (never empty).
    fill: the value the network sees there, in the image's units.
    """

    mask: np.ndarray
    fill: float

    def filled(self, array: np.ndarray) -> np.ndarray:
        """array: (Z, Y, X) float32 -> a copy with `fill` at the padding pixels."""
        return np.where(self.mask, np.float32(self.fill), array).astype(array.dtype, copy=False)

    def put_back(self, restored: np.ndarray, original: np.ndarray) -> np.ndarray:
        """restored, original: (Z, Y, X), same grid -> restored with the original's
        padding pixels, exactly (in place; returned)."""
        np.copyto(restored, original, where=self.mask, casting="unsafe")
        return restored


def find_padding(image: Image, task: TaskSpec) -> Padding | None:
    """The padding of a greyscale image restored by `task` (see the module docstring),
    or None when it has none. RGB images and super-resolution (a new grid) have none."""
    if image.is_rgb or task.scale != 1:
        return None
    array = image.array
    mask = np.zeros(array.shape, dtype=bool)
    meta = image.meta.get("dicom")
    if isinstance(meta, DicomMeta) and len(meta.frames) == image.num_slices:
        for z, (ds_index, frame) in enumerate(meta.frames):
            bounds = _padding_range(meta.datasets[ds_index], frame)
            if bounds is not None:
                mask[z] |= (array[z] >= bounds[0]) & (array[z] <= bounds[1])
    if task.padding_below is not None:
        for z in range(image.num_slices):
            mask[z] |= _fill_outside(array[z], task.padding_below)
    return Padding(mask, task.padding_fill) if mask.any() else None


def restate_padding(ds, src, rescale: tuple[float, float], stored_range: tuple[int, int]
                    ) -> None:
    """Set the padding tags of derived dataset `ds` (a copy of `src`) for the output's
    rescale (slope, intercept): each tag's real value (frame 0) as the stored value the
    writer quantises it to, so the padding pixels (kept exactly by the restorer) still
    carry it; the same values when the rescale is the source's. Tags whose value falls
    outside `stored_range` (lowest, highest), or that cannot be read, are removed."""
    present = [kw for kw in PADDING_TAGS if kw in ds]
    if not present:
        return
    slope, intercept = rescale
    src_slope, src_intercept = rescale_of(src, 0)
    for kw in present:
        try:
            real = np.float32(np.float64(int(src.get(kw))) * src_slope + src_intercept)
        except (TypeError, ValueError):
            real = None
        stored = None if real is None else int(np.rint((np.float64(real) - intercept) / slope))
        if stored is None or "ModalityLUTSequence" in src or not (
                stored_range[0] <= stored <= stored_range[1]):
            for k in present:
                del ds[k]
            return
        ds[kw].value = stored


def _padding_range(ds, frame: int = 0) -> tuple[np.float32, np.float32] | None:
    """(lowest, highest) real value of the padding a DICOM dataset's tags name for
    `frame`, computed as the reader rescales pixels (float64, then float32) so that
    padding pixels compare equal; None without PixelPaddingValue or with a modality LUT
    (whose stored -> real mapping is not a rescale)."""
    value = ds.get("PixelPaddingValue")
    if value is None or "ModalityLUTSequence" in ds:
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    try:
        stored = [int(value), int(value if limit is None else limit)]
    except (TypeError, ValueError):  # an unreadable (e.g. multi-valued) tag names nothing
        return None
    slope, intercept = rescale_of(ds, frame)
    real = sorted(np.float32(np.float64(v) * slope + intercept) for v in stored)
    return real[0], real[1]


def _fill_outside(slice2d: np.ndarray, below: float) -> np.ndarray:
    """(Y, X) bool: pixels below `below` in regions that touch the border and hold one
    value on at least MIN_REGION pixels (the constant fill outside the field of view;
    noise below `below` at the circle's edge joins such a region but is not its value)."""
    from scipy import ndimage

    low = slice2d < below
    border = np.zeros_like(low)
    border[[0, -1], :] = border[:, [0, -1]] = True
    if not (low & border).any():
        return np.zeros_like(low)
    labels, _ = ndimage.label(low, structure=np.ones((3, 3), dtype=bool))
    touching = np.unique(labels[border & low])
    outside = np.isin(labels, touching)
    values, counts = np.unique(slice2d[outside], return_counts=True)
    fills = values[counts >= MIN_REGION]
    return outside & np.isin(slice2d, fills) if fills.size else np.zeros_like(low)
