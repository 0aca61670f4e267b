"""Test helpers that ship with Telerad: synthetic studies with planted identifiers.

``make_study`` writes real, valid DICOM files (Part 10, explicit VR little endian,
with pixel data) so tests, the demo and users' own profile tests need no binary
fixtures. ``plant_phi`` gives every identifying attribute a unique marker string
so a test can search every written byte for it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@dataclass
class PlantedPHI:
    """Unique marker strings planted in one patient's identifying attributes."""

    tag: str = field(default_factory=lambda: secrets.token_hex(4).upper())

    def value(self, what: str) -> str:
        return f"PHI{what.upper()}{self.tag}"

    @property
    def patient_name(self) -> str:
        return f"PHINAME{self.tag}^PHIGIVEN{self.tag}"

    @property
    def patient_id(self) -> str:
        return f"PHIPID{self.tag}"

    @property
    def accession(self) -> str:
        return f"ACC{self.tag}"

    def markers(self) -> list[str]:
        """Every string that must never leave the building."""
        return [
            f"PHINAME{self.tag}",
            f"PHIGIVEN{self.tag}",
            self.patient_id,
            self.accession,
            self.value("addr"),
            self.value("inst"),
            self.value("phys"),
            self.value("oper"),
            self.value("comment"),
            self.value("private"),
            self.value("nested"),
        ]


@dataclass
class StudyInfo:
    """What ``make_study`` wrote, for assertions."""

    root: Path
    files: list[Path]
    phi: list[PlantedPHI]
    study_uids: list[str]
    sop_uids: list[str]

    def markers(self) -> list[str]:
        return [m for p in self.phi for m in p.markers()] + self.study_uids + self.sop_uids


