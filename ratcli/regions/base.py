"""What every region partitioner is, plus the small ones (`none`, precomputed maps).

A partitioner turns one 2D slice into an integer label map; pixels with equal labels
form one region for RAT's region attention. Label values carry no meaning beyond
equality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ratcli.errors import GeometryMismatchError, InputFormatError

__all__ = [
    "Partitioner",
    "NonePartitioner",
    "PrecomputedPartitioner",
    "to_uint8",
    "check_slice",
    "upscale_labels",
]


class Partitioner:
    """Base class: `partitioner(slice2d) -> (H, W) int32 labels`.

    slice2d: (H, W) float32 task-normalised greyscale (roughly [0, 1]) or (H, W, 3) uint8
    RGB. `name` and `settings` identify the method and every setting that changes its
    output (the region cache keys on them). `fallback` is None, or a one-line reason
    when `make_partitioner("auto")` had to choose the classical method instead of SAM
    (the CLI prints it as a warning; the library never prints). `one_region` is True
    when every slice is one region, so callers can skip partitioning altogether.
    """

    name: str = "base"
    fallback: str | None = None
    one_region: bool = False
    method: str | None = None  # what make_partitioner was asked for ("auto", ...)

    @property
    def settings(self) -> dict:
        return {}

    def __call__(self, slice2d: np.ndarray) -> np.ndarray:
        check_slice(slice2d)
        return self._partition(slice2d)

    def view(self, slice2d: np.ndarray) -> np.ndarray:
        """The slice as this method sees it, (H, W) or (H, W, 3) uint8: its first step,
        and what the region cache keys on (default: `to_uint8`)."""
        return to_uint8(slice2d)

    def for_task(self, task) -> Partitioner:
        """This partitioner for slices normalised by `task` (a TaskSpec, or None for
        unknown); methods whose view depends on the modality (LiteMedSAM's CT window)
        return a copy that knows it. Default: itself."""
        return self

    def partition_volume(self, volume: np.ndarray) -> np.ndarray:
        """Label every slice of `volume`: (Z, H, W) float32 or (Z, H, W, 3) uint8 ->
        (Z, H, W) int32. Subclasses batch slices where that is faster (SAM)."""
        return np.stack([self(s) for s in volume]).astype(np.int32, copy=False)

    def _partition(self, slice2d: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, {self.settings})"


class NonePartitioner(Partitioner):
    """One region per slice: region attention becomes global attention."""

    name = "none"
    one_region = True

    def _partition(self, slice2d: np.ndarray) -> np.ndarray:
        return np.zeros(slice2d.shape[:2], dtype=np.int32)


class PrecomputedPartitioner(Partitioner):
    """Label maps read from a file (NIfTI, TIFF, PNG, .npy), written e.g. by `rat regions`.

    The file holds (Z, H, W) or (H, W) integer labels. `partition_volume(volume)` needs
    the same Z, H, W. Called slice by slice (as inference does, in slice order), the
    k-th call returns slice k mod Z. A slice k times larger than the maps on both sides
    (super-resolution input upsampled by k) gets the maps upscaled (nearest neighbour).
    """

    name = "precomputed"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.labels = read_label_file(self.path)
        self._next = 0

    @property
    def settings(self) -> dict:
        return {"path": str(self.path)}

    def partition_volume(self, volume: np.ndarray) -> np.ndarray:
        if volume.shape[0] != self.labels.shape[0]:
            raise GeometryMismatchError(
                f"{self.path}: label maps are {_shape(self.labels.shape)}, "
                f"the image is {_shape(volume.shape[:3])}"
            )
        return np.stack([self._fit(self.labels[z], volume.shape[1:3], volume.shape[:3])
                         for z in range(volume.shape[0])])

    def _partition(self, slice2d: np.ndarray) -> np.ndarray:
        z = self._next % self.labels.shape[0]
        self._next += 1
        return self._fit(self.labels[z], slice2d.shape[:2], slice2d.shape[:2])

    def _fit(self, labels: np.ndarray, shape: tuple[int, ...], image: tuple) -> np.ndarray:
        """`labels` at `shape`: as is, or upscaled by an integer factor."""
        (h, w), (H, W) = labels.shape, shape
        k = H // h
        if (h * k, w * k) != (H, W) or k < 1:
            raise GeometryMismatchError(
                f"{self.path}: label maps are {_shape(self.labels.shape)}, "
                f"the image is {_shape(image)}"
            )
        return upscale_labels(labels, k)


def read_label_file(path: Path) -> np.ndarray:
    """(Z, H, W) int32 labels from .npy, or any image file `ratcli.io.read` accepts."""
    if not path.exists():
        raise InputFormatError(f"{path}: region map file not found")
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    else:
        from ratcli.io import read

        array = read(path).array
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or not np.allclose(array, np.rint(array)):
        raise InputFormatError(f"{path}: not an integer label map (shape {array.shape})")
    return np.rint(array).astype(np.int32)


def to_uint8(slice2d: np.ndarray, *, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Window a slice to uint8 for methods that want 8-bit images.

    (H, W, 3) uint8 passes through. (H, W) float: the [low, high] percentiles of its
    finite values map to [0, 255]; robust to a few extreme pixels (metal, hot spots).
    A flat slice becomes all zeros.
    """
    if slice2d.dtype == np.uint8:
        return slice2d
    a = np.nan_to_num(slice2d.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = np.percentile(a, [low, high])
    if hi - lo <= 1e-12:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.clip((a - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)


def check_slice(slice2d: np.ndarray) -> None:
    """Raise ValueError unless `slice2d` is (H, W) greyscale or (H, W, 3) uint8."""
    a = slice2d
    ok = a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3 and a.dtype == np.uint8)
    if not ok or min(a.shape[:2]) < 1:
        raise ValueError(f"a slice must be (H, W) greyscale or (H, W, 3) uint8, "
                         f"got {a.shape} {a.dtype}")


def upscale_labels(labels: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (..., H, W) labels to (..., H*scale, W*scale),
    for super-resolution models whose region map lives at output resolution."""
    if scale == 1:
        return labels
    return np.repeat(np.repeat(labels, scale, axis=-2), scale, axis=-1)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)
