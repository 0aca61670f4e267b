"""The validator oracle's corpus: the project's own generated studies plus real files of others.

- every kind the project's builders make (``pipeline.testing.make_study`` CT and MR,
  ``bench.corpus``'s CT, MR, enhanced MR multi-frame, Secondary Capture and
  Basic Text SR), plus what they lacked: an ultrasound image, a Comprehensive SR
  with nested content, observers and a performed procedure step reference, and a
  Segmentation made by highdicom from the CT series;
- every DICOM file in pydicom's own test data folder (globbed, never a network call);
- every file of the ``pydicom-data`` package.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from bench import corpus as bench_corpus
from pipeline.testing import PlantedPHI, make_dataset, make_study

UID = "1.2.826.0.1.3680043.10.1234.77."
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"

# dciodvfy itself stops on an internal assertion (exit 134) for these, input and
# output alike (checked with dicom3tools here, see /work/shared/SERVICES.md): nothing to compare.
DCIODVFY_CANNOT_READ = frozenset({
    "badVR.dcm", "rtdose.dcm", "rtdose_1frame.dcm", "rtdose_expb.dcm", "rtdose_expb_1frame.dcm",
})


def _ids(n: int) -> dict:
    return {"study": f"{UID}1", "series": f"{UID}2.{n}", "sop": f"{UID}3.{n}", "frame": f"{UID}4"}


def _base(phi: PlantedPHI, modality: str, n: int) -> Dataset:
    ids = _ids(n)
    return make_dataset(phi, study_uid=ids["study"], series_uid=ids["series"], sop_uid=ids["sop"],
                        frame_of_ref=ids["frame"], modality=modality)


def _text_item(relationship: str, text: str, meaning: str = "Finding") -> Dataset:
    item = Dataset()
    item.RelationshipType, item.ValueType = relationship, "TEXT"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "121071", "DCM", meaning
    item.ConceptNameCodeSequence = Sequence([code])
    item.TextValue = text
    return item


def write_us(path: Path, phi: PlantedPHI) -> None:
    ds = _base(phi, "US", 20)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = US_IMAGE
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
               "FrameOfReferenceUID"):
        delattr(ds, kw)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", ""]
    ds.BitsStored, ds.HighBit, ds.BitsAllocated = 8, 7, 8
    ds.PixelData = np.zeros((16, 16), np.uint8).tobytes()
    ds.OperatorsName = phi.value("oper")
    ds.save_as(path, enforce_file_format=True)


def write_comprehensive_sr(path: Path, phi: PlantedPHI) -> None:
    """An SR whose content nests three deep, with observers and a PPS reference (Type 2 in SR series)."""
    # The project's Basic Text SR (observers, report title), made a Comprehensive SR
    # with nested content and the Type 2 sequences of SR Document Series and General.
    bench_corpus.write_sr(path, phi, _ids(30), 1, np.random.default_rng(30))
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = COMPREHENSIVE_SR
    for kw in ("FrameOfReferenceUID", "ReferencedImageSequence", "BodyPartExamined", "ImageComments"):
        if kw in ds:
            delattr(ds, kw)
    ds.VerifyingObserverSequence[0].VerifyingObserverIdentificationCodeSequence = Sequence()
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.PerformedProcedureCodeSequence = Sequence()
    section = Dataset()
    section.RelationshipType, section.ValueType, section.ContinuityOfContent = "CONTAINS", "CONTAINER", "SEPARATE"
    sec_code = Dataset()
    sec_code.CodeValue, sec_code.CodingSchemeDesignator, sec_code.CodeMeaning = "121070", "DCM", "Findings"
    section.ConceptNameCodeSequence = Sequence([sec_code])
    finding = _text_item("CONTAINS", f"Nodule in right lobe, seen by {phi.value('phys')}")
    finding.ContentSequence = Sequence([
        _text_item("HAS PROPERTIES", f"stable 5 mm, patient {phi.patient_name}", "Property")])
    section.ContentSequence = Sequence([finding])
    person = Dataset()
    person.RelationshipType, person.ValueType = "HAS OBS CONTEXT", "PNAME"
    p_code = Dataset()
    p_code.CodeValue, p_code.CodingSchemeDesignator, p_code.CodeMeaning = "121008", "DCM", "Person Observer Name"
    person.ConceptNameCodeSequence = Sequence([p_code])
    person.PersonName = phi.value("phys")
    ds.ContentSequence = Sequence([person, section])
    ds.save_as(path, enforce_file_format=True)


def write_seg(path: Path, ct_files: list[Path]) -> None:
    """A binary Segmentation of the CT series, made by highdicom (an independent encoder)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = sorted((pydicom.dcmread(p) for p in ct_files), key=lambda d: int(d.InstanceNumber))
    mask = np.zeros((len(sources), sources[0].Rows, sources[0].Columns), dtype=bool)
    mask[:, 4:10, 4:10] = True
    algorithm = hd.AlgorithmIdentificationSequence(
        name="Telerad test thresholder", version="1.0",
        family=codes.cid7162.ArtificialIntelligence)
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Liver lesion",
        segmented_property_category=codes.cid7150.Tissue, segmented_property_type=codes.cid7166.ConnectiveTissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc], series_instance_uid=f"{UID}5", series_number=50,
        sop_instance_uid=f"{UID}6", instance_number=1, manufacturer="ACME Medical",
        manufacturer_model_name="Seg 1", software_versions="1.0", device_serial_number="SN-PHI-0001",
        content_description="Lesion segmentation", content_creator_name="Phiseg^Creator",
        content_label="LESION")
    seg.save_as(path)


