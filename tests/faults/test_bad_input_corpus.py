"""A corpus of bad input, built here from valid synthetic studies: each case a clear outcome, nothing lost.

Every case is a two-image study with planted identifiers plus one damaged or
unusual file, run through all batch steps in this process into a local
bucket. The outcome is one of three, decided per case: the batch is done with
every image (an unusual but valid encoding), done with the bad file skipped
and named, or failed closed with the file named and nothing uploaded. Always:
the original study is untouched, and no planted identifier reaches the
bucket, the errors or the audit log.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import struct
import time
import tracemalloc
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from pipeline import batch
from pipeline.exceptions import TeleradError
from pipeline.settings import load_settings
from pipeline.storage import open_store
from pipeline.testing import StudyInfo, make_study
from tests.faults.site import leaks, store_objects, tree_digest

IMAGES = 2


# --- builders: each damages or re-encodes ``study`` and returns the case's file ------------------
def _header_only(path: Path) -> bytes:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def zero_byte(study: StudyInfo) -> Path:
    p = study.root / "empty.dcm"
    p.write_bytes(b"")
    return p


def truncated(study: StudyInfo) -> Path:
    p = study.files[1]
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * 0.6)])
    return p


def preamble_then_garbage(study: StudyInfo) -> Path:
    p = study.root / "garbage.dcm"
    p.write_bytes(b"\0" * 128 + b"DICM" + random.Random(6).randbytes(600))
    return p


def wrong_vrs(study: StudyInfo) -> Path:
    """PatientName written as LO, PatientID as DA, InstitutionName as US: well framed, wrong types."""
    p = study.files[0]
    d = p.read_bytes()
    for tag, old, new in ((b"\x10\x00\x10\x00", b"PN", b"LO"), (b"\x10\x00\x20\x00", b"LO", b"DA"),
                          (b"\x08\x00\x80\x00", b"LO", b"US")):
        assert tag + old in d
        d = d.replace(tag + old, tag + new, 1)
    p.write_bytes(d)
    return p


def undefined_length_never_closed(study: StudyInfo) -> Path:
    p = study.files[0]
    tail = (struct.pack("<HH2sHI", 0x0040, 0x0275, b"SQ", 0, 0xFFFFFFFF)
            + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
            + struct.pack("<HH2sH", 0x0010, 0x0010, b"PN", 8) + b"PHIXX^YY")
    p.write_bytes(_header_only(p) + tail)
    return p


def _recode(path: Path, syntax, **kw) -> Path:
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    if kw:
        pydicom.dcmwrite(path, ds, force_encoding=True, **kw)
    else:
        ds.save_as(path, enforce_file_format=True)
    return path


def deflated(study: StudyInfo) -> Path:
    p = _recode(study.files[0], DeflatedExplicitVRLittleEndian)
    assert b"PHINAME" not in p.read_bytes()  # really deflated
    return p


def big_endian(study: StudyInfo) -> Path:
    return _recode(study.files[0], ExplicitVRBigEndian, implicit_vr=False, little_endian=False)


def implicit_vr(study: StudyInfo) -> Path:
    return _recode(study.files[0], ImplicitVRLittleEndian)


def pixel_2gb_in_1kb(study: StudyInfo) -> Path:
    p = study.files[0]
    p.write_bytes(_header_only(p) + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, 0x7FFFFFFE) + b"\0" * 64)
    assert p.stat().st_size < 4096
    return p


def _set_name(path: Path, charset, name: str, raw: bytes | None = None) -> Path:
    ds = pydicom.dcmread(path)
    if charset is None:
        del ds.SpecificCharacterSet
    else:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.save_as(path, enforce_file_format=True)
    if raw is not None:  # put bytes the declared character set cannot decode in place of the name
        data = path.read_bytes()
        encoded = name.encode("ascii")
        assert len(raw) == len(encoded)
        path.write_bytes(data.replace(encoded, raw, 1))
    return path


def latin1_declared(study: StudyInfo) -> Path:
    return _set_name(study.files[0], "ISO_IR 100", "MÜLLER^JÖRG")


def utf8_declared_latin1_bytes(study: StudyInfo) -> Path:
    tag = study.phi[0].tag
    return _set_name(study.files[0], "ISO_IR 192", f"PHINAME{tag}", raw=f"PHIN\xc4ME{tag}".encode("latin-1"))


def charset_missing_latin1_bytes(study: StudyInfo) -> Path:
    tag = study.phi[0].tag
    return _set_name(study.files[0], None, f"PHINAME{tag}", raw=f"PHIN\xc4ME{tag}".encode("latin-1"))


def japanese_iso2022(study: StudyInfo) -> Path:
    return _set_name(study.files[0], ["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう")


def duplicate_sop_same_content(study: StudyInfo) -> Path:
    p = study.root / "copy-of-first.dcm"
    shutil.copy(study.files[0], p)
    return p


def duplicate_sop_different_content(study: StudyInfo) -> Path:
    ds = pydicom.dcmread(study.files[0])
    ds.PixelData = b"\x01" * len(ds.PixelData)
    p = study.root / "zz-same-uid-other-pixels.dcm"
    ds.save_as(p, enforce_file_format=True)
    return p


def phi_in_file_name(study: StudyInfo) -> Path:
    p = study.files[0].with_name("DOE^JANE 1970-04-12 MRN 4471.dcm")
    os.rename(study.files[0], p)
    return p


def symlinks_out_of_the_study(study: StudyInfo) -> Path:
    outside = make_study(study.root.parent / "ELSEWHERE_OTHER_PATIENT", series=1, images=1)
    study.markers_outside = outside.markers()  # type: ignore[attr-defined]
    os.symlink(outside.root, study.root / "linked-folder")
    p = study.root / "linked-file.dcm"
    os.symlink(outside.files[0], p)
    return p


# name, builder, outcome: "done" (all images), "skipped" (done, this file named), "failed" (closed)
CASES = [
    ("zero-byte file", zero_byte, "skipped", "not a DICOM file"),
    ("truncated DICOM", truncated, "failed", "truncated"),
    ("valid preamble, garbage after", preamble_then_garbage, "failed", ""),
    ("wrong VRs", wrong_vrs, "done", ""),
    ("undefined length never closed", undefined_length_never_closed, "failed", "cannot be parsed"),
    ("deflated transfer syntax", deflated, "done", ""),
    ("explicit VR big endian", big_endian, "done", ""),
    ("implicit VR little endian", implicit_vr, "done", ""),
    ("2 GB pixel element in a 1 KB file", pixel_2gb_in_1kb, "failed", "truncated"),
    ("ISO_IR 100 declared, Latin-1 name", latin1_declared, "done", ""),
    ("UTF-8 declared, Latin-1 bytes", utf8_declared_latin1_bytes, "done", ""),
    ("no SpecificCharacterSet, Latin-1 bytes", charset_missing_latin1_bytes, "done", ""),
    ("ISO 2022 IR 87 (Japanese)", japanese_iso2022, "done", ""),
    ("duplicate SOP Instance UID, same content", duplicate_sop_same_content, "skipped", "same image as file"),
    ("duplicate SOP Instance UID, other content", duplicate_sop_different_content, "refused",
     "shares its SOP Instance UID"),
    ("file name holding PHI", phi_in_file_name, "done", ""),
    ("symlinks leaving the study", symlinks_out_of_the_study, "skipped", "leaves the study"),
]


def output_text(objects: dict) -> dict:
    """Each DICOM object's every element value, decoded (so deflated or re-encoded text is searched too)."""
    out = {}
    for key, obj in objects.items():
        if not key.endswith(".dcm"):
            continue
        ds = pydicom.dcmread(io.BytesIO(obj["body"]), force=True)
        values = []
        ds.walk(lambda d, e: values.append(f"{e.tag} {e.value!r}") if e.VR != "SQ" else None)
        values.append(repr(ds.file_meta))
        out[f"decoded {key}"] = "\n".join(values)
    return out


