"""Hostile ZIPs whose entries share compressed bytes are refused before anything is unpacked."""

from __future__ import annotations

import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipeline.exceptions import UnsafeArchiveError
from pipeline.zipsafe import inspect, safe_extract
from tests.hardening.zipcraft import quoted_overlap_zip, shared_range_zip


def test_a_quoted_overlap_bomb_is_refused_though_python_unpacks_it(tmp_path: Path) -> None:
    """A Fifield-style bomb that zipfile happily inflates ~1000:1 is refused naming the overlap, writing nothing."""
    bomb = tmp_path / "bomb.zip"
    unpacked = quoted_overlap_zip(bomb, entries=40, kernel_bytes=900_000)
    with zipfile.ZipFile(bomb) as zf:  # the archive is real: Python's own reader inflates every entry
        assert zf.testzip() is None
        assert sum(i.file_size for i in zf.infolist()) == unpacked
    assert unpacked > 1000 * bomb.stat().st_size
    with pytest.raises(UnsafeArchiveError, match=r"entries 1 and 2 share compressed data \(overlapping"):
        safe_extract(bomb, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.zip"]


def test_directory_entries_pointing_at_one_stream_are_refused(tmp_path: Path) -> None:
    """Three directory entries sharing one local header's data are refused by inspect."""
    z = tmp_path / "shared.zip"
    shared_range_zip(z, entries=3, data=b"DICM" * 1000)
    with pytest.raises(UnsafeArchiveError, match="share compressed data"):
        inspect(z)


def _stored_zip_with_a_longer_first_entry(z: Path, entries: int, claimed: int) -> Path:
    """Stored entries of 100 bytes; the directory then claims ``claimed`` compressed bytes for the first."""
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        for i in range(entries):
            zf.writestr(f"s/{i + 1}.dcm", bytes([97 + i]) * 100)
    raw = bytearray(z.read_bytes())
    struct.pack_into("<L", raw, raw.index(b"PK\x01\x02") + 20, claimed)
    z.write_bytes(bytes(raw))
    return z


def test_an_entry_reaching_into_the_next_is_refused(tmp_path: Path) -> None:
    """An entry whose stated compressed size runs into the following entry is refused."""
    z = _stored_zip_with_a_longer_first_entry(tmp_path / "long.zip", entries=2, claimed=150)
    with pytest.raises(UnsafeArchiveError, match="entries 1 and 2 share compressed data"):
        inspect(z)


def test_an_entry_overlapping_the_central_directory_is_refused(tmp_path: Path) -> None:
    """The last entry may not claim bytes of the central directory."""
    z = _stored_zip_with_a_longer_first_entry(tmp_path / "cd.zip", entries=1, claimed=120)
    with pytest.raises(UnsafeArchiveError, match="central directory"):
        inspect(z)


class _Unseekable:
    """A write-only stream: zipfile then writes data descriptors after each entry (flag bit 3)."""

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "wb")
        self.written = 0

    def write(self, b: bytes) -> int:
        self.written += len(b)
        return self.fh.write(b)

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def test_a_normal_study_zip_still_passes(tmp_path: Path) -> None:
    """Deflated, stored and streamed entries (with data descriptors) pass the overlap check."""
    z = tmp_path / "ok.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/1.dcm", b"x" * 5000)
        zf.writestr(zipfile.ZipInfo("b/"), b"")
        zf.writestr("b/3.dcm", b"z", compress_type=zipfile.ZIP_STORED)
    assert [str(rel) for _, rel in inspect(z)] == ["a/1.dcm", "b/3.dcm"]
    streamed = tmp_path / "streamed.zip"
    sink = _Unseekable(streamed)
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            with zf.open(f"s/{i}.dcm", "w") as fh:
                fh.write(bytes([i]) * 7000)
    sink.close()
    with zipfile.ZipFile(streamed) as zf:
        assert all(i.flag_bits & 0x8 for i in zf.infolist())
    assert len(inspect(streamed)) == 3


def test_anonymize_refuses_the_bomb_in_one_line(tmp_path: Path) -> None:
    """`telerad anonymize` on the quoted-overlap bomb exits non-zero naming the overlap and writes no output."""
    bomb = tmp_path / "bomb.zip"
    quoted_overlap_zip(bomb, entries=40, kernel_bytes=900_000)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "anonymize", str(bomb), str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "overlapping entries" in proc.stderr
    assert not out.exists() or not any(out.rglob("*.dcm"))
