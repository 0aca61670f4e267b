"""Fuzzing de-identification: mutated bytes of valid DICOM files through the real engine.

Hypothesis overwrites, inserts, deletes and truncates bytes of three valid
files (explicit VR, implicit VR, and one with a nested sequence and a private
block, all carrying planted identifiers). For every mutant, de-identification
either raises one of Telerad's own errors (a clear, PHI-free message) or
writes a file; it finishes within a time limit and a memory limit; and no
planted identifier appears in what it wrote or in the error. The run is
derandomized, so CI sees the same examples every time; to explore further,
``TELERAD_FUZZ_EXAMPLES=3000 TELERAD_FUZZ_RANDOM=1`` draws new ones (see
docs/threat-model.md for the kind of damage no parser can tell from real data).
"""

from __future__ import annotations

import os
import signal
import uuid
import tracemalloc

import pydicom
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from pydicom.uid import ImplicitVRLittleEndian

from pipeline.deid import Deidentifier, load_profile
from pipeline.exceptions import TeleradError
from pipeline.pseudonyms import Pseudonyms
from pipeline.testing import find_markers, make_study

SECONDS_PER_FILE = 5
BYTES_PER_FILE = 64 * 2**20
EXAMPLES = int(os.environ.get("TELERAD_FUZZ_EXAMPLES", "300"))


class Hang(Exception):
    pass


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> tuple[list[bytes], list[str]]:
    root = tmp_path_factory.mktemp("fuzz-seeds")
    study = make_study(root / "DOE_FUZZ", series=1, images=2, rows=8, cols=8)
    explicit = study.files[0].read_bytes()
    ds = pydicom.dcmread(study.files[1])
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    implicit_path = root / "implicit.dcm"
    ds.save_as(implicit_path, enforce_file_format=True)
    return [explicit, implicit_path.read_bytes()], study.markers()


@pytest.fixture(scope="module")
def engine() -> Deidentifier:
    return Deidentifier(load_profile("basic"), Pseudonyms(b"f" * 32, "ACME"))


mutation = st.one_of(
    st.tuples(st.just("overwrite"), st.integers(0, 4000), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.integers(0, 4000), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 4000), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, 4000), st.just(0)),
    st.tuples(st.just("length"), st.integers(0, 4000), st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFE])),
    st.tuples(st.just("text"), st.integers(0, 4000), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("text"), st.integers(0, 4000), st.sampled_from([b"\\", b"^", b"=", b"\x1b$B", b"\xff\xfe", b"\x00"])),
)


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op, at, arg in ops:
        if op == "text":  # inside a text value: the structure holds, the value turns odd
            spots = [i for i in range(132, len(b)) if 0x41 <= b[i] <= 0x5A]
            if spots:
                i = spots[at % len(spots)]
                b[i:i + len(arg)] = arg
            continue
        at = 132 + at % max(1, len(b) - 132)  # past the preamble, so most mutants still look like DICOM
        if op == "overwrite":
            b[at:at + len(arg)] = arg
        elif op == "insert":
            b[at:at] = arg
        elif op == "delete":
            del b[at:at + arg]
        elif op == "truncate":
            del b[at:]
        elif op == "length":  # a plausible length field: 4 bytes little endian
            b[at:at + 4] = arg.to_bytes(4, "little")
    return bytes(b)


def _alarm(_signum, _frame):
    raise Hang()


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("TELERAD_FUZZ_RANDOM"),
          database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 1), ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_dicom_gives_a_telerad_error_or_a_clean_file(tmp_path, seeds, engine, which, ops):
    """Only Telerad's errors, within 5 s and 64 MB per file, and no planted identifier written or echoed."""
    data, markers = seeds[0][which], seeds[1]
    mutant = mutate(data, ops)
    case = tmp_path / f"case-{uuid.uuid4().hex}"
    src = case / "in.dcm"
    out = case / "out"
    src.parent.mkdir(parents=True)
    src.write_bytes(mutant)
    error = ""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, SECONDS_PER_FILE)
    tracemalloc.start()
    try:
        engine.deidentify_file(src, out)
        event("written")
    except TeleradError as exc:
        error = str(exc)
        event(type(exc).__name__)
    except Hang:
        pytest.fail(f"de-identification took more than {SECONDS_PER_FILE}s on a {len(mutant)}-byte file")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        _now, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < BYTES_PER_FILE, f"{peak} bytes for a {len(mutant)}-byte file"
    assert not find_markers(error.encode(), markers), error
    for p in out.rglob("*") if out.exists() else []:
        if p.is_file():
            assert not find_markers(p.read_bytes(), markers), (p.name, find_markers(p.read_bytes(), markers))
            assert not find_markers(str(p.relative_to(out)).encode(), markers)
