"""CT training data: the CT slices bundled with pydicom plus procedural phantoms.

    write_ct_training(Path("data/ct"))   # -> data/ct/train/*.nii.gz, data/ct/val/*.nii.gz

Everything is full-quality HU; `rat train` makes the low-dose inputs with the
projection-domain simulator (`ratcli.training.degrade.LowDoseCT`) at each file's own
pixel size. Real slices (pydicom's test files, Apache/MIT-style licensed test data):

- `CT_small.dcm`: 128 x 128 neck/upper-thorax slice, 0.66 mm pixels;
- `J2K_pixelrep_mismatch.dcm`: 512 x 512 head slice, 0.43 mm pixels (lossless JPEG 2000).

`693_J2KI.dcm` is deliberately left out: it is a lossy copy of the pydicom-data slice
`693_UNCI.dcm` that `heldout.py` reserves for evaluation. Real slices of 256 px or more
are also written 2x downsampled (area average), so the model sees the coarser pixel
sizes (and the lower noise per pixel that goes with them) of body CT. Values are clipped
to -1024..3071 HU: padding outside the scan circle (-2000, -3000) is not tissue.

Phantoms (`ratcli.phantoms.ct_phantom`, abdomen with organ texture) fill in body
anatomy; the validation split is phantoms with other texture seeds only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ratcli.datasets.common import package_file

__all__ = ["PYDICOM_CT_FILES", "HU_RANGE", "write_ct_training", "real_ct_slices",
           "read_packaged_ct"]

PYDICOM_CT_FILES = ("CT_small.dcm", "J2K_pixelrep_mismatch.dcm")
HU_RANGE = (-1024.0, 3071.0)
# Field of view of the phantoms (mm): gives their pixel size, as in data.py's synthetic CT.
PHANTOM_FOV_MM = 350.0


def write_ct_training(
    out: Path,
    *,
    phantom_volumes: int = 2,
    phantom_slices: int = 4,
    phantom_size: int = 256,
    val_volumes: int = 1,
    seed: int = 0,
) -> dict[str, list[Path]]:
    """Write `out/train/` (real slices, their 2x downsampled copies, phantoms) and
    `out/val/` (phantoms only, seeds after the training ones) as HU NIfTI files.

    phantom_volumes / phantom_slices / phantom_size: phantom volumes of Z x size x size;
    phantom volume i uses texture seed `seed + i`; validation continues the count.
    Returns {"train": paths, "val": paths}.
    """
    from ratcli.io import Domain, Image, write

    written: dict[str, list[Path]] = {"train": [], "val": []}
    for name, image in real_ct_slices():
        written["train"].append(write(image, out / "train" / f"pydicom-{name}.nii.gz",
                                      overwrite=True))
        if min(image.size_yx) >= 256:
            half = _downsample2(image)
            written["train"].append(write(half, out / "train" / f"pydicom-{name}-x0.5.nii.gz",
                                          overwrite=True))
    from ratcli.phantoms import ct_phantom

    px = PHANTOM_FOV_MM / phantom_size
    for i in range(phantom_volumes + val_volumes):
        split = "train" if i < phantom_volumes else "val"
        hu = ct_phantom(phantom_size, phantom_slices, seed + i)
        image = Image(np.clip(hu, *HU_RANGE).astype(np.float32), spacing=(px, px, 2.5),
                      domain=Domain.HU, modality="CT")
        written[split].append(write(image, out / split / f"phantom-{seed + i:03d}.nii.gz",
                                    overwrite=True))
    return written


def real_ct_slices() -> list[tuple[str, object]]:
    """[(stem, Image)] of pydicom's bundled CT slices, HU clipped to HU_RANGE."""
    return read_packaged_ct("pydicom", "pydicom/data/test_files", PYDICOM_CT_FILES,
                            install="pip install pydicom")


def read_packaged_ct(dist: str, folder: str, files: tuple[str, ...], *, install: str
                     ) -> list[tuple[str, object]]:
    """[(stem, Image)] of the DICOM `files` under `folder` of the installed `dist`, HU
    clipped to HU_RANGE, source metadata dropped (the training and held-out reader)."""
    from ratcli.io import read

    out = []
    for fname in files:
        path = package_file(dist, f"{folder}/{fname}", install=install)
        image = read(path)
        clipped = np.clip(image.array, *HU_RANGE).astype(np.float32)
        out.append((Path(fname).stem, image.derived(clipped, meta={}, source=path)))
    return out


def _downsample2(image):
    """2x2 area average in-plane (odd edges dropped); spacing doubles."""
    a = image.array
    Z, H, W = a.shape
    a = a[:, : H - H % 2, : W - W % 2].reshape(Z, H // 2, 2, W // 2, 2).mean(axis=(2, 4))
    from dataclasses import replace

    sx, sy, sz = image.spacing
    return replace(image, array=a.astype(np.float32), spacing=(2 * sx, 2 * sy, sz))