def run_case(tmp_path: Path, build, *, trace: bool = True, **settings_kw) -> tuple:
    settings = load_settings(home=tmp_path / "home", organization="ACME", **settings_kw)
    study = make_study(tmp_path / "DOE_JANE", series=1, images=IMAGES)
    case_file = build(study)
    before = tree_digest(study.root)
    batch_id = batch.create_batch(settings, study.root, priority="ROUTINE")
    if trace:  # Python allocations, numpy's included; slows the run, so not for the 10,000 files
        tracemalloc.start()
    started = time.monotonic()
    try:
        batch.run_all(settings, batch_id)
    except TeleradError:
        pass  # the record says why; anything else escaping is a failure of this test
    finally:
        seconds = time.monotonic() - started
        _size, peak = tracemalloc.get_traced_memory() if trace else (0, 0)
        tracemalloc.stop()
    record = batch.StateStore(settings.state_dir).get(batch_id)
    objects = store_objects(open_store(settings.effective_store_url))
    return settings, study, case_file, before, batch_id, record, objects, seconds, peak


@pytest.mark.parametrize("name, build, outcome, reason", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_a_clear_outcome_and_loses_nothing(tmp_path, ledger, name, build, outcome, reason):
    """Done, done-with-the-file-skipped, or failed closed naming the file; original intact; no PHI out."""
    settings, study, case_file, before, batch_id, record, objects, seconds, peak = run_case(tmp_path, build)
    rel = str(case_file.relative_to(study.root))
    markers = study.markers() + ["DOE^JANE", "DOE_JANE", "MRN 4471", "MÜLLER", "JÖRG", "山田", "やまだ",
                                 "PHIXX"] + getattr(study, "markers_outside", [])
    texts = {"error": record.error + " ".join(e.reason for e in record.errors + record.skipped),
             "audit": (settings.audit_log_path.read_text() if settings.audit_log_path.exists() else ""),
             **output_text(objects)}
    found = leaks(markers, objects=objects, texts=texts)
    found += [f"{k} (non-ASCII)" for k, obj in objects.items()
              for raw in ("MÜLLER".encode("latin-1"), "山田".encode("iso2022_jp"), b"PHIN\xc4ME")
              if raw in obj["body"]]
    images = record.counts.get("images", 0)
    lost = 0 if tree_digest(study.root) == before else 1
    if outcome == "refused":  # both copies are kept out, with the reason: the study less one image
        lost += max(0, IMAGES - 1 - images)
    elif outcome != "failed":
        lost += max(0, IMAGES - images)
    ledger.record(f"bad input: {name}", faults=[name], batches=1, completed=int(record.state == "done"),
                  failed_as_expected=int(outcome == "failed" and record.state == "failed"),
                  files_lost=lost, leaked=found)

    assert peak < 64 * 2**20, peak  # bounded memory whatever the input claims (time is pytest-timeout's)
    assert tree_digest(study.root) == before, "the original study is never touched"
    if outcome == "failed":
        assert record.state == "failed", f"{name}: expected a closed failure, got {record.state}"
        assert "could not be de-identified" in record.error and "Nothing was uploaded" in record.error
        assert [e.relpath for e in record.errors] == [rel], record.errors
        assert reason.lower() in record.errors[0].reason.lower(), record.errors[0].reason
        assert objects == {}, "nothing uploaded from a failed batch"
    elif outcome == "refused":
        assert record.state == "done", f"{name}: {record.error}"
        refused = {e.relpath: e.reason for e in record.refused}
        first = str(study.files[0].relative_to(study.root))
        assert set(refused) == {rel, first}, record.refused
        assert all(reason in r for r in refused.values()), refused
        assert images == IMAGES - 1 and sum(k.endswith(".dcm") for k in objects) == IMAGES - 1
        assert record.counts["refused"] == 2 and record.counts["files_seen"] == IMAGES + 1
    else:
        assert record.state == "done", f"{name}: {record.error}"
        assert images == IMAGES, record.counts
        assert sum(k.endswith(".dcm") for k in objects) == IMAGES
        if outcome == "skipped":
            named = [e for e in record.skipped if e.relpath == rel]
            assert named and reason in named[0].reason, record.skipped
    assert found == []


def test_a_study_of_two_patients_is_refused_unless_allowed(tmp_path, ledger):
    """Mixed patients fail the batch with the setting's name in the reason; with the setting, both go."""
    def two_patients(study):
        other = make_study(study.root / "second", patients=1, series=1, images=1)
        study.markers_outside = other.markers()
        return other.files[0]

    _s, study, _f, before, _b, refused, objects, _t, _p = run_case(tmp_path / "refused", two_patients)
    assert refused.state == "failed" and "TELERAD_ALLOW_MIXED_PATIENTS" in refused.error
    assert objects == {} and tree_digest(study.root) == before
    _s, study2, _f, _b2, _b, allowed, objects2, _t, _p = run_case(
        tmp_path / "allowed", two_patients, allow_mixed_patients=True)
    assert allowed.state == "done" and allowed.counts["images"] == IMAGES + 1
    found = leaks(study.markers() + study.markers_outside + study2.markers() + study2.markers_outside,
                  objects=objects2, texts={"error": refused.error})
    ledger.record("bad input: two patients in one study (refused, then allowed)", faults=["mixed patients"],
                  batches=2, completed=int(allowed.state == "done"), failed_as_expected=int(refused.state == "failed"),
                  files_lost=0 if allowed.counts.get("images") == IMAGES + 1 else 1, leaked=found)
    assert found == []


def test_ten_thousand_tiny_files_are_looked_at_quickly_and_named(tmp_path, ledger):
    """10,000 tiny non-DICOM files beside the images: each skipped and named, the images sent."""
    def many(study):
        folder = study.root / "many"
        folder.mkdir()
        for i in range(10_000):
            (folder / f"f{i:05d}").write_bytes(i.to_bytes(4, "little"))
        return folder / "f00000"

    _s, study, _f, before, _b, record, objects, _seconds, _peak = run_case(tmp_path, many, trace=False)
    ledger.record("bad input: 10,000 tiny files", faults=["10,000 tiny files"], batches=1,
                  completed=int(record.state == "done"), files_lost=IMAGES - record.counts.get("images", 0),
                  leaked=leaks(study.markers(), objects=objects))
    assert record.state == "done", record.error
    assert record.counts["files_seen"] == 10_000 + IMAGES and record.counts["images"] == IMAGES
    assert len(record.skipped) == 10_000
    assert tree_digest(study.root) == before


def test_an_invalid_vr_inside_a_sequence_item_does_not_leak_an_original_uid(tmp_path, ledger):
    """Found by the fuzz test: VR 'UI' -> '\\x00I' on ReferencedSOPClassUID in an item; the original
    ReferencedSOPInstanceUID after it must not reach the bucket (fail closed, or remap it)."""
    def bad_vr_in_item(study):
        p = study.files[1]
        data = p.read_bytes()
        k = data.index(b"\x08\x00\x50\x11UI")  # (0008,1150) UI, inside ReferencedImageSequence
        p.write_bytes(data[:k + 4] + b"\x00" + data[k + 5:])
        return p

    settings, study, case_file, before, _b, record, objects, _t, _p = run_case(tmp_path, bad_vr_in_item)
    found = leaks(study.markers(), objects=objects, texts={"error": record.error, **output_text(objects)})
    ledger.record("bad input: invalid VR inside a sequence item (fuzz finding)", faults=["invalid VR in item"],
                  batches=1, completed=int(record.state == "done"),
                  failed_as_expected=int(record.state == "failed"), files_lost=0, leaked=found)
    assert tree_digest(study.root) == before
    if record.state == "failed":
        assert [e.relpath for e in record.errors] == [str(case_file.relative_to(study.root))]
    assert found == [], "an original UID reached the bucket"
