"""2.5D input: which slices of a volume make up each slice's input.

A model with `RATConfig.context_slices = k` restores slice z from slices z-k .. z+k,
stacked as channels (`RegionAttentionTransformer`). Training (`ratcli.training.patches`)
and inference (`ratcli.inference.Restorer`) pick those slices with the one rule here:

    positions = slice_positions(image)          # (Z,) mm along the slice normal
    index = neighbour_index(positions, k)       # (Z, 2k+1): index[z, k] == z

The rule, for the neighbour z+j of slice z:
- The volume is cut into *runs* of evenly stacked slices: a gap between two consecutive
  slice positions larger than `MAX_GAP_RATIO` x the volume's median gap ends a run (a
  missing slice, two stacks joined into one series, a localiser among the slices).
  Within a run a neighbour is used whatever its distance, so slightly uneven gaps
  (rounded positions, a reconstruction with a varying increment) change nothing.
- Neighbour z+j is slice clip(z+j, first, last) of z's run: past a run's end the
  nearest slice of the run stands in (replicate). The first and last slices of a volume
  therefore see copies of themselves on their outer side, and a slice alone in its run
  or a single slice (one DICOM file, a 2D image) sees only itself, which is the 2D
  model's input repeated: 2.5D never refuses an image the 2D model takes.

Why 2x: one missing slice (a gap of exactly 2x; 1 % slack for rounded positions) still
gives a neighbour that shares most of its anatomy at the 0.6-5 mm steps of clinical
CT; two missing slices, a second stack or a localiser do not.

Slice positions come from the image geometry: the per-slice ImagePositionPatient of a
DICOM series, projected on the slice normal (a series may be unevenly spaced); any other
image (NIfTI, a stack of plain images, an array) lies on its regular grid of
`Image.spacing`, so all its gaps are equal and one run holds the whole volume.
"""

from __future__ import annotations

import numpy as np

from ratcli.errors import UsageError
from ratcli.io.image import Image

__all__ = ["MAX_GAP_RATIO", "check_context", "slice_positions", "neighbour_index", "runs"]

MAX_GAP_RATIO = 2.0  # a gap above this x the median gap ends a run (see above)
_RATIO_SLACK = 1.01  # rounded DICOM positions: a gap of exactly 2x the median still joins


def check_context(task, k: int) -> None:
    """Refuse 2.5D input (k > 0) for a task whose slices are not greyscale volumes at
    scale 1 (`task`: a TaskSpec); one rule for training config, patches and Restorer."""
    if k and (task.channels, task.scale) != (1, 1):
        raise UsageError(f"task {task.name}: 2.5D input (context_slices = {k}) is for "
                         "greyscale CT/PET volumes, not RGB or super-resolution")


def slice_positions(image: Image) -> np.ndarray:
    """(Z,) float64 position of each slice along the slice normal, mm, in array order.

    DICOM series: from each frame's ImagePositionPatient (unevenly spaced series keep
    their true gaps); otherwise, or when a frame lacks a position or the image no
    longer has one slice per source frame: the regular grid z * spacing_z.
    """
    Z = image.num_slices
    grid = np.arange(Z, dtype=np.float64) * float(image.spacing[2])
    meta = image.meta.get("dicom") if isinstance(image.meta, dict) else None
    frames = getattr(meta, "frames", None)
    if meta is None or frames is None or len(frames) != Z:
        return grid
    from ratcli.io.dicom_geometry import frames_of

    normal = np.asarray(image.direction, dtype=np.float64).reshape(3, 3)[:, 2]
    per_ds: dict[int, list] = {}
    out = np.empty(Z, dtype=np.float64)
    for z, (ds_index, frame_index) in enumerate(frames):
        if ds_index not in per_ds:
            per_ds[ds_index] = frames_of(meta.datasets[ds_index], ds_index)
        position = per_ds[ds_index][frame_index].position
        if position is None:
            return grid
        out[z] = float(np.dot(normal, position))
    return out


def runs(positions: np.ndarray) -> np.ndarray:
    """(Z,) int64 run id of each slice: runs end at gaps > MAX_GAP_RATIO x median gap."""
    gaps = np.abs(np.diff(np.asarray(positions, dtype=np.float64)))
    if gaps.size == 0:
        return np.zeros(len(positions), dtype=np.int64)
    median = float(np.median(gaps))
    breaks = gaps > MAX_GAP_RATIO * _RATIO_SLACK * median  # (Z-1,): a break after slice z
    return np.concatenate([[0], np.cumsum(breaks)]).astype(np.int64)


def neighbour_index(positions: np.ndarray, k: int) -> np.ndarray:
    """(Z, 2k+1) int64 slice indices: row z is the input of slice z, z-k first, with
    neighbours outside z's run replaced by the run's nearest slice (module docstring).
    k = 0 gives the identity column (the 2D model)."""
    if k < 0:
        raise ValueError(f"context slices must be >= 0, got {k}")
    run = runs(positions)
    Z = run.size
    z = np.arange(Z)
    first = np.searchsorted(run, run, side="left")  # runs are sorted: first index of each
    last = np.searchsorted(run, run, side="right") - 1
    offsets = np.arange(-k, k + 1)
    return np.clip(z[:, None] + offsets[None, :], first[:, None], last[:, None])
