"""Environment report used by `rat info`."""

from __future__ import annotations

import platform
from importlib import metadata

from ratcli.weights import default_weights_dir

__all__ = ["environment_info"]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_info() -> dict[str, str]:
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
        "torchvision": _version("torchvision"),
        "segment-anything": _version("segment-anything"),
        "openslide-python": _version("openslide-python"),
        "openslide library": openslide_lib,
        "devices": ", ".join(devices),
        "weights dir": str(default_weights_dir()),
    }
