"""Fan-out chunk results: JSON read back into outcomes, output names chosen by the join, not the object."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from pipeline import fanout
from pipeline.intake import IntakeError
from pipeline.study import Outcome


def chunk_tar(path: Path, results: list[dict], members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in {**members, fanout.RESULTS: json.dumps(results).encode()}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_chunk_result_is_json_and_its_outputs_land_under_their_index(tmp_path: Path) -> None:
    """Outcomes come back from results.json; an output is written as scratch/INDEX.dcm whatever name it claims."""
    assert fanout.RESULTS == "results.json"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    results = [
        {"index": 4, "rel": "a/b", "outcome": "written", "reason": "", "result": None, "output": "../../evil"},
        {"index": 5, "rel": "a/c", "outcome": "skipped", "reason": "not DICOM", "result": None, "output": None},
    ]
    path = chunk_tar(tmp_path / "c.tar", results, {"4.dcm": b"DICM-ish bytes"})
    part = fanout._unpack(path, scratch, "batch", 0)
    assert part[4].outcome is Outcome.WRITTEN and part[4].output == scratch / "4.dcm"
    assert (scratch / "4.dcm").read_bytes() == b"DICM-ish bytes"
    assert part[5].outcome is Outcome.SKIPPED and part[5].reason == "not DICOM" and part[5].output is None
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["4.dcm", "c.tar"]


def test_a_chunk_without_its_results_or_an_output_it_names_is_refused(tmp_path: Path) -> None:
    """A chunk object lacking results.json (an old pickle one) or a listed output fails the join with a reason."""
    with tarfile.open(tmp_path / "old.tar", "w") as tar:
        info = tarfile.TarInfo("results.pickle")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(IntakeError, match="lacks results.json"):
        fanout._unpack(tmp_path / "old.tar", tmp_path, "batch", 1)
    missing = chunk_tar(tmp_path / "m.tar", [{"index": 2, "rel": "x", "outcome": "written", "reason": "",
                                              "result": None, "output": "2.dcm"}], {})
    with pytest.raises(IntakeError, match="lacks 2.dcm"):
        fanout._unpack(missing, tmp_path, "batch", 2)
