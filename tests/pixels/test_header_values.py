"""Values captured from the header are matched in OCR words the way scanners print them and OCR misreads them."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from pipeline.pixels.ocr import Word
from pipeline.pixels.rules import OcrSettings
from pipeline.pixels.screen import HeaderValues, classify


@pytest.fixture
def header() -> HeaderValues:
    ds = Dataset()
    ds.PatientName = "QUISTBRNDL^MARGARETHE"
    ds.PatientID = "48213377"
    ds.PatientBirthDate = "19620417"
    ds.AccessionNumber = "A7730915"
    ds.InstitutionName = "RIVERBEND CLINIC"
    return HeaderValues.of(ds)


@pytest.mark.parametrize("word", ["QUISTBRNDL,", "MARGARETHE", "48213377", "ID:48213377", "17/04/1962",
                                  "1962-04-17", "04/17/1962", "17-APR-1962", "17.04.62", "A7730915",
                                  "RIVERBEND", "QU1STBRNDL", "482I3377", "A773O915", "MARGARE"])
def test_printed_and_misread_forms_are_certain_hits(header, word):
    """Each printed form (and a common misreading) of a header value is a hit, whatever the confidence."""
    assert header.hit(word)
    assert classify(Word(word, 5.0, 0, 0, 10, 10), header, OcrSettings()) == "header"


@pytest.mark.parametrize("word", ["CINE", "MSCSKEL", "28Hz", "12345678", "19700101", "GEN", "ae"])
def test_other_words_are_not_header_hits(header, word):
    """Annotations that are not the patient's values are not header hits."""
    assert not header.hit(word)


def test_noise_doubt_and_text_are_told_apart(header):
    """Lower-case jumble is noise, capitals at middling confidence doubt, confident words text."""
    ocr = OcrSettings()
    assert classify(Word("ae", 68, 0, 0, 5, 5), header, ocr) is None
    assert classify(Word("mite", 39, 0, 0, 5, 5), header, ocr) is None
    assert classify(Word("MSCSKEL", 41, 0, 0, 5, 5), header, ocr) == "doubt"
    assert classify(Word("CINE", 95, 0, 0, 5, 5), header, ocr) == "text"
    assert classify(Word("red", 96, 0, 0, 5, 5), header, ocr) == "text"


def test_values_the_engine_captured_are_certain_hits_too():
    """What the engine captured for the verifier (a referring physician, an address) counts as well."""
    ds = Dataset()
    ds.PatientName = "QUISTBRNDL^MARGARETHE"
    values = HeaderValues.of(ds, captured=["HOLLOWAY^FRIEDERIKE", "12 KESTREL LANE"])
    assert values.hit("HOLLOWAY") and values.hit("FRIEDERIKE") and values.hit("KESTREL")
    assert not HeaderValues.of(ds).hit("HOLLOWAY")
