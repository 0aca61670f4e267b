"""Known answers: what must never change silently between releases.

Pseudonyms link a patient's new study to the prior ones at every reading site:
a change in their derivation breaks that link everywhere at once. And the
standard's table is data: a mis-parse or an edited file must fail here, checked
against rows typed from PS3.15 Table E.1-1 (2026d) by hand, not by the loader.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import date, timedelta

import pytest

from pipeline.deid import standard
from pipeline.deid.standard import DATA_DIR
from pipeline.pseudonyms import Pseudonyms

SECRET = b"telerad-known-answer-secret-0001"


@pytest.fixture
def p() -> Pseudonyms:
    return Pseudonyms(SECRET, "ACME")


def test_pseudonyms_are_pinned(p):
    """Fixed secret and inputs give these exact pseudonyms, UIDs and shifts (a change here breaks every link)."""
    assert p.patient_id("MRN-0012345") == "ACME-P4JTUTBU4VHC3EOUJ"
    assert p.patient_name("MRN-0012345") == "ACME-P4JTUTBU4VHC3EOUJ"
    assert p.accession("ACC778899") == "A7GDCFLWK5BEYUNT"
    assert p.study_id("1.2.826.0.1.3680043.8.498.1") == "ACME-3UAWSDGUOCS7RUIMKO5U"
    assert p.uid("1.2.826.0.1.3680043.8.498.1.2") == "2.25.204998539259963548732123459290684727958"
    assert p.date_shift_days("MRN-0012345") == -807
    assert p.key_id == "hmac-sha256:f1bd849b4283097c"
    assert p.text("StudyDescription", "CT HEAD") == "SWIGPTOE55G6EFBJ"


def test_a_shifted_date_is_pinned(p):
    """The prior study's interval survives: 2026-11-20 shifted by the patient's pinned days."""
    assert date(2026, 11, 20) + timedelta(days=p.date_shift_days("MRN-0012345")) == date(2024, 9, 4)


def test_the_patient_id_derivation_is_hmac_sha256_as_documented(p):
    """Recomputed from the documented recipe (HMAC-SHA256 over domain NUL value, base32)."""
    import base64

    mac = hmac.new(SECRET, b"patient\x00MRN-0012345", hashlib.sha256).digest()
    assert p.patient_id("MRN-0012345") == "ACME-P" + base64.b32encode(mac).decode()[:16]


ANNEX_E_SHA256 = "15dc7f74ce3057215714d29a8017f09c9105f8d0ce4b3529f3460e3db0669b10"

#: Rows typed from PS3.15 2026d Table E.1-1: tag -> (keyword, Basic Profile action, {option column: action}).
TYPED_ROWS = {
    "(0010,0010)": ("PatientName", "Z", {}),
    "(0010,0030)": ("PatientBirthDate", "Z", {}),
    "(0008,0050)": ("AccessionNumber", "Z", {}),
    "(0008,0080)": ("InstitutionName", "X/Z/D", {"retain_institution_identity": "K"}),
    "(0008,0090)": ("ReferringPhysicianName", "Z", {}),
    "(0008,1030)": ("StudyDescription", "X", {"clean_descriptors": "C"}),
    "(0018,1000)": ("DeviceSerialNumber", "X/Z/D", {"retain_device_identity": "K"}),
    "(0010,1010)": ("PatientAge", "X", {"retain_patient_characteristics": "K"}),
    "(0010,0040)": ("PatientSex", "Z", {"retain_patient_characteristics": "K"}),
    "(0010,1030)": ("PatientWeight", "X", {"retain_patient_characteristics": "K"}),
    "(0020,000D)": ("StudyInstanceUID", "U", {"retain_uids": "K"}),
    "(0008,0018)": ("SOPInstanceUID", "U", {"retain_uids": "K"}),
    "(0008,0020)": ("StudyDate", "Z", {"retain_long_full_dates": "K", "retain_long_modified_dates": "C"}),
    "(0008,1070)": ("OperatorsName", "X/Z/D", {}),
    "(0018,1030)": ("ProtocolName", "X/D", {"clean_descriptors": "C"}),
    "(0020,0010)": ("StudyID", "Z", {}),
}


def test_the_annex_e_data_is_the_pinned_edition():
    """The shipped Table E.1-1 file has the digest recorded when it was taken (2026d, 657 rows)."""
    body = (DATA_DIR / "ps3.15-annex-e.json").read_bytes()
    assert hashlib.sha256(body).hexdigest() == ANNEX_E_SHA256
    assert len(json.loads(body)) == 657


@pytest.mark.parametrize("tag", sorted(TYPED_ROWS))
def test_rows_typed_from_the_standard_match_the_data_and_the_loader(tag):
    """A dozen rows typed by hand from the standard agree with the JSON and with the loaded table."""
    keyword, basic, options = TYPED_ROWS[tag]
    raw = {r["tag"]: r for r in json.loads((DATA_DIR / "ps3.15-annex-e.json").read_text())}[tag]
    assert raw["keyword"] == keyword and raw["basic"] == basic
    for column in (c for c in raw if c not in ("tag", "keyword", "name", "basic", "retired", "in_std_comp_iod")):
        assert (raw[column] or None) == options.get(column), (tag, column)
    rows, _private = standard.table_rows()
    [row] = [r for r in rows if r.pattern.text == tag]
    assert row.keyword == keyword and row.basic == basic
    loaded = {standard.OPTION_COLUMNS[name]: action for name, action in row.options.items()}
    assert loaded == options
