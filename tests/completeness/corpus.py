"""Studies in every transfer syntax pydicom can write, with the parts that used to get lost.

Each file carries an overlay plane (group 6000), a retired curve group (5000),
an icon image, and a private group and trailing padding *after* the pixel data:
the elements a reader that stops at the pixels, or a writer that forgets what
follows them, loses. Encapsulated payloads (JPEG baseline and extended, JPEG-LS,
JPEG 2000, RLE) are taken from pydicom's own test files, not made here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from pipeline.testing import PlantedPHI, make_dataset

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"

#: name -> (pydicom test file whose encapsulated payload is reused)
ENCAPSULATED = {
    "rle": "MR_small_RLE.dcm",
    "jpeg2000-lossless": "MR_small_jp2klossless.dcm",
    "jpeg2000": "693_J2KI.dcm",
    "jpeg-extended": "JPGExtended.dcm",
    "jpeg-ls-lossless": "MR_small_jpeg_ls_lossless.dcm",
    "jpeg-baseline": "SC_rgb_jpeg_dcmtk.dcm",
}
NATIVE = {
    "explicit-little": ExplicitVRLittleEndian,
    "implicit-little": ImplicitVRLittleEndian,
    "explicit-big": ExplicitVRBigEndian,
    "deflated": DeflatedExplicitVRLittleEndian,
}
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
IMAGE_GEOMETRY = ("Rows", "Columns", "NumberOfFrames", "BitsAllocated", "SamplesPerPixel", "SOPClassUID")


@dataclass
class CorpusFile:
    name: str
    path: Path
    transfer_syntax: str
    extras: bool


def _add_extras(ds: Dataset) -> None:
    """An overlay plane, a curve, an icon, and a private group and padding after the pixels."""
    rows, cols = 8, 8
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", cols)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", bytes(range(rows * cols // 8)) * 1)
    ds.add_new(0x50000005, "US", 2)  # a retired curve group: removed by its rule, not lost
    ds.add_new(0x50000010, "US", 4)
    icon = Dataset()
    icon.Rows, icon.Columns = 4, 4
    icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
    icon.PixelData = bytes(range(16))
    ds.IconImageSequence = Sequence([icon])
    block = ds.private_block(0x7FE1, "TELERAD AFTER PIXELS", create=True)
    block.add_new(0x01, "OB", b"\x01\x02\x03\x04")
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 8)  # Data Set Trailing Padding


def native_file(folder: Path, name: str, syntax, *, extras: bool, instance: int, study: dict) -> CorpusFile:
    ds = make_dataset(study["phi"], study_uid=study["study"], series_uid=study["series"],
                      sop_uid=generate_uid(), frame_of_ref=study["frame"], instance=instance, rows=32, cols=32)
    ds.file_meta.TransferSyntaxUID = syntax
    if extras:
        _add_extras(ds)
    path = folder / f"{name}{'-extras' if extras else ''}.dcm"
    ds.save_as(path, enforce_file_format=True, little_endian=syntax.is_little_endian,
               implicit_vr=syntax.is_implicit_VR)
    return CorpusFile(name, path, str(syntax), extras)


def encapsulated_file(folder: Path, name: str, source: str, *, extras: bool, instance: int,
                      study: dict) -> CorpusFile:
    """A CT instance of the project's own making carrying a pydicom file's compressed payload."""
    carrier = pydicom.dcmread(PYDICOM_FILES / source)
    ds = make_dataset(study["phi"], study_uid=study["study"], series_uid=study["series"],
                      sop_uid=generate_uid(), frame_of_ref=study["frame"], instance=instance)
    for kw in ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
               "BitsStored", "HighBit", "PixelRepresentation", "PlanarConfiguration", "NumberOfFrames"):
        if kw in carrier:
            setattr(ds, kw, carrier.data_element(kw).value)
    ds["PixelData"] = carrier["PixelData"]
    ds.file_meta.TransferSyntaxUID = carrier.file_meta.TransferSyntaxUID
    if extras:
        _add_extras(ds)
    path = folder / f"{name}{'-extras' if extras else ''}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return CorpusFile(name, path, str(carrier.file_meta.TransferSyntaxUID), extras)


def every_transfer_syntax(folder: Path) -> list[CorpusFile]:
    """One study: each transfer syntax with and without the extras (20 files)."""
    folder.mkdir(parents=True, exist_ok=True)
    study = {"phi": PlantedPHI(), "study": generate_uid(), "series": generate_uid(), "frame": generate_uid()}
    out: list[CorpusFile] = []
    n = 0
    for extras in (False, True):
        for name, syntax in NATIVE.items():
            n += 1
            out.append(native_file(folder, name, syntax, extras=extras, instance=n, study=study))
        for name, source in ENCAPSULATED.items():
            n += 1
            out.append(encapsulated_file(folder, name, source, extras=extras, instance=n, study=study))
    study["files"] = out
    return out


def raw_pixels(path: Path) -> tuple[int, bytes]:
    """The file's pixel element tag and its value's bytes, as pydicom reads them (all fragments)."""
    ds = pydicom.dcmread(path)
    for tag in PIXEL_TAGS:
        if tag in ds:
            return tag, bytes(ds[tag].value)
    raise AssertionError(f"{os.path.basename(path)} holds no pixel data")


def top_level_tags(path: Path) -> set[int]:
    return {int(t) for t in pydicom.dcmread(path).keys()}


def pydicom_corpus() -> list[Path]:
    """pydicom's own test files plus the pydicom-data package's, every file (DICOM or not)."""
    roots = [PYDICOM_FILES]
    try:
        import data_store  # the pydicom-data package

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:  # pragma: no cover - the test extra installs it
        raise AssertionError("pydicom-data is not installed: run .ci/setup") from None
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())
