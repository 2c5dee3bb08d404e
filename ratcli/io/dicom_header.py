"""What a DICOM file's header says about it, read without its pixels: series, modality,
and whether it is a restorable cross-section at all (not a localizer, a dose report, a
screenshot, a presentation state or an RT object).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DicomHeader", "read_header"]


@dataclass(frozen=True)
class DicomHeader:
    """uid: SeriesInstanceUID; number: SeriesNumber; skip: why the object is not a
    restorable image (None when it is)."""

    uid: str | None
    number: str | None
    modality: str
    skip: str | None  # why this object is not a restorable image, else None


# DICOM objects that are images but not restorable cross-sections.
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its .1 - .4 multi-frame forms
_NOT_SCANS = {
    "RTDOSE": "an RT dose grid, not a scan",
    "RTIMAGE": "an RT portal image, not a cross-section",
}
_NO_PIXELS = {
    "SR": "a structured report (e.g. a dose report), not an image",
    "PR": "a presentation state, not an image",
    "KO": "a key object selection, not an image",
    "RTSTRUCT": "an RT structure set, not an image",
    "RTPLAN": "an RT plan, not an image",
    "RTRECORD": "an RT treatment record, not an image",
}


def read_header(f: Path) -> DicomHeader:
    """Series, modality and restorability from the header only; an unreadable header
    gives DicomHeader(None, None, "OT", None) so that reading the file reports the problem."""
    import pydicom

    try:
        ds = pydicom.dcmread(
            f, stop_before_pixels=True,
            specific_tags=["SeriesInstanceUID", "SeriesNumber", "Rows", "Modality",
                           "ImageType", "SOPClassUID"],
        )
    except Exception:
        return DicomHeader(None, None, "OT", None)
    uid, number = ds.get("SeriesInstanceUID"), ds.get("SeriesNumber")
    modality = str(ds.get("Modality") or "OT")
    return DicomHeader(str(uid) if uid else None, None if number in (None, "") else str(number),
                   modality, _skip_reason(ds, modality))


def _skip_reason(ds, modality: str) -> str | None:
    sop = str(ds.get("SOPClassUID") or "")
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "Rows" not in ds:
        return _NO_PIXELS.get(modality, f"a DICOM object without an image ({modality})")
    if sop == _SECONDARY_CAPTURE or sop.startswith(_SECONDARY_CAPTURE + ".") or (
            "SCREEN SAVE" in image_type):
        return "a secondary capture (screenshot or dose screen), not a scan"
    if "LOCALIZER" in image_type:
        return "a localizer (scout) image, not a cross-section"
    return _NOT_SCANS.get(modality)
