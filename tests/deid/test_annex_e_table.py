"""Table-driven: every Table E.1-1 row, under the Basic Profile and each option, top level and nested.

One dataset holds an element for every row (at top level, and again inside an
item of a sequence the table does not list); it is de-identified once per
option, and each row's element is checked against the action the table gives
for that option, read from the JSON data (not typed here).
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pipeline.deid import Deidentifier, load_profile
from pipeline.deid.cleaning import shift_da, shift_dt
from pipeline.deid.iodtypes import IodTypes
from pipeline.deid.profile import PRESETS, Rule, compound_choices, resolve_code, typed_letter
from pipeline.deid.standard import OPTION_COLUMNS, table_rows
from pipeline.pseudonyms import Pseudonyms
from pipeline.testing import PlantedPHI, make_dataset

SECRET = b"telerad-test-secret-0123456789ab"
ROWS = [r for r in table_rows()[0] if r.pattern.value >> 16 != 0x0002]
OPTIONS = [None, *OPTION_COLUMNS]
CONTAINER = 0x00081115  # ReferencedSeriesSequence: not in Table E.1-1, so walked as is
IDENTITY = {0x00100020, 0x00100010, 0x00080050}
SKIP_TAGS = {0x7FE00010}


def row_tag(row) -> int:
    """A concrete tag for the row: masks (50xx, 60xx) become group 5002 / 6002."""
    if row.pattern.exact:
        return row.pattern.value
    if row.pattern.value >> 24 == 0x50:
        return 0x50023000
    return (0x6002 << 16) | (row.pattern.value & 0xFFFF)


def row_vr(tag: int) -> str:
    try:
        vr = dictionary_VR(tag)  # also knows repeating groups (50xx, 60xx)
    except KeyError:
        return "UN"  # attributes newer than pydicom's dictionary
    return vr.split(" or ")[0]


def planted_value(vr: str, i: int):
    return {
        "AE": "ZQAE", "AS": "045Y", "CS": "ZQCS", "DA": "20200115", "DT": "20200115103000",
        "TM": "103000", "DS": "1.5", "IS": "7", "PN": f"Zqname{i}^Given",
        "UI": f"1.2.826.0.1.3680043.10.999.{i}", "UR": "http://zq.example/x",
        "FL": 1.5, "FD": 1.5, "SL": 7, "SS": 7, "UL": 7, "US": 7, "SV": 7, "UV": 7, "AT": 0x00100010,
    }.get(vr, f"CHEST ZQ{i:04d}" if vr in ("LO", "SH", "LT", "ST", "UT", "UC") else b"\x01\x02")


def plant(ds: Dataset, *, top: bool) -> dict[int, tuple[str, object]]:
    planted = {}
    for i, row in enumerate(ROWS):
        tag = row_tag(row)
        if tag in SKIP_TAGS or (top and tag >> 16 == 0):
            continue  # command-set elements cannot be written at the top of a file
        vr = row_vr(tag)
        if vr == "SQ":
            item = Dataset()
            item.CodeMeaning = "CHEST"
            value = Sequence([item])
        else:
            value = planted_value(vr, i)
        ds.add(DataElement(tag, vr, value))
        planted[tag] = (vr, value)
    return planted


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, dict, str]:
    root = tmp_path_factory.mktemp("annex")
    phi = PlantedPHI()
    ds = make_dataset(phi, study_uid="1.2.826.0.1.3680043.10.999.1", series_uid="1.2.826.0.1.3680043.10.999.2",
                      sop_uid="1.2.826.0.1.3680043.10.999.3", frame_of_ref="1.2.826.0.1.3680043.10.999.4")
    plant(ds, top=True)
    inner = Dataset()
    planted = plant(inner, top=False)
    ds[CONTAINER] = DataElement(CONTAINER, "SQ", Sequence([inner]))
    path = root / "src.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, planted, str(ds.PatientID)


@pytest.fixture(scope="module")
def outputs(source, tmp_path_factory):
    path, _, _ = source
    pseud = Pseudonyms(SECRET, "ACME")
    out = {}
    for opt in OPTIONS:
        d = tmp_path_factory.mktemp(f"out-{opt or 'basic'}")
        deid = Deidentifier(load_profile("basic", [opt] if opt else []), pseud)
        r = deid.deidentify_file(path, d)
        out[opt] = pydicom.dcmread(d / r.relpath)
    return out


CT_TYPES = IodTypes().root("1.2.840.10008.5.1.4.1.1.2")


def expected_letter(row, opt, nested: bool = False) -> tuple[str, str]:
    """The table's letter, resolved by the attribute's Type in the CT IOD where it stands."""
    choices = compound_choices()
    if opt and opt in row.options:
        code, source = row.options[opt], opt
    else:
        code, source = row.basic, "basic"
    letter = resolve_code(code, row.label, choices)
    if row_tag(row) >> 16 == 0x6002 and letter == "X":
        return "X", source  # Overlay Data removed: its whole overlay plane goes with it
    node = CT_TYPES.child(CONTAINER) if nested else CT_TYPES
    rule = Rule(row.label, row.pattern, letter, code, source)
    return typed_letter(rule, node.type_of(row_tag(row))), source


def check(elem, letter: str, source: str, vr: str, planted, pseud: Pseudonyms, patient_key: str,
          tag: int, nested: bool) -> None:
    """Assert the element shows the effect of ``letter`` (None = removed)."""
    if tag in IDENTITY:
        assert elem is not None and elem.value
        v = str(elem.value)
        if tag == 0x00080050:
            assert v == pseud.accession(str(planted))
        elif tag == 0x00100020:
            assert v == pseud.patient_id(str(planted))
        else:
            assert v == (pseud.patient_name("name:" + str(planted)) if nested else pseud.patient_name(patient_key))
        return
    if letter == "X":
        assert elem is None
        return
    if letter == "C" and source in ("retain-long-modified-dates",):
        shift = pseud.date_shift_days(patient_key)
        if vr == "DA":
            assert elem.value == shift_da(planted, shift)
        elif vr == "DT":
            assert elem.value == shift_dt(planted, shift)
        elif vr in ("TM", "SH", "US", "DS", "FD", "FL"):
            assert elem.value == planted
        else:
            assert elem is None
        return
    if letter == "C" and (vr == "UN" or (vr in ("OB", "OW") and source != "clean-graphics")):
        assert elem is None  # binary content cannot be cleaned of text, only removed
        return
    assert elem is not None, "element should be present"
    value = elem.value
    if letter == "K":
        if vr == "SQ":
            assert len(value) == 1
        else:
            assert value == planted
    elif letter == "Z":
        assert value in (None, "", b"") or (vr == "SQ" and len(value) == 0)
    elif letter == "D":
        if vr == "UI":
            assert value == pseud.uid(planted)
        elif vr == "SQ":  # dummy items: the item's own rules applied (a code's meaning is clinical)
            assert len(value) == 1 and value[0].CodeMeaning == "CHEST"
        else:
            assert value not in (None, "", b"") and value != planted
    elif letter == "U":
        if vr == "SQ":
            assert len(value) == 1
        else:
            assert value == pseud.uid(planted)
    elif letter == "C":
        if vr == "SQ":
            assert len(value) == 1 and value[0].CodeMeaning == "CHEST"
        elif vr == "AE":
            assert value.startswith("AE") and value != planted
        elif vr in ("LO", "SH", "LT", "ST", "UT", "UC"):
            assert value == "CHEST"
        elif vr in ("PN", "CS"):
            assert value in ("", None)
        else:
            assert value == planted
    else:  # pragma: no cover
        raise AssertionError(f"unexpected letter {letter}")


@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: o or "basic")
@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.pattern.text)
def test_row_under_option(row, opt, source, outputs):
    """The row's element is kept / removed / emptied / replaced / remapped / cleaned as the table says."""
    _, planted, patient_key = source
    tag = row_tag(row)
    vr, value = planted[tag]
    letter, src = expected_letter(row, opt)
    out = outputs[opt]
    pseud = Pseudonyms(SECRET, "ACME")
    if tag >> 16 != 0:
        check(out.get(tag), letter, src, vr, value, pseud, patient_key, tag, nested=False)
    letter, src = expected_letter(row, opt, nested=True)
    inner = out[CONTAINER].value[0]
    check(inner.get(tag), letter, src, vr, value, pseud, patient_key, tag, nested=True)


