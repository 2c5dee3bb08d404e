"""What a derived DICOM instance must carry besides its pixels and geometry.

- The Type 2 attributes of the CT Image and PET Image IODs (PS3.3 A.3, A.21): present,
  empty when the source does not have them, so a derived series validates even when
  made from a minimal source.
- rat named as the software that modified the pixels: appended to SoftwareVersions
  (General Equipment) and recorded in ContributingEquipmentSequence (SOP Common) with
  the DCM code 109103 "Modifying Equipment".
- Enhanced multi-frame FrameType values marked DERIVED like ImageType.
- Binary values of a big-endian source byte-swapped for the little-endian output.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "fill_type2",
    "name_rat",
    "mark_frame_types_derived",
    "binary_values_to_little_endian",
]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"

# Type 2 attributes of the modules every image IOD rat derives (CT, PET, enhanced or not)
# holds, by module.
_TYPE2_COMMON = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",  # Patient
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",  # General Study
    "AccessionNumber",
    "SeriesNumber",  # General Series
    "PositionReferenceIndicator",  # Frame of Reference
    "Manufacturer",  # General Equipment (Type 1 in Enhanced General Equipment)
    "InstanceNumber",  # General Image / Multi-frame
)
# Type 2 (and 2C that always apply) of the IOD-specific modules, by SOP Class UID.
_TYPE2_BY_SOP_CLASS = {
    CT_IMAGE_STORAGE: (
        "PatientPosition",  # General Series, 2C: always required for CT Image Storage
        "SliceThickness",  # Image Plane
        "KVP", "AcquisitionNumber",  # CT Image
    ),
    PET_IMAGE_STORAGE: (
        "SliceThickness",  # Image Plane
        "CorrectedImage", "CollimatorType",  # PET Series
        "RadiopharmaceuticalInformationSequence",  # PET Isotope
        "AcquisitionDate", "AcquisitionTime", "ActualFrameDuration",  # PET Image
    ),
}
# DICOM code for equipment that changed the pixel data of an image (PS3.16 CID 7005).
_MODIFYING_EQUIPMENT = ("109103", "DCM", "Modifying Equipment")


def fill_type2(ds) -> None:
    """Add every Type 2 attribute of `ds`'s IOD that it lacks, empty (zero length)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    wanted = _TYPE2_COMMON + _TYPE2_BY_SOP_CLASS.get(str(ds.get("SOPClassUID", "")), ())
    for kw in wanted:
        if kw not in ds:
            tag = tag_for_keyword(kw)
            vr = dictionary_VR(tag)
            ds.add_new(tag, vr, [] if vr == "SQ" else None)


def name_rat(ds, *, description: str, when: str) -> None:
    """Record rat as the software that modified the pixels.

    description: one line naming rat, task and weights (DerivationDescription's text);
    when: DICOM DateTime of the change (YYYYMMDDHHMMSS.FFFFFF).
    SoftwareVersions keeps the source's values and gains 'rat <version>'.
    """
    from pydicom.dataset import Dataset

    from ratcli import __version__

    rat = f"rat {__version__}"
    versions = [str(v) for v in _values(ds.get("SoftwareVersions")) if str(v).strip()]
    ds.SoftwareVersions = [*[v for v in versions if v != rat], rat]
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = _MODIFYING_EQUIPMENT
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = [code]
    item.Manufacturer = "rat"
    item.SoftwareVersions = rat
    item.ContributionDateTime = when
    item.ContributionDescription = description[:1024]
    ds.ContributingEquipmentSequence = [*(ds.get("ContributingEquipmentSequence") or []), item]


def mark_frame_types_derived(ds) -> None:
    """Enhanced multi-frame objects repeat ImageType per frame as FrameType; its first
    two values must agree with ImageType."""

    def visit(_dataset, elem) -> None:
        if elem.keyword == "FrameType" and elem.value:
            elem.value = ["DERIVED", "SECONDARY", *list(elem.value)[2:]]

    for kw in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(kw) or []:
            group.walk(visit)


# Binary VRs whose bytes are stored in the file's byte order: VR -> item size.
_SWAP_VRS = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def binary_values_to_little_endian(ds) -> None:
    """Byte-swap binary values of a dataset read from a big-endian file (pydicom does
    not, PS3.5 retired big endian in 2006); UN values, whose layout is unknown, are
    dropped rather than written with the wrong byte order."""
    unknown = []

    def visit(dataset, elem) -> None:
        size = _SWAP_VRS.get(elem.VR)
        if size and isinstance(elem.value, bytes) and len(elem.value) % size == 0:
            elem.value = np.frombuffer(elem.value, f">u{size}").astype(f"<u{size}").tobytes()
        elif elem.VR == "UN":
            unknown.append((dataset, elem.tag))

    ds.walk(visit)
    for dataset, tag in unknown:
        del dataset[tag]


def _values(value) -> list:
    """A multi-valued element's values as a list (one value, None or empty -> list)."""
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]
