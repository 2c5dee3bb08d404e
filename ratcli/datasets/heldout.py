"""Held-out evaluation data from packages never used for training or tuning.

    write_heldout(Path("data/heldout"))   # -> ct/*.nii.gz, he/*.png

- CT: the CT slices of the separate `pydicom-data` package (1.0.0; MIT; every file is
  inside the wheel, nothing is fetched at run time): `693_UNCI.dcm` (head, 0.48 mm),
  `bad_sequence.dcm` (spine, 0.29 mm), `eCT_Supplemental.dcm` (enhanced CT, two brain
  frames, 0.39 mm) and `explicit_VR-UN.dcm` (abdomen, 0.86 mm): five 512 x 512 slices.
  `693_UNCR`/`693_J2KR` hold the same pixels as `693_UNCI` and are left out; pydicom's
  own lossy `693_J2KI.dcm` is the same slice again, which is why `ct.py` does not train
  on it. HU are clipped to -1024..3071 as for training.
- H&E: the `histo.jpg` test image bundled in stardist 0.9.2 (BSD-3-Clause), 300 x 500 RGB.
  stardist's dependencies (csbdeep, numba; no TensorFlow) are not needed to read one
  JPEG, so install the wheel alone: `pip install --no-deps stardist==0.9.2`; the package
  is never imported.

`rat evaluate` degrades these full-quality files with the task's simulator and its own
seed (`--sim-seed`, default 99), different from every training seed.
"""

from __future__ import annotations

from pathlib import Path

from ratcli.datasets.common import package_file

__all__ = ["HELDOUT_CT_FILES", "write_heldout", "heldout_ct_slices", "heldout_he_image"]

HELDOUT_CT_FILES = ("693_UNCI.dcm", "bad_sequence.dcm", "eCT_Supplemental.dcm",
                    "explicit_VR-UN.dcm")
PYDICOM_DATA_INSTALL = "pip install pydicom-data==1.0.0"
STARDIST_INSTALL = "pip install --no-deps stardist==0.9.2"


def write_heldout(out: Path) -> dict[str, list[Path]]:
    """Write `out/ct/<name>.nii.gz` (HU) and `out/he/histo.png`; returns {kind: paths}."""
    from ratcli.io import write

    ct = [write(image, out / "ct" / f"{name}.nii.gz", overwrite=True)
          for name, image in heldout_ct_slices()]
    he = [write(heldout_he_image(), out / "he" / "stardist-histo.png", overwrite=True)]
    return {"ct": ct, "he": he}


def heldout_ct_slices() -> list[tuple[str, object]]:
    """[(stem, Image)] of the pydicom-data CT files, HU clipped to -1024..3071."""
    from ratcli.datasets.ct import read_packaged_ct

    return read_packaged_ct("pydicom-data", "data_store/data", HELDOUT_CT_FILES,
                            install=PYDICOM_DATA_INSTALL)


def heldout_he_image():
    """stardist's H&E test image as an RGB Image (1, 300, 500, 3) uint8."""
    from ratcli.io import read

    path = package_file("stardist", "stardist/data/images/histo.jpg", install=STARDIST_INSTALL)
    return read(path)