# --- the teleradiology preset, row by row, as the combination it is ----------------------------
TELERADIOLOGY = PRESETS["teleradiology"]


def combined_letter(row, nested: bool = False) -> tuple[str, str, bool]:
    """(letter, source, conflict) under all of the preset's options at once, from the table alone.

    Each option that lists the row gives its letter; where they disagree the
    documented rule applies (cleaning honours both requests, so C wins). The
    letter is then resolved by the attribute's Type in the CT IOD where it stands.
    """
    choices = compound_choices()
    given = [(resolve_code(row.options[o], row.label, choices), o, row.options[o])
             for o in TELERADIOLOGY if o in row.options]
    conflict = False
    if not given:
        letter, source, code = resolve_code(row.basic, row.label, choices), "basic", row.basic
    elif len({g[0] for g in given}) == 1:
        letter, source, code = given[0]
    else:
        cleaning = [g for g in given if g[0] == "C"]
        assert cleaning, f"{row.label}: options disagree ({given}) and no documented rule decides"
        (letter, source, code), conflict = cleaning[0], True
    if row_tag(row) >> 16 == 0x6002 and letter == "X":
        return "X", source, conflict  # Overlay Data removed: its whole overlay plane goes with it
    node = CT_TYPES.child(CONTAINER) if nested else CT_TYPES
    rule = Rule(row.label, row.pattern, letter, code, source)
    return typed_letter(rule, node.type_of(row_tag(row))), source, conflict


@pytest.fixture(scope="module")
def teleradiology_output(source, tmp_path_factory):
    path, _, _ = source
    d = tmp_path_factory.mktemp("out-teleradiology")
    r = Deidentifier(load_profile("teleradiology"), Pseudonyms(SECRET, "ACME")).deidentify_file(path, d)
    return pydicom.dcmread(d / r.relpath)


def test_teleradiology_has_rows_where_its_options_conflict():
    """The combination is exercised where it matters: some rows get different letters from two options."""
    conflicts = [r.label for r in ROWS if combined_letter(r)[2]]
    assert conflicts, "no row where the preset's options disagree: the combination test would prove little"


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.pattern.text)
def test_row_under_teleradiology_combination(row, source, teleradiology_output):
    """Each row gets the action of the preset's options combined (cleaning wins a conflict), top level and nested."""
    _, planted, patient_key = source
    tag = row_tag(row)
    vr, value = planted[tag]
    letter, src, _ = combined_letter(row)
    pseud = Pseudonyms(SECRET, "ACME")
    out = teleradiology_output
    if tag >> 16 != 0:
        check(out.get(tag), letter, src, vr, value, pseud, patient_key, tag, nested=False)
    letter, src, _ = combined_letter(row, nested=True)
    check(out[CONTAINER].value[0].get(tag), letter, src, vr, value, pseud, patient_key, tag, nested=True)
