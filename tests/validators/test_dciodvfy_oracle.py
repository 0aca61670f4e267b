"""dciodvfy and dcmdump judge Telerad's outputs against their inputs, over the whole oracle corpus.

The corpus: every kind of study the project generates (with US, a nested
Comprehensive SR and a highdicom SEG), pydicom's test files and pydicom-data.
An output fails if dciodvfy finds an error its input did not have, or dcmdump
a new warning. ``python -m tests.validators.oracle`` prints the same figures.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.validators import oracle

pytestmark = [
    pytest.mark.slow,
    pytest.mark.spread,  # three long profiles, one corpus that is cheap to make again
    pytest.mark.skipif(not (shutil.which("dciodvfy") and shutil.which("dcmdump")),
                       reason="dicom3tools and dcmtk are needed (.ci/setup installs them)"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[tuple[str, Path]]:
    return oracle.corpus_files(tmp_path_factory.mktemp("oracle"))


def _report(outcomes: list[oracle.Outcome]) -> str:
    lines = []
    for o in outcomes:
        for e in sorted(o.new_errors):
            lines.append(f"{o.name}: dciodvfy: {e}")
        for w in sorted(o.new_dump):
            lines.append(f"{o.name}: dcmdump: {w}")
    return "\n".join(lines[:60]) + (f"\n... {len(lines) - 60} more" if len(lines) > 60 else "")


@pytest.mark.parametrize("profile", oracle.PROFILES)
def test_no_output_has_an_error_its_input_did_not_have(profile, files):
    """Every de-identified file is as valid as its source, for dciodvfy and for dcmdump."""
    outcomes = oracle.run(profile, files, jobs=2)
    compared = [o for o in outcomes if o.status == "compared"]
    assert len(compared) >= 200, oracle.summary(outcomes)  # the corpus really was judged
    names = {o.name for o in compared}
    for kind in ("extra/seg.dcm", "extra/comprehensive_sr.dcm", "extra/us.dcm", "bench/sr.dcm", "bench/mf.dcm"):
        assert f"generated/{kind}" in names, f"{kind} was not de-identified"
    bad = [o for o in compared if o.new_errors or o.new_dump]
    if bad:
        pytest.fail(f"{len(bad)} outputs are less valid than their inputs:\n{_report(bad)}", pytrace=False)


def test_the_oracle_sees_an_error_it_is_shown():
    """The comparison is not blind: an output stripped of a Type 1 attribute is reported."""
    import pydicom
    import tempfile

    src = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
    with tempfile.TemporaryDirectory() as tmp:
        broken = Path(tmp) / "broken.dcm"
        ds = pydicom.dcmread(src)
        del ds.FrameOfReferenceUID
        ds.PositionReferenceIndicator = None
        ds.save_as(broken)
        new = oracle.dciodvfy_errors(broken) - oracle.dciodvfy_errors(src)
    assert any("FrameOfReferenceUID" in e for e in new), new


@pytest.mark.parametrize("profile", oracle.PROFILES)
def test_the_generated_corpus_leaks_nothing_planted(profile, tmp_path):
    """Valid is not at the cost of private: no planted identifier or original UID in any output byte."""
    from pipeline.testing import scan_tree_for_markers
    from tests.validators import corpus

    made = corpus.generated(tmp_path / "in")
    engine = oracle._engine(profile)
    for path in made.files:
        engine.deidentify_file(path, tmp_path / "out", digest=False)
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == len(made.files)
    assert scan_tree_for_markers(tmp_path / "out", made.markers) == {}
