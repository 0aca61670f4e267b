"""A generated attack corpus: one patient's identifiers planted wherever a rule might let them out.

Every file is a valid small CT image of one patient (``PlantedPHI`` markers in
the usual identifying attributes) plus one attack: a value of a class from
issue #12, or a neighbour of it. Each attack says whether the engine can
de-identify the file (``written``: the identifier is removed or cleaned) or
must fail it (``failed``: a value it cannot judge, or a verifier finding).
Either way no planted marker may appear in any output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import config
from pydicom.datadict import DicomDictionary, dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from pipeline.testing import PlantedPHI, make_dataset

BIRTH_DATE = "19610203"
TEXT_VRS = ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT")
# Kept numeric attributes a mismatched VR is written onto (DS, IS, US, FD by the dictionary).
NUMERIC_TARGETS = ("SliceThickness", "InstanceNumber", "AcquisitionMatrix", "DiffusionBValue")
BINARY_LENGTHS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 255, 256,
                  1023, 1024, 2047, 2048, 4095, 4096)
CODE_SEQUENCES = ("ProcedureCodeSequence", "RequestedProcedureCodeSequence", "AdmittingDiagnosesCodeSequence",
                  "AnatomicRegionSequence", "ScheduledProtocolCodeSequence")
UNLISTED_CONTAINER = "ReferencedSeriesSequence"  # not in Table E.1-1: walked as is
URN_CODE_VALUE = 0x00080120


@dataclass(frozen=True)
class Attack:
    """One corpus file: its attack class, where it is, and what must happen to it."""

    cls: str
    name: str
    path: Path
    expect: str  # "written" | "failed"


def ur_attributes() -> list[int]:
    """Every UR attribute of the data dictionary outside the file meta group (non-retired)."""
    return sorted(t for t, e in DicomDictionary.items() if e[0] == "UR" and not e[3] and t >> 16 != 0x0002)


def name_text(phi: PlantedPHI) -> str:
    return phi.patient_name  # PHINAME<tag>^PHIGIVEN<tag>


def sentence(phi: PlantedPHI) -> str:
    family, given = phi.patient_name.split("^")
    return f"{family}, {given} born 1961-02-03"


def raw_element(tag: int, vr: str, data: bytes) -> RawDataElement:
    """An element written with ``vr`` and these bytes whatever they hold (pydicom would convert first)."""
    if len(data) % 2:
        data += b" "
    return RawDataElement(BaseTag(tag), vr, len(data), data, 0, False, True)


def text_element(tag: int, vr: str, text: str) -> RawDataElement:
    return raw_element(tag, vr, text.encode("latin-1"))


def ramp(length: int) -> bytes:
    """A 16-bit lookup-table ramp (values i*257): bytes that are binary, not text, at every length."""
    words = b"".join(((i * 257) & 0xFFFF).to_bytes(2, "little") for i in range(length // 2 + 1))
    return words[:length]


def with_text(data: bytes, text: bytes) -> bytes:
    """``data`` with ``text`` (cut to fit) written in its middle."""
    piece = text[: len(data)]
    start = (len(data) - len(piece)) // 2
    return data[:start] + piece + data[start + len(piece):]


class Builder:
    """Writes corpus files for one patient, each a fresh valid image plus one attack."""

    def __init__(self, root: Path, phi: PlantedPHI) -> None:
        self.root, self.phi, self.n = root, phi, 0
        self.attacks: list[Attack] = []

    def base(self) -> Dataset:
        self.n += 1
        uid = f"1.2.826.0.1.3680043.10.777.{self.n}"
        ds = make_dataset(self.phi, study_uid="1.2.826.0.1.3680043.10.777.1000",
                          series_uid="1.2.826.0.1.3680043.10.777.1001", sop_uid=uid,
                          frame_of_ref="1.2.826.0.1.3680043.10.777.1002", instance=self.n)
        ds.PatientBirthDate = BIRTH_DATE
        return ds

    def add(self, cls: str, name: str, expect: str, ds: Dataset) -> None:
        folder = self.root / cls
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        self.attacks.append(Attack(cls, name, path, expect))


def build(root: Path, phi: PlantedPHI | None = None) -> tuple[PlantedPHI, list[Attack]]:
    """Write the whole corpus under ``root`` (one folder per attack class)."""
    phi = phi or PlantedPHI()
    b = Builder(Path(root), phi)
    old_mode = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE  # the corpus is invalid on purpose
    try:
        _ur(b)
        _mismatched(b)
        _binary(b)
        _invalid(b)
        _un_and_keep_list(b)
        _file_meta_in_items(b)
        _code_meanings(b)
        _control(b)
    finally:
        config.settings.writing_validation_mode = old_mode
    return phi, b.attacks


def _ur(b: Builder) -> None:
    url = f"https://pacs.example/wado?patientName={name_text(b.phi)}&dob={BIRTH_DATE}"
    ds = b.base()
    item = Dataset()
    for tag in ur_attributes():
        if tag == URN_CODE_VALUE:
            continue  # a code, kept after validation: its own attack below
        ds.add(DataElement(tag, "UR", url))
        item.add(DataElement(tag, "UR", url))
    ds[tag_for_keyword(UNLISTED_CONTAINER)] = DataElement(tag_for_keyword(UNLISTED_CONTAINER), "SQ",
                                                          Sequence([item]))
    b.add("ur", "every-ur-attribute", "written", ds)
    for name, value in (("urn-code-value-url", url),  # '^' is not a URI character: invalid UR
                        ("urn-code-value-valid-form", f"urn:x:{b.phi.patient_id}")):  # valid, but captured
        ds = b.base()
        code = Dataset()
        code.add(DataElement(URN_CODE_VALUE, "UR", value))
        code.CodingSchemeDesignator, code.CodeMeaning = "99LOCAL", "CHEST"
        ds.AnatomicRegionSequence = Sequence([code])
        b.add("ur", name, "failed", ds)


def _mismatched(b: Builder) -> None:
    for target in NUMERIC_TARGETS:
        tag = tag_for_keyword(target)
        for vr in TEXT_VRS:
            ds = b.base()
            ds._dict[BaseTag(tag)] = text_element(tag, vr, name_text(b.phi))
            b.add("mismatched-vr", f"{target}-as-{vr}", "failed", ds)
    ds = b.base()  # the example: Pixel Spacing (DS) written as OB
    ds[0x00280030] = DataElement(0x00280030, "OB", sentence(b.phi).encode() + b" ")
    b.add("mismatched-vr", "PixelSpacing-as-OB", "failed", ds)


def _binary(b: Builder) -> None:
    lut = 0x00281201  # RedPaletteColorLookupTableData (OW)
    text = sentence(b.phi).encode()
    for n in BINARY_LENGTHS:
        even = n + (n % 2)
        ds = b.base()
        ds[lut] = DataElement(lut, "OW", ramp(even))
        b.add("binary", f"palette-{n}-plain", "written", ds)
        ds = b.base()
        ds[lut] = DataElement(lut, "OW", with_text(ramp(even), text))
        b.add("binary", f"palette-{n}-text", "failed" if even >= 4 else "written", ds)
    fd = tag_for_keyword("DiffusionBValue")  # FD, longer than 64 bytes
    ds = b.base()
    ds._dict[BaseTag(fd)] = raw_element(fd, "FD", b"\x00" * 8 + text.ljust(88, b" ")[:88])
    b.add("binary", "fd-96-bytes-text", "failed", ds)
    us = tag_for_keyword("AcquisitionMatrix")  # US, shorter than 8 bytes
    ds = b.base()
    ds._dict[BaseTag(us)] = raw_element(us, "US", b"DOE^JO")
    b.add("binary", "us-6-bytes-name", "failed", ds)


def _invalid(b: Builder) -> None:
    for name, keyword, vr, value in (
        ("ds-name", "SliceThickness", "DS", f"DOE\\JOHN\\{BIRTH_DATE}"),
        ("is-text", "InstanceNumber", "IS", "ZQISTEXT"),
        ("cs-name", "PatientSex", "CS", "DOE^JOHN"),
        ("ds-planted", "PatientWeight", "DS", b.phi.patient_id),
    ):
        ds = b.base()
        ds._dict[BaseTag(tag_for_keyword(keyword))] = text_element(tag_for_keyword(keyword), vr, value)
        b.add("invalid-value", name, "failed", ds)


def _un_and_keep_list(b: Builder) -> None:
    ds = b.base()
    tag = tag_for_keyword("SliceThickness")
    ds._dict[BaseTag(tag)] = raw_element(tag, "UN", (name_text(b.phi) + "^X").encode())
    b.add("un", "slice-thickness-as-un", "failed", ds)
    ds = b.base()
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.WindowCenterWidthExplanation = f"BRAIN {name_text(b.phi)}"
    b.add("keep-list", "window-explanation", "written", ds)
    ds = b.base()
    ds.add_new(0x00280030, "DS", "0.5\\0.5")
    ds.add_new(tag_for_keyword("LUTExplanation"), "LO", f"{sentence(b.phi)} HEAD")
    b.add("keep-list", "lut-explanation", "written", ds)


def _file_meta_in_items(b: Builder) -> None:
    ds = b.base()
    item = Dataset()
    item.add_new(0x00020102, "OB", f"PRIVATE {sentence(b.phi)} ".encode())
    item.add_new(0x00020100, "UI", "1.2.826.0.1.3680043.10.777.9")
    item.add_new(0x00020016, "AE", b.phi.patient_id[:16])
    item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.777.2"
    tag = tag_for_keyword(UNLISTED_CONTAINER)
    ds[tag] = DataElement(tag, "SQ", Sequence([item]))
    b.add("file-meta-in-item", "private-information", "written", ds)


def _code_meanings(b: Builder) -> None:
    for keyword in CODE_SEQUENCES:
        ds = b.base()
        known, unknown = Dataset(), Dataset()
        known.CodeValue, known.CodingSchemeDesignator = "69536005", "SCT"  # Head
        known.CodeMeaning = f"CT HEAD {name_text(b.phi)}"
        unknown.CodeValue, unknown.CodingSchemeDesignator = "ZQ123", "99LOCAL"
        unknown.CodeMeaning = f"CHEST {sentence(b.phi)}"
        tag = tag_for_keyword(keyword)
        ds[tag] = DataElement(tag, dictionary_VR(tag), Sequence([known, unknown]))
        b.add("code-meaning", keyword, "written", ds)


def _control(b: Builder) -> None:
    b.add("control", "plain-image", "written", b.base())
