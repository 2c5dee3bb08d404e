"""rat: medical image restoration with the Region Attention Transformer.

The public API, imported lazily so `import ratcli` stays light:

    from ratcli import read, write, restore, restore_many, TASKS
    image = read("pet.nii.gz")
    write(restore(image, task="pet"), "pet_full.nii.gz")
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Image": "ratcli.io",
    "read": "ratcli.io",
    "write": "ratcli.io",
    "restore": "ratcli.api",
    "restore_many": "ratcli.api",
    "restore_path": "ratcli.api",
    "TASKS": "ratcli.tasks",
    "RatError": "ratcli.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ratcli' has no attribute {name!r}")
