"""Tissue vs glass on a slide thumbnail, so background tiles can skip the model."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["tissue_mask", "TissueMap"]


def tissue_mask(rgb: np.ndarray, *, min_saturation: float = 0.07, max_grey: float = 215.0,
                min_grey: float = 20.0, grow: int = 2) -> np.ndarray:
    """(h, w, 3) uint8 thumbnail -> (h, w) bool, True where there is tissue.

    Stained tissue is coloured (HSV saturation above `min_saturation`) or darker than
    glass (mean grey below `max_grey`); near-black pixels (labels, scanner padding)
    are not tissue. The mask grows by `grow` thumbnail pixels so tissue edges that
    the thumbnail blurs still go through the model.
    """
    a = rgb.astype(np.float32)
    hi, lo = a.max(axis=-1), a.min(axis=-1)
    saturation = (hi - lo) / np.maximum(hi, 1.0)
    grey = a.mean(axis=-1)
    mask = ((saturation > min_saturation) | (grey < max_grey)) & (grey > min_grey)
    if grow:
        mask = ndimage.binary_dilation(mask, iterations=grow)
    return mask


class TissueMap:
    """A thumbnail tissue mask answering "any tissue in this level-0 rectangle?".

    mask: (h, w) bool over the whole slide; width, height: level-0 size in pixels.
    """

    def __init__(self, mask: np.ndarray, *, width: int, height: int) -> None:
        self.mask = mask
        self.fy = mask.shape[0] / height
        self.fx = mask.shape[1] / width

    def any(self, x: int, y: int, w: int, h: int) -> bool:
        """True when the level-0 rectangle touches a tissue pixel of the thumbnail."""
        y0, y1 = int(y * self.fy), int(np.ceil((y + h) * self.fy))
        x0, x1 = int(x * self.fx), int(np.ceil((x + w) * self.fx))
        return bool(self.mask[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)].any())

    @property
    def fraction(self) -> float:
        return float(self.mask.mean())
