"""A synthetic, reproducible DICOM corpus for the benchmarks.

    .venv/bin/python -m bench.corpus OUT --size-mb 500 --mix ct=55,mr=28,mf=2,sc=5,sr=10 --seed 7

Kinds (every file is a valid Part 10 file, explicit VR little endian, with
identifiers planted by ``pipeline.testing`` so the de-identifiers have work to do):

- ``ct``  CT Image, 512 x 512 x 16 bit (about 0.5 MB)
- ``mr``  MR Image, 256 x 256 x 16 bit (about 0.13 MB)
- ``mf``  a multi-frame MR with per-frame functional groups, 96 frames of 256 x 256
          (about 12.6 MB); its pixel data is streamed to disk, never held whole
- ``sc``  Secondary Capture, 512 x 512 RGB (about 0.8 MB), BurnedInAnnotation NO
- ``sr``  Basic Text SR (no pixels), a report with names and free text (a few KB)

The mix gives each kind's share of the *files*; every kind in the mix appears
at least once, and files are generated until the corpus reaches the requested size. Files are grouped into studies (one patient
each) and series (one per kind within a study). The same seed, size and mix
give byte-identical files. ``write_multiframe`` is also used on its own by
``bench/memory.py`` to write a 1 GB file without holding it in memory.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pipeline.testing import PlantedPHI, make_dataset

UID_ROOT = "1.2.826.0.1.3680043.10.1234.9."
DEFAULT_MIX = "ct=55,mr=28,mf=2,sc=5,sr=10"
KINDS = ("ct", "mr", "mf", "sc", "sr")
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
_CHUNK = 8 * 1024 * 1024


@dataclass
class Corpus:
    root: Path
    files: list[Path] = field(default_factory=list)
    bytes: int = 0
    kinds: Counter = field(default_factory=Counter)
    kind_bytes: Counter = field(default_factory=Counter)
    studies: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        return {
            "root": str(self.root), "files": len(self.files), "bytes": self.bytes,
            "studies": len(self.studies), "kinds": dict(self.kinds),
            "kind_bytes": dict(self.kind_bytes), "seconds": round(self.seconds, 2),
        }


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, weight = part.partition("=")
        if not sep or kind not in KINDS:
            raise ValueError(f"mix entries are KIND=WEIGHT with KIND one of {', '.join(KINDS)}; got {part!r}")
        mix[kind] = float(weight)
    if not mix or sum(mix.values()) <= 0:
        raise ValueError("the mix needs at least one kind with a positive weight")
    return mix


def _uid(*parts: int | str) -> str:
    uid = UID_ROOT + ".".join(str(p) for p in parts)
    if len(uid) > 64:
        uid = UID_ROOT + str(int(hashlib.sha256(uid.encode()).hexdigest()[:24], 16))
    return uid


# --- one file of each kind ---------------------------------------------------------------------
def _base(phi: PlantedPHI, ids: dict, modality: str, instance: int, rows: int, cols: int) -> Dataset:
    return make_dataset(
        phi, study_uid=ids["study"], series_uid=ids["series"], sop_uid=ids["sop"],
        frame_of_ref=ids["frame"], modality=modality, instance=instance, rows=rows, cols=cols,
        referenced_sop=ids.get("first"),
    )


def _pixels(rng: np.random.Generator, shape: tuple[int, ...], dtype, high: int) -> bytes:
    return rng.integers(0, high, size=shape, dtype=dtype).tobytes()


def write_ct(path: Path, phi: PlantedPHI, ids: dict, instance: int, rng: np.random.Generator) -> None:
    ds = _base(phi, ids, "CT", instance, 16, 16)
    ds.Rows = ds.Columns = 512
    ds.RescaleIntercept, ds.RescaleSlope, ds.KVP = "-1024", "1", "120"
    ds.PixelData = _pixels(rng, (512, 512), np.uint16, 4096)
    ds.save_as(path, enforce_file_format=True)


def write_mr(path: Path, phi: PlantedPHI, ids: dict, instance: int, rng: np.random.Generator) -> None:
    ds = _base(phi, ids, "MR", instance, 16, 16)
    ds.Rows = ds.Columns = 256
    ds.MagneticFieldStrength, ds.EchoTime, ds.RepetitionTime = "1.5", "12", "500"
    ds.PixelData = _pixels(rng, (256, 256), np.uint16, 4096)
    ds.save_as(path, enforce_file_format=True)


def write_sc(path: Path, phi: PlantedPHI, ids: dict, instance: int, rng: np.random.Generator) -> None:
    ds = _base(phi, ids, "OT", instance, 16, 16)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SC_STORAGE
    ds.ConversionType = "WSD"
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "SliceThickness", "FrameOfReferenceUID"):
        delattr(ds, kw)
    ds.Rows = ds.Columns = 512
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.BurnedInAnnotation = "NO"
    ds.PixelData = _pixels(rng, (512, 512, 3), np.uint8, 256)
    ds.save_as(path, enforce_file_format=True)


def write_sr(path: Path, phi: PlantedPHI, ids: dict, instance: int, rng: np.random.Generator) -> None:
    ds = _base(phi, ids, "SR", instance, 16, 16)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    for kw in ("PixelData", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
               "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "BurnedInAnnotation",
               "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
        if kw in ds:
            delattr(ds, kw)
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "VERIFIED"
    obs = Dataset()
    obs.VerifyingObserverName = phi.value("phys")
    obs.VerifyingOrganization = phi.value("inst")
    obs.VerificationDateTime = "20261120103000"
    ds.VerifyingObserverSequence = Sequence([obs])
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "18748-4", "LN", "Diagnostic Imaging Report"
    ds.ConceptNameCodeSequence = Sequence([concept])
    words = ["no", "acute", "findings", "nodule", "stable", "compared", "prior", "mm", "lobe", "right", "left"]
    items = []
    for n in range(int(rng.integers(8, 24))):
        item = Dataset()
        item.RelationshipType, item.ValueType = "CONTAINS", "TEXT"
        name = Dataset()
        name.CodeValue, name.CodingSchemeDesignator, name.CodeMeaning = "121071", "DCM", "Finding"
        item.ConceptNameCodeSequence = Sequence([name])
        text = " ".join(words[int(i)] for i in rng.integers(0, len(words), size=40))
        item.TextValue = f"Patient {phi.patient_name} seen by {phi.value('phys')}: {text}"
        items.append(item)
    ds.ContentSequence = Sequence(items)
    ds.save_as(path, enforce_file_format=True)


def write_mf(path: Path, phi: PlantedPHI, ids: dict, instance: int, rng: np.random.Generator,
             *, frames: int = 96, rows: int = 256, cols: int = 256) -> int:
    return write_multiframe(path, phi, ids, instance, rng, frames=frames, rows=rows, cols=cols)


def write_multiframe(path: Path, phi: PlantedPHI, ids: dict, instance: int, rng: np.random.Generator,
                     *, frames: int, rows: int, cols: int) -> int:
    """An enhanced MR multi-frame whose pixel data is streamed to disk chunk by chunk.

    The header (with per-frame functional groups) is written by pydicom; the pixel
    data element header and its bytes are appended by hand, so memory stays at one
    chunk whatever the size. Returns the file size.
    """
    ds = _base(phi, ids, "MR", instance, 16, 16)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR
    del ds.PixelData
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
        delattr(ds, kw)
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.ContentQualification = "PRODUCT"
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.9, 0.9], 3.0
    shared.PixelMeasuresSequence = Sequence([measures])
    orient = Dataset()
    orient.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    shared.PlaneOrientationSequence = Sequence([orient])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for f in range(frames):
        item = Dataset()
        content = Dataset()
        content.FrameAcquisitionNumber = f + 1
        content.FrameAcquisitionDateTime = "20261120101700.000000"
        content.InStackPositionNumber = f + 1
        item.FrameContentSequence = Sequence([content])
        pos = Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, 3.0 * f]
        item.PlanePositionSequence = Sequence([pos])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    header = io.BytesIO()
    ds.save_as(header, enforce_file_format=True)
    length = frames * rows * cols * 2
    if length >= 0xFFFFFFFF:
        raise ValueError("pixel data of 4 GiB or more does not fit a defined-length element")
    with open(path, "wb") as out:
        out.write(header.getbuffer())
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length))
        left = length
        while left:
            n = min(_CHUNK, left)
            out.write(_pixels(rng, (n // 2,), np.uint16, 4096))
            left -= n
    return path.stat().st_size


WRITERS = {"ct": write_ct, "mr": write_mr, "mf": write_mf, "sc": write_sc, "sr": write_sr}
MODALITY = {"ct": "CT", "mr": "MR", "mf": "MR", "sc": "OT", "sr": "SR"}


# --- a corpus ---------------------------------------------------------------------------------
def generate(root: Path, *, size_mb: float = 500, mix: str | dict = DEFAULT_MIX, seed: int = 7,
             studies: int | None = None, files_per_study: int = 120, quiet: bool = False) -> Corpus:
    """Write files into ``root/study_NNN/KIND_series/IMNNNNN`` until ``size_mb`` MB are written.

    With ``studies`` the files are dealt out to exactly that many studies (round robin),
    else a new study starts every ``files_per_study`` files.
    """
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty")
    root.mkdir(parents=True, exist_ok=True)
    weights = parse_mix(mix) if isinstance(mix, str) else dict(mix)
    kinds = sorted(weights)
    p = np.array([weights[k] for k in kinds], dtype=float)
    p /= p.sum()
    rng = np.random.default_rng(seed)
    target = int(size_mb * 1_000_000)
    corpus = Corpus(root)
    started = time.perf_counter()
    per_study_count: Counter = Counter()
    first_sop: dict[tuple[int, str], str] = {}
    n = 0
    while corpus.bytes < target or n < len(kinds) or (studies and n < studies):
        # every kind of the mix at least once, then drawn by weight
        kind = kinds[n] if n < len(kinds) else kinds[int(rng.choice(len(kinds), p=p))]
        study = n % studies if studies else n // files_per_study
        per_study_count[study] += 1
        instance = per_study_count[study]
        phi = PlantedPHI(tag=f"{seed:02X}{study:04X}"[-8:])
        ids = {
            "study": _uid(seed, study),
            "frame": _uid(seed, study, 0),
            "series": _uid(seed, study, KINDS.index(kind) + 1),
            "sop": _uid(seed, study, KINDS.index(kind) + 1, instance),
            "first": first_sop.get((study, kind)),
        }
        first_sop.setdefault((study, kind), ids["sop"])
        folder = root / f"study_{study:03d}" / f"{kind}_series"
        if study >= len(corpus.studies):
            corpus.studies.append(root / f"study_{study:03d}")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"IM{instance:05d}"
        file_rng = np.random.default_rng([seed, study, instance])
        WRITERS[kind](path, phi, ids, instance, file_rng)
        size = path.stat().st_size
        corpus.files.append(path)
        corpus.bytes += size
        corpus.kinds[kind] += 1
        corpus.kind_bytes[kind] += size
        n += 1
        if not quiet and n % 200 == 0:
            print(f"  corpus: {n} files, {corpus.bytes / 1e6:.0f} MB", file=sys.stderr, flush=True)
    corpus.studies = sorted(set(corpus.studies))
    corpus.seconds = time.perf_counter() - started
    return corpus


CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench-corpus"


def cached(*, size_mb: float, mix: str = DEFAULT_MIX, seed: int = 7, files_per_study: int = 120,
           cache: Path = CACHE) -> Corpus:
    """The corpus for these parameters, generated once and kept under ``.cache/bench-corpus``.

    A corpus sized like real studies (GBs, hundreds of images per series) takes
    minutes to write; every later run of any benchmark reuses it. A corpus is
    complete only once its ``.complete`` marker exists (written last), so an
    interrupted generation is started again, never half used.
    """
    key = hashlib.sha256(f"{size_mb}|{mix}|{seed}|{files_per_study}".encode()).hexdigest()[:12]
    root = cache / f"{size_mb:g}mb-seed{seed}-{key}"
    marker = root / ".complete"
    if marker.exists():
        corpus = Corpus(root)
        for path in sorted(p for p in root.rglob("IM*") if p.is_file()):
            kind = path.parent.name.partition("_")[0]
            size = path.stat().st_size
            corpus.files.append(path)
            corpus.bytes += size
            corpus.kinds[kind] += 1
            corpus.kind_bytes[kind] += size
        corpus.studies = sorted({p.parent.parent for p in corpus.files})
        return corpus
    shutil.rmtree(root, ignore_errors=True)
    corpus = generate(root, size_mb=size_mb, mix=mix, seed=seed, files_per_study=files_per_study)
    marker.write_text(json.dumps(corpus.summary()))
    return corpus


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder to create (must be empty or absent)")
    ap.add_argument("--size-mb", type=float, default=500, help="about this many MB (default 500)")
    ap.add_argument("--mix", default=DEFAULT_MIX, help=f"file shares per kind (default {DEFAULT_MIX})")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--studies", type=int, default=None, help="deal the files out to exactly N studies")
    args = ap.parse_args(argv)
    corpus = generate(args.out, size_mb=args.size_mb, mix=args.mix, seed=args.seed, studies=args.studies)
    s = corpus.summary()
    print(f"{s['files']} files, {s['bytes'] / 1e6:.1f} MB in {s['studies']} studies "
          f"({', '.join(f'{k} {v}' for k, v in sorted(s['kinds'].items()))}) in {s['seconds']:.1f} s")
    # reading one back proves the files are valid DICOM
    pydicom.dcmread(corpus.files[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
