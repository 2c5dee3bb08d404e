"""A PNG written as its rows arrive (tiles in row-major order), so an image of any size
is written holding one row of tiles; Paeth-filtered scanlines, deflated as they come."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["write_png_rows"]


def write_png_rows(path: Path, tiles: Iterator[np.ndarray], *, width: int, height: int,
                    channels: int, tile_px: int, software: str) -> None:
    """A PNG at `path` from row-major tiles ((<=tile_px, <=tile_px, channels) uint8,
    clipped at the right and bottom), one row of tiles held at a time; `software` goes
    into a tEXt chunk. ValueError when the tiles do not make a width x height image."""
    nx = -(-width // tile_px)

    def chunk(fh, kind: bytes, data: bytes) -> None:
        fh.write(struct.pack(">I", len(data)) + kind + data)
        fh.write(struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    colour = {3: 2, 4: 6}[channels]
    z = zlib.compressobj(6)
    prev = np.zeros((1, width * channels), np.uint8)
    written = 0
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        chunk(fh, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
        chunk(fh, b"tEXt", b"Software\x00" + software.encode("latin-1", "replace"))
        while written < height:
            row = [next(tiles) for _ in range(nx)]
            band = np.concatenate(row, axis=1).reshape(row[0].shape[0], width * channels)
            if band.shape[1] != width * channels:
                raise ValueError(f"PNG rows of {band.shape[1]} bytes, expected {width * channels}")
            data = _paeth(band, prev, channels)
            prev = band[-1:]
            chunk(fh, b"IDAT", z.compress(data.tobytes()))
            written += band.shape[0]
        if next(tiles, None) is not None or written != height:
            raise ValueError(f"PNG of {height} rows got a different number of tiles")
        chunk(fh, b"IDAT", z.flush())
        chunk(fh, b"IEND", b"")


def _paeth(band: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """PNG Paeth filter of scanlines (n, bytes) given the scanline above the first:
    (n, 1 + bytes) uint8, the filter type byte (4) first. Encoding has no serial
    dependence (it uses the raw neighbours), so it vectorises."""
    x = band.astype(np.int16)
    up = np.concatenate([prev, band[:-1]]).astype(np.int16)
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    upleft = np.zeros_like(x)
    upleft[:, bpp:] = up[:, :-bpp]
    p = left + up - upleft
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    out = np.empty((band.shape[0], band.shape[1] + 1), np.uint8)
    out[:, 0] = 4
    out[:, 1:] = (x - pred).astype(np.uint8)
    return out
