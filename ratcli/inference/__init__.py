"""Tiled inference: device choice, sliding-window tiles with smooth blending, Restorer."""

from ratcli.inference.device import DeviceChoice, Precision, resolve_device
from ratcli.inference.restorer import Partitioner, Restorer
from ratcli.inference.tiling import TileGrid

__all__ = ["DeviceChoice", "Partitioner", "Precision", "Restorer", "TileGrid", "resolve_device"]