def _complete(path: Path) -> None:
    """Give a generated image the Type 1 and 2 attributes its builder leaves out.

    The builders make what the pipeline needs, not complete IODs; an attribute
    the input lacks cannot be lost, so the oracle would not see it removed.
    """
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds or ds.SOPClassUID in (bench_corpus.ENHANCED_MR,):
        if "FrameOfReferenceUID" in ds:
            ds.PositionReferenceIndicator = "SN"
            ds.PatientPosition = "HFS"
            ds.save_as(path, enforce_file_format=True)
        return
    ds.PatientPosition = "HFS"
    if ds.Modality == "CT":  # a person responsible for the patient, with a role that depends on it
        ds.ResponsiblePerson, ds.ResponsiblePersonRole = "PHIRESP^PERSON", "PARENT"
    if "FrameOfReferenceUID" in ds:
        ds.PositionReferenceIndicator = "SN"
    else:
        ds.PatientOrientation = ["A", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.AcquisitionNumber = 1
    if ds.Modality == "CT":
        ds.RescaleIntercept, ds.RescaleSlope, ds.KVP = "-1024", "1", "120"
    if ds.Modality == "MR":
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
        ds.MRAcquisitionType, ds.EchoTime, ds.RepetitionTime = "2D", "12", "500"
        ds.EchoTrainLength, ds.MagneticFieldStrength = 1, "1.5"
    ds.save_as(path, enforce_file_format=True)


@dataclass
class Generated:
    """The generated files and every identifier planted in them (none may survive)."""

    files: list[Path]
    markers: list[str]


def generated(root: Path) -> Generated:
    """The project's own kinds of study, small: one or two files of each."""
    files: list[Path] = []
    markers: list[str] = ["PHIRESP", "Phiseg"]  # ResponsiblePerson, the SEG's ContentCreatorName
    for modality in ("CT", "MR"):
        info = make_study(root / f"make_study_{modality}", series=1, images=2, modality=modality)
        files += info.files
        markers += info.markers()
    rng = np.random.default_rng(13)
    phi = PlantedPHI()
    bench_dir = root / "bench"
    bench_dir.mkdir()
    for n, (kind, writer) in enumerate(sorted(bench_corpus.WRITERS.items())):
        path = bench_dir / f"{kind}.dcm"
        ids = _ids(n)
        if kind == "mf":
            bench_corpus.write_mf(path, phi, ids, 1, rng, frames=3, rows=16, cols=16)
        else:
            writer(path, phi, ids, 1, rng)
        files.append(path)
    for path in files:
        _complete(path)
    extra = root / "extra"
    extra.mkdir()
    write_us(extra / "us.dcm", phi)
    write_comprehensive_sr(extra / "comprehensive_sr.dcm", phi)
    write_seg(extra / "seg.dcm", [p for p in files if "make_study_CT" in str(p)])
    files += [extra / "us.dcm", extra / "comprehensive_sr.dcm", extra / "seg.dcm"]
    return Generated(files, markers + phi.markers())


def pydicom_test_folder() -> Path:
    return Path(pydicom.__file__).parent / "data" / "test_files"


def pydicom_data_folder() -> Path | None:
    spec = importlib.util.find_spec("data_store")  # the pydicom-data package's import name
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def pydicom_test_files() -> list[Path]:
    folder = pydicom_test_folder()
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc", ".json", ".txt"))


def pydicom_data_files() -> list[Path]:
    folder = pydicom_data_folder()
    if folder is None:
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc", ".json", ".txt"))
