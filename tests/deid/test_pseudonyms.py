"""Keyed pseudonyms: stable, well-formed, and dependent on the secret only."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from pipeline.exceptions import ConfigError
from pipeline.pseudonyms import MAX_DATE_SHIFT_DAYS, Pseudonyms

SECRET = b"telerad-test-secret-0123456789ab"  # same as conftest.SECRET


def test_same_input_same_pseudonym_in_another_process(pseudonyms):
    """A different worker process derives the very same IDs (no shared memory needed)."""
    code = (
        "from pipeline.pseudonyms import Pseudonyms;"
        f"p=Pseudonyms({SECRET!r}, 'acme');"
        "print(p.patient_id('123'), p.uid('1.2.3'), p.accession('A1'), p.study_id('1.2'), p.date_shift_days('123'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [pseudonyms.patient_id("123"), pseudonyms.uid("1.2.3"), pseudonyms.accession("A1"),
                   pseudonyms.study_id("1.2"), str(pseudonyms.date_shift_days("123"))]


def test_formats_fit_their_vrs(pseudonyms):
    """Patient IDs carry the org prefix, accessions fit SH, UIDs are valid 2.25 UIDs."""
    assert re.fullmatch(r"ACME-P[A-Z2-7]{16}", pseudonyms.patient_id("12345"))
    assert re.fullmatch(r"ACME-[A-Z2-7]{20}", pseudonyms.study_id("1.2.3.4"))
    acc = pseudonyms.accession("ACC0001")
    assert len(acc) <= 16 and acc.isalnum()
    for orig in ["1.2.3", "1.2.826.0.1.3680043.10.1234.9", "9" * 64]:
        u = pseudonyms.uid(orig)
        assert u.startswith("2.25.") and len(u) <= 64
        assert re.fullmatch(r"2\.25\.[1-9][0-9]*", u)
    assert pseudonyms.patient_name("12345") == pseudonyms.patient_id("12345")


def test_different_inputs_and_secrets_differ(pseudonyms):
    """Pseudonyms depend on the input and on the secret."""
    other = Pseudonyms(b"x" * 32, "ACME")
    assert pseudonyms.patient_id("1") != pseudonyms.patient_id("2")
    assert pseudonyms.patient_id("1") != other.patient_id("1")
    assert pseudonyms.uid("1.2.3") != other.uid("1.2.3")
    assert pseudonyms.key_id != other.key_id


def test_date_shift_is_in_range_and_per_patient(pseudonyms):
    """Date shifts go back 1..MAX days and differ between patients."""
    shifts = {pseudonyms.date_shift_days(str(i)) for i in range(200)}
    assert all(-MAX_DATE_SHIFT_DAYS <= s <= -1 for s in shifts)
    assert len(shifts) > 150


def test_key_id_and_repr_never_show_the_secret(pseudonyms):
    """The fingerprint recorded in manifests does not reveal the secret."""
    assert SECRET.hex() not in pseudonyms.key_id
    assert SECRET.decode() not in repr(pseudonyms)
    assert pseudonyms.key_id == Pseudonyms(SECRET, "OTHER").key_id


@pytest.mark.parametrize("secret,org", [(b"short", "ACME"), (SECRET, ""), (SECRET, "BAD ORG"), (SECRET, "X" * 17)])
def test_bad_construction_is_refused(secret, org):
    """Short secrets and unusable organisation prefixes are configuration errors."""
    with pytest.raises(ConfigError):
        Pseudonyms(secret, org)
