"""The README's library snippet: `from ratcli import read, write, restore` works, lazily."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ratcli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_import_ratcli_does_not_import_torch():
    code = "import sys, ratcli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError):
        ratcli.no_such_thing  # noqa: B018


def test_read_restore_write_round_trip_keeps_geometry(tmp_path):
    from ratcli import TASKS, read, restore, write

    assert set(TASKS) >= {"ct", "pet", "sr-x2", "sr-x4"}
    image = read(EXAMPLES / "pet.nii.gz")
    restored = restore(image, task="pet")
    assert restored.array.shape == image.array.shape
    assert np.isfinite(restored.array).all()
    out = write(restored, tmp_path / "pet_full.nii.gz")
    back = read(out)
    assert back.spacing == image.spacing and back.origin == image.origin
    assert back.direction == image.direction
