"""ZIP input: escapes, links and bombs are refused before anything is written."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from pipeline.exceptions import UnsafeArchiveError
from pipeline.zipsafe import ZipLimits, inspect, safe_extract


def write_zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def test_a_clean_archive_unpacks_with_its_folders(tmp_path: Path) -> None:
    """A normal study ZIP unpacks completely, folders and all."""
    z = write_zip(tmp_path / "s.zip", [("a/b/1.dcm", b"x" * 100), ("a/2.dcm", b"y"), ("top", b"z")])
    out = safe_extract(z, tmp_path / "out")
    assert (out / "a/b/1.dcm").read_bytes() == b"x" * 100
    assert (out / "a/2.dcm").read_bytes() == b"y"
    assert (out / "top").read_bytes() == b"z"


@pytest.mark.parametrize(
    "name, words",
    [
        ("../evil.dcm", "'..'"),
        ("a/../../evil.dcm", "'..'"),
        ("/etc/evil.dcm", "absolute"),
        ("C:/evil.dcm", "absolute"),
        ("..\\evil.dcm", "'..'"),
    ],
)
def test_zip_slip_is_refused_and_nothing_is_written(tmp_path: Path, name: str, words: str) -> None:
    """An entry escaping the folder is refused with the reason, and no file lands anywhere."""
    z = write_zip(tmp_path / "slip.zip", [("ok.dcm", b"fine"), (name, b"evil")])
    with pytest.raises(UnsafeArchiveError, match=words):
        safe_extract(z, tmp_path / "work" / "out")
    assert not (tmp_path / "work" / "out").exists()
    assert not (tmp_path / "evil.dcm").exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["slip.zip"]


def test_symlink_entries_are_refused(tmp_path: Path) -> None:
    """A link inside the archive (which could point anywhere) is refused."""
    link = zipfile.ZipInfo("series/link")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = write_zip(tmp_path / "link.zip", [("a.dcm", b"x"), (link, b"/etc/passwd")])
    with pytest.raises(UnsafeArchiveError, match="entry 2 is a symbolic link"):
        safe_extract(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_too_many_entries_are_refused(tmp_path: Path) -> None:
    z = write_zip(tmp_path / "many.zip", [(f"f{i}", b"x") for i in range(11)])
    with pytest.raises(UnsafeArchiveError, match="11 entries, more than the limit of 10"):
        safe_extract(z, tmp_path / "out", ZipLimits(max_entries=10))


def test_a_zip_bomb_is_refused_by_ratio(tmp_path: Path) -> None:
    """50 MB of zeros in a ~50 KB archive is refused as a bomb, before unpacking."""
    z = write_zip(tmp_path / "bomb.zip", [("zeros.dcm", bytes(50 * 1024 * 1024))])
    assert z.stat().st_size < 200_000
    with pytest.raises(UnsafeArchiveError, match="zip bomb"):
        safe_extract(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_archive_past_the_size_limit_is_refused(tmp_path: Path) -> None:
    rng = __import__("random").Random(1)
    data = bytes(rng.getrandbits(8) for _ in range(3000))
    z = write_zip(tmp_path / "big.zip", [("a", data), ("b", data)])
    with pytest.raises(UnsafeArchiveError, match="more than the limit of 5000 bytes"):
        safe_extract(z, tmp_path / "out", ZipLimits(max_unpacked_bytes=5000))


def _lie_about_size(path: Path, declared: int) -> None:
    """Rewrite the central directory so the entry claims ``declared`` unpacked bytes."""
    raw = bytearray(path.read_bytes())
    at = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, at + 24, declared)
    path.write_bytes(bytes(raw))


def test_headers_are_not_trusted_while_streaming(tmp_path: Path) -> None:
    """An entry whose header understates its size passes inspection but is refused while unpacking."""
    data = bytes(range(256)) * 400  # 100 KB, compresses well but under the ratio limit
    z = write_zip(tmp_path / "liar.zip", [("a.dcm", data)])
    _lie_about_size(z, 1000)
    assert inspect(z)[0][0].file_size == 1000
    with pytest.raises(UnsafeArchiveError, match="refused"):
        safe_extract(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["liar.zip"]


def test_reasons_do_not_repeat_entry_names(tmp_path: Path) -> None:
    """Entry names may hold patient names: reasons use positions instead."""
    z = write_zip(tmp_path / "s.zip", [("DOE^JOHN/../x.dcm", b"x")])
    with pytest.raises(UnsafeArchiveError) as err:
        safe_extract(z, tmp_path / "out")
    assert "DOE" not in str(err.value) and "entry 1" in str(err.value)


def test_not_a_zip_is_refused_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "half.zip"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(UnsafeArchiveError, match="not a readable ZIP"):
        safe_extract(bad, tmp_path / "out")


def test_colliding_names_are_refused(tmp_path: Path) -> None:
    """Two entries that would overwrite each other (or a file that is also a folder) are refused."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/x", b"1")
        zf.writestr("A/X", b"2")
    (tmp_path / "dup.zip").write_bytes(buf.getvalue())
    with pytest.raises(UnsafeArchiveError, match="same file"):
        safe_extract(tmp_path / "dup.zip", tmp_path / "out")
    z = write_zip(tmp_path / "fd.zip", [("a", b"1"), ("a/b", b"2")])
    with pytest.raises(UnsafeArchiveError, match="both a file and a folder"):
        safe_extract(z, tmp_path / "out2")