def make_dataset(
    phi: PlantedPHI,
    *,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame_of_ref: str,
    modality: str = "CT",
    instance: int = 1,
    rows: int = 16,
    cols: int = 16,
    referenced_sop: str | None = None,
) -> Dataset:
    """One valid image instance whose identifying attributes all carry planted markers."""
    sop_class = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1234.1"
    meta.SourceApplicationEntityTitle = "PHIAE"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_of_ref
    ds.PatientName = phi.patient_name
    ds.PatientID = phi.patient_id
    ds.PatientBirthDate = "19700412"
    ds.PatientSex = "F"
    ds.PatientAge = "056Y"
    ds.PatientWeight = "71.5"
    ds.PatientAddress = phi.value("addr")
    ds.AccessionNumber = phi.accession
    ds.InstitutionName = phi.value("inst")
    ds.ReferringPhysicianName = phi.value("phys")
    ds.OperatorsName = phi.value("oper")
    ds.StationName = "CT01"  # identifies the device, not the patient (Retain Device Identity keeps it)
    ds.StudyDate = "20261120"
    ds.SeriesDate = "20261120"
    ds.ContentDate = "20261120"
    ds.StudyTime = "101500"
    ds.SeriesTime = "101600"
    ds.ContentTime = "101700"
    ds.StudyID = "S1"
    ds.StudyDescription = "CT CHEST WITH CONTRAST"
    ds.SeriesDescription = "AXIAL 5MM"
    ds.ImageComments = phi.value("comment")
    ds.Modality = modality
    ds.Manufacturer = "ACME Medical"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance
    ds.BodyPartExamined = "CHEST"
    ds.ImagePositionPatient = [0.0, 0.0, float(instance)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 5.0
    ds.BurnedInAnnotation = "NO"
    # A private block holding PHI, which the profile must remove.
    block = ds.private_block(0x0009, "PHI VENDOR", create=True)
    block.add_new(0x01, "LO", phi.value("private"))
    # A nested sequence holding PHI and a reference to another instance.
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = referenced_sop or sop_uid
    ds.ReferencedImageSequence = Sequence([item])
    req = Dataset()
    req.RequestingPhysician = phi.value("nested")
    req.AccessionNumber = phi.accession
    ds.RequestAttributesSequence = Sequence([req])

    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(instance)
    ds.PixelData = rng.integers(0, 4096, size=(rows, cols), dtype=np.uint16).tobytes()
    return ds


def make_study(
    root: Path,
    *,
    patients: int = 1,
    studies: int = 1,
    series: int = 2,
    images: int = 3,
    modality: str = "CT",
    rows: int = 16,
    cols: int = 16,
    nested_folders: bool = True,
    extensionless: bool = True,
) -> StudyInfo:
    """Write a synthetic study folder; file names carry PHI on purpose (they must not leak)."""
    root.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    phis: list[PlantedPHI] = []
    study_uids: list[str] = []
    sop_uids: list[str] = []
    for _p in range(patients):
        phi = PlantedPHI()
        phis.append(phi)
        for st in range(studies):
            study_uid = generate_uid(prefix="1.2.826.0.1.3680043.10.1234.")
            study_uids.append(study_uid)
            frame = generate_uid(prefix="1.2.826.0.1.3680043.10.1234.")
            for se in range(series):
                series_uid = generate_uid(prefix="1.2.826.0.1.3680043.10.1234.")
                first_sop: str | None = None
                for i in range(images):
                    sop_uid = generate_uid(prefix="1.2.826.0.1.3680043.10.1234.")
                    sop_uids.append(sop_uid)
                    ds = make_dataset(
                        phi,
                        study_uid=study_uid,
                        series_uid=series_uid,
                        sop_uid=sop_uid,
                        frame_of_ref=frame,
                        modality=modality,
                        instance=i + 1,
                        rows=rows,
                        cols=cols,
                        referenced_sop=first_sop,
                    )
                    first_sop = first_sop or sop_uid
                    folder = root / f"{phi.patient_id}" / f"study{st}" / f"series{se}" if nested_folders else root
                    folder.mkdir(parents=True, exist_ok=True)
                    name = f"{phi.patient_id}_{st}_{se}_{i:04d}" + ("" if extensionless else ".dcm")
                    path = folder / name
                    ds.save_as(path, enforce_file_format=True)
                    files.append(path)
    return StudyInfo(root=root, files=files, phi=phis, study_uids=study_uids, sop_uids=sop_uids)


def find_markers(data: bytes, markers: list[str]) -> list[str]:
    """Which planted markers appear in ``data`` (as ASCII, case-insensitive)."""
    low = data.lower()
    return [m for m in markers if m.lower().encode() in low]


def scan_tree_for_markers(root: Path, markers: list[str]) -> dict[str, list[str]]:
    """Search every file's bytes and every path under ``root`` for planted markers."""
    found: dict[str, list[str]] = {}
    for p in sorted(root.rglob("*")):
        hits = find_markers(str(p.relative_to(root)).encode(), markers)
        if p.is_file():
            hits += find_markers(p.read_bytes(), markers)
        if hits:
            found[str(p.relative_to(root))] = sorted(set(hits))
    return found


class MemoryStore:
    """An in-memory ObjectStore for tests: same contract as the real backends, no disk or network.

    Keys are checked like the real stores' keys (relative, no empty or hidden parts);
    a missing key raises ``ObjectNotFound``. ``writes`` counts every put, so a test can
    check that an operation wrote (or did not write) an object.
    """

    def __init__(self, url: str = "memory://test") -> None:
        self.url = url
        self.objects: dict[str, tuple[bytes, str, dict[str, str]]] = {}
        self.writes = 0

    @staticmethod
    def _check(key: str) -> str:
        from pipeline.exceptions import StoragePermanentError

        parts = key.split("/")
        if not key or "\\" in key or any(not p or p.startswith(".") for p in parts):
            raise StoragePermanentError(f"invalid object key {key!r}")
        return key

    def _info(self, key: str):
        from datetime import datetime, timezone

        from pipeline.storage.base import ObjectInfo

        data, content_type, metadata = self.objects[key]
        return ObjectInfo(
            key=key,
            size=len(data),
            content_type=content_type,
            metadata=dict(metadata),
            last_modified=datetime.now(timezone.utc),
        )

    def put_bytes(self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str]):
        import hashlib

        self._check(key)
        meta = {**metadata, "sha256": hashlib.sha256(data).hexdigest()}
        self.objects[key] = (bytes(data), content_type, meta)
        self.writes += 1
        return self._info(key)

    def put_file(self, key: str, path: Path, *, content_type: str, metadata: dict[str, str]):
        return self.put_bytes(key, Path(path).read_bytes(), content_type=content_type, metadata=metadata)

    def get_bytes(self, key: str) -> bytes:
        from pipeline.exceptions import ObjectNotFound

        try:
            return self.objects[self._check(key)][0]
        except KeyError:
            raise ObjectNotFound(f"object {key!r} does not exist in the memory store") from None

    def download_file(self, key: str, path: Path) -> None:
        Path(path).write_bytes(self.get_bytes(key))

    def head(self, key: str):
        return self._info(key) if self._check(key) in self.objects else None

    def list(self, prefix: str = ""):
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield self._info(key)

    def delete(self, key: str) -> None:
        self.objects.pop(self._check(key), None)

    def share_url(self, key: str, expires) -> str:
        return f"{self.url}/{self._check(key)}"
