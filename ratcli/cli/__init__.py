"""Command-line interface. Each module registers its commands on `app`."""

from ratcli.cli import (
    cluster,  # noqa: F401  (registers commands)
    info,  # noqa: F401
    regions,  # noqa: F401
    restore,  # noqa: F401
    train,  # noqa: F401
    weights,  # noqa: F401
)
from ratcli.cli.app import app

__all__ = ["app"]
