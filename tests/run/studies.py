"""The studies the runner tests send through every door: CT, MR, an SR, a burned-in US, a deflated CT.

Built from ``pipeline.testing`` (CT, MR), the validators' SR builder and the
pixel tests' drawn ultrasound, each in its own folder (one patient each, as
a batch wants). Folder and file names are plain words no image shows, so the
names each door searches for cannot change what OCR masks.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian

from pipeline.testing import PlantedPHI, make_study
from tests.pixels.images import Identity, identity_labels, make_image
from tests.validators.corpus import write_comprehensive_sr

KINDS = ("ct", "mr", "sr", "us", "deflated")


def deflate(path: Path) -> Path:
    """Re-encode ``path`` as Deflated Explicit VR Little Endian, in place."""
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def make(root: Path, kind: str) -> Path:
    """One study folder of ``kind`` under ``root``; returns the folder."""
    folder = root / f"case{KINDS.index(kind)}"
    if kind in ("ct", "mr"):
        make_study(folder, series=2, images=2, modality=kind.upper(), nested_folders=False, extensionless=False)
    elif kind == "sr":
        folder.mkdir(parents=True)
        write_comprehensive_sr(folder / "a1.dcm", PlantedPHI())
    elif kind == "us":
        folder.mkdir(parents=True)
        who = Identity()
        make_image(folder / "a1.dcm", kind="US", labels=identity_labels(who), who=who, burned_in="YES")
    elif kind == "deflated":
        info = make_study(folder, series=1, images=2, nested_folders=False, extensionless=False)
        for p in info.files:
            deflate(p)
    return folder


def outputs(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by its path relative to it (a de-identified tree: pseudonyms and UIDs)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.dcm")) if p.is_file()}
