"""Raw NIfTI header access for the two things SimpleITK cannot do for us.

1. ITK reads a file whose voxel data is cut short (or a .nii.gz whose stream is
   truncated) as if the missing voxels were 0, and ITK < 6 silently replaces NaN and
   ±inf voxels with 0 (InsightSoftwareConsortium/ITK#6683); so the raw bytes are
   scanned here once, counting both the bytes present and the non-finite values.
2. ITK rebuilds the qform/sform from its double-precision direction on every write;
   after float32 storage a read-write cycle moves the direction by ~1e-8. When the
   output grid is the input grid, the input's geometry fields are copied into the
   output header verbatim, so every reader sees exactly the input geometry.
"""

from __future__ import annotations

import gzip
import math
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["NiftiHeader", "read_header", "scan_voxels", "copy_geometry", "COMPLEX_TYPES"]

# NIfTI-1 geometry fields: name -> (byte offset, struct format without byte order).
_GEOMETRY_FIELDS = {
    "pixdim": (76, "8f"),  # pixdim[0] is qfac, [1..3] the spacing
    "xyzt_units": (123, "B"),
    "qform_code": (252, "h"),
    "sform_code": (254, "h"),
    "quatern": (256, "6f"),  # quatern_b, c, d, qoffset_x, y, z
    "srow": (280, "12f"),  # srow_x, srow_y, srow_z
}
# NIfTI datatype code -> numpy float type whose values can be NaN/inf.
_FLOAT_TYPES = {16: "f4", 64: "f8", 32: "f4", 1792: "f8"}  # complex: both parts checked
# NIfTI datatype code -> bits per voxel (DT_BINARY is 1 bit).
_BITS = {1: 1, 2: 8, 4: 16, 8: 32, 16: 32, 32: 64, 64: 64, 128: 24, 256: 8, 512: 16,
         768: 32, 1024: 64, 1280: 64, 1536: 128, 1792: 128, 2048: 256, 2304: 32}
COMPLEX_TYPES = {32: "complex64", 1792: "complex128", 2048: "complex256"}
_CHUNK_BYTES = 1 << 24


@dataclass(frozen=True)
class NiftiHeader:
    """version: 1 or 2; endian: '<' or '>'; datatype: NIfTI code; nvox: voxel count
    (complex counts twice); vox_offset: byte offset of the data; geometry: NIfTI-1
    geometry field values (None for NIfTI-2); shape: dim[1..ndim] (x first);
    data_bytes: bytes of voxel data the header promises (None: unknown datatype)."""

    version: int
    endian: str
    datatype: int
    nvox: int
    vox_offset: int
    geometry: dict | None
    shape: tuple[int, ...] = ()
    data_bytes: int | None = None


def read_header(path: str | Path) -> NiftiHeader | None:
    """Parse the header of a .nii or .nii.gz file; None if it is not a NIfTI header."""
    try:
        with _open(path) as fh:
            raw = fh.read(540)
    except (OSError, EOFError, zlib.error):  # gzip.BadGzipFile is an OSError
        return None
    for endian in "<>":
        if len(raw) >= 348 and struct.unpack(f"{endian}i", raw[:4])[0] == 348:
            return _parse_v1(raw, endian)
        if len(raw) >= 540 and struct.unpack(f"{endian}i", raw[:4])[0] == 540:
            return _parse_v2(raw, endian)
    return None


def scan_voxels(path: str | Path, header: NiftiHeader, *, nonfinite: bool = True
                ) -> tuple[int, int]:
    """(bytes of voxel data present, up to header.data_bytes; NaN/inf values in them,
    or 0 when not `nonfinite`).

    Streams the data once, so memory stays at one chunk. Raises EOFError, zlib.error
    or gzip.BadGzipFile for a truncated or corrupt .nii.gz stream (a bad CRC included).
    """
    kind = _FLOAT_TYPES.get(header.datatype) if nonfinite else None
    dtype = np.dtype(header.endian + kind) if kind else None
    want = header.data_bytes if header.data_bytes is not None else header.nvox
    if dtype is None and not _is_gzip(path):
        # Plain file, integer voxels: the size alone tells whether the data is complete.
        return max(0, min(want, Path(path).stat().st_size - header.vox_offset)), 0
    got, bad, tail = 0, 0, b""
    with _open(path) as fh:
        _skip(fh, header.vox_offset)
        while True:
            # Read to the end even past `want`, so gzip checks the stream's CRC.
            block = fh.read(_CHUNK_BYTES)
            if not block:
                break
            take = block[: max(0, want - got)]
            got += len(take)
            if dtype is not None and take:
                take = tail + take
                usable = len(take) - len(take) % dtype.itemsize
                bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(take[:usable], dtype))))
                tail = take[usable:]
    return got, bad


def copy_geometry(source: NiftiHeader, written: Path, final_name: str) -> Path:
    """Overwrite the geometry fields of the uncompressed NIfTI-1 file `written` with
    `source`'s; gzip it to `<written>.gz` when `final_name` ends with .gz.
    Returns the path holding the result."""
    out = read_header(written)
    if out is None or out.version != 1 or source.geometry is None:
        raise ValueError(f"{written}: not a NIfTI-1 file")
    with open(written, "r+b") as fh:
        for name, (offset, fmt) in _GEOMETRY_FIELDS.items():
            fh.seek(offset)
            value = source.geometry[name]
            fh.write(struct.pack(out.endian + fmt, *value))
    if not final_name.lower().endswith(".gz"):
        return written
    packed = written.with_name(written.name + ".gz")
    with open(written, "rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, _CHUNK_BYTES)
    return packed


def _is_gzip(path: str | Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _open(path: str | Path):
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _skip(fh, n: int) -> None:
    while n > 0:
        step = fh.read(min(n, _CHUNK_BYTES))
        if not step:
            return
        n -= len(step)


def _parse_v1(raw: bytes, e: str) -> NiftiHeader:
    dims = struct.unpack(f"{e}8h", raw[40:56])
    datatype = struct.unpack(f"{e}h", raw[70:72])[0]
    vox_offset = int(struct.unpack(f"{e}f", raw[108:112])[0])
    geometry = {
        name: struct.unpack(e + fmt, raw[off: off + struct.calcsize(fmt)])
        for name, (off, fmt) in _GEOMETRY_FIELDS.items()
    }
    return NiftiHeader(1, e, datatype, _nvox(dims, datatype), vox_offset, geometry,
                       _shape(dims), _data_bytes(dims, datatype))


def _parse_v2(raw: bytes, e: str) -> NiftiHeader:
    datatype = struct.unpack(f"{e}h", raw[12:14])[0]
    dims = struct.unpack(f"{e}8q", raw[16:80])
    vox_offset = struct.unpack(f"{e}q", raw[168:176])[0]
    return NiftiHeader(2, e, datatype, _nvox(dims, datatype), int(vox_offset), None,
                       _shape(dims), _data_bytes(dims, datatype))


def _nvox(dims: tuple, datatype: int) -> int:
    ndim = max(0, min(int(dims[0]), 7))
    n = int(np.prod([max(int(d), 1) for d in dims[1: ndim + 1]])) if ndim else 1
    return n * (2 if datatype in (32, 1792) else 1)


def _shape(dims: tuple) -> tuple[int, ...]:
    ndim = max(0, min(int(dims[0]), 7))
    return tuple(max(int(d), 1) for d in dims[1: ndim + 1])


def _data_bytes(dims: tuple, datatype: int) -> int | None:
    bits = _BITS.get(datatype)
    if bits is None:
        return None
    return -(-math.prod(_shape(dims)) * bits // 8)
