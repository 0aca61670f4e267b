"""Unpack a submitted ZIP only when it is safe: no escapes, no links, no bombs.

An archive from a drop folder is untrusted input. Every entry is checked
against the limits *before* anything is written (``inspect``), and the
extraction then counts the bytes it really inflates, because sizes in ZIP
headers are whatever the archive's author wrote. A refused archive leaves
nothing behind: it is unpacked into a temporary folder beside ``dest`` that is
renamed into place only when every entry went through.

Reasons name entries by their position (``entry 3``), never by name: entry
names in a study ZIP often carry patient names.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.exceptions import UnsafeArchiveError
from pipeline.settings import Settings

_CHUNK = 1 << 20
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # PK\x03\x04 ... name length, extra length
_LOCAL_MAGIC = b"PK\x03\x04"
_DESCRIPTOR_MIN = 12  # crc, sizes: a data descriptor is never shorter


@dataclass(frozen=True)
class ZipLimits:
    """What an archive may hold; past any of these it is refused as a likely zip bomb.

    max_entries: files and folders in the archive.
    max_unpacked_bytes: the whole archive, unpacked.
    max_ratio: unpacked / compressed size, per entry and for the whole archive
      (DICOM rarely compresses past 20:1; bombs reach 1000:1 and more).
    ratio_floor_bytes: entries smaller than this are not held to max_ratio
      (a tiny file of zeros compresses very well and harms no one).
    """

    max_entries: int = 50_000
    max_unpacked_bytes: int = 32 * 1024**3
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_entries < 1 or self.max_unpacked_bytes < 1 or self.max_ratio < 1:
            raise ValueError("zip limits must be positive (max_ratio at least 1)")

    @classmethod
    def from_settings(cls, settings: Settings) -> "ZipLimits":
        """Limits from settings ``zip_max_entries``, ``zip_max_unpacked_bytes``, ``zip_max_ratio``."""
        return cls(
            max_entries=settings.zip_max_entries,
            max_unpacked_bytes=settings.zip_max_unpacked_bytes,
            max_ratio=settings.zip_max_ratio,
        )


def _refuse(zip_path: Path, reason: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"ZIP archive refused: {reason}; nothing from it was processed")


def _member_path(info: zipfile.ZipInfo, index: int) -> PurePosixPath | None:
    """The entry's relative path, or ``None`` for a folder entry; raises on escapes."""
    raw = info.filename
    name = raw.replace("\\", "/")
    if "\x00" in name:
        raise UnsafeArchiveError(f"entry {index} has a NUL character in its name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"entry {index} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeArchiveError(f"entry {index} climbs out of the folder with '..'")
    if not parts:
        if name.endswith("/") or not name:
            return None
        raise UnsafeArchiveError(f"entry {index} has an empty name")
    if raw.endswith("/") or info.is_dir():
        return None
    return PurePosixPath(*parts)


def _is_link(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return info.create_system == 3 and stat.S_ISLNK(mode)


def inspect(zip_path: Path, limits: ZipLimits | None = None) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Check every entry against ``limits`` without unpacking; returns the files to extract."""
    limits = limits or ZipLimits()
    zip_path = Path(zip_path)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _refuse(zip_path, f"not a readable ZIP archive ({type(exc).__name__})") from None
    if len(infos) > limits.max_entries:
        raise _refuse(zip_path, f"{len(infos)} entries, more than the limit of {limits.max_entries}")
    _check_no_overlap(zip_path, infos)
    files: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    seen: dict[str, int] = {}
    dirs: set[str] = set()
    total = compressed = 0
    for index, info in enumerate(infos, start=1):
        try:
            rel = _member_path(info, index)
        except UnsafeArchiveError as exc:
            raise _refuse(zip_path, str(exc)) from None
        if _is_link(info):
            raise _refuse(zip_path, f"entry {index} is a symbolic link")
        if info.flag_bits & 0x1:
            raise _refuse(zip_path, f"entry {index} is encrypted")
        if rel is None:
            continue
        key = str(rel).lower()  # refuse names that collide on case-insensitive disks too
        if key in seen:
            raise _refuse(zip_path, f"entries {seen[key]} and {index} unpack to the same file")
        seen[key] = index
        dirs.update(str(p).lower() for p in rel.parents if str(p) != ".")
        total += info.file_size
        compressed += info.compress_size
        if total > limits.max_unpacked_bytes:
            raise _refuse(
                zip_path,
                f"unpacks to more than the limit of {limits.max_unpacked_bytes} bytes",
            )
        if info.file_size > limits.ratio_floor_bytes and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise _refuse(
                zip_path,
                f"entry {index} expands {info.file_size / max(info.compress_size, 1):.0f}:1, "
                f"past the limit of {limits.max_ratio:.0f}:1 (zip bomb)",
            )
        files.append((info, rel))
    if total > limits.ratio_floor_bytes and total > limits.max_ratio * max(compressed, 1):
        raise _refuse(
            zip_path,
            f"the archive expands {total / max(compressed, 1):.0f}:1, past the limit of "
            f"{limits.max_ratio:.0f}:1 (zip bomb)",
        )
    clash = next((seen[k] for k in seen if k in dirs), None)
    if clash is not None:
        raise _refuse(zip_path, f"entry {clash} is both a file and a folder")
    return files


def _data_spans(zip_path: Path, infos: list[zipfile.ZipInfo]) -> list[tuple[int, int, int]]:
    """(start, end, entry number) of each entry's bytes: local header, data and descriptor.

    Read from the local headers themselves, since the central directory's offsets
    and sizes are only what the author claims.
    """
    spans: list[tuple[int, int, int]] = []
    with open(zip_path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        archive_size = fh.tell()
        for index, info in enumerate(infos, start=1):
            fh.seek(info.header_offset)
            raw = fh.read(_LOCAL_HEADER.size)
            if len(raw) != _LOCAL_HEADER.size or raw[:4] != _LOCAL_MAGIC:
                raise _refuse(zip_path, f"entry {index} points at no local header (damaged or forged)")
            name_len, extra_len = _LOCAL_HEADER.unpack(raw)[-2:]
            end = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len + info.compress_size
            if info.flag_bits & 0x8:
                end += _DESCRIPTOR_MIN
            if end > archive_size:
                raise _refuse(zip_path, f"entry {index} claims data past the end of the archive")
            spans.append((info.header_offset, end, index))
    return spans


def _check_no_overlap(zip_path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse entries sharing bytes: overlapping or "quoted" entries are how small bombs grow.

    A bomb of many entries over one compressed kernel (each entry's data quoting
    the next entry's header) stays under every per-entry ratio while unpacking to
    gigabytes; Python 3.11's ``zipfile`` does not notice. Honest archives never
    share a byte between entries, nor between an entry and the central directory.
    """
    try:
        with zipfile.ZipFile(zip_path) as zf:
            directory_start = zf.start_dir
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _refuse(zip_path, f"not a readable ZIP archive ({type(exc).__name__})") from None
    spans = sorted(_data_spans(zip_path, infos))
    for (start, end, index), (next_start, _next_end, next_index) in zip(spans, spans[1:]):
        if next_start < end:
            first, second = sorted((index, next_index))
            raise _refuse(
                zip_path,
                f"entries {first} and {second} share compressed data (overlapping entries: "
                "a zip bomb technique)",
            )
    if spans and spans[-1][1] > directory_start:
        raise _refuse(zip_path, f"entry {spans[-1][2]} overlaps the archive's central directory")


def safe_extract(zip_path: Path, dest: Path, limits: ZipLimits | None = None) -> Path:
    """Unpack ``zip_path`` into ``dest`` (which must not exist), or refuse and write nothing."""
    limits = limits or ZipLimits()
    zip_path, dest = Path(zip_path), Path(dest)
    files = inspect(zip_path, limits)
    if dest.exists():
        raise FileExistsError(f"{dest} exists already: unpack into a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.unpacking-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _extract_counted(zip_path, files, tmp, limits)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _extract_counted(
    zip_path: Path,
    files: list[tuple[zipfile.ZipInfo, PurePosixPath]],
    root: Path,
    limits: ZipLimits,
) -> None:
    """Stream each entry out, stopping as soon as real bytes pass a header or a limit."""
    total = 0
    real_root = root.resolve()
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for index, (info, rel) in enumerate(files, start=1):
                target = root.joinpath(*rel.parts)
                if not target.resolve().is_relative_to(real_root):  # belt and braces
                    raise _refuse(zip_path, f"entry {index} leaves the folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                written = 0
                with zf.open(info) as src, open(target, "xb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        total += len(chunk)
                        if written > info.file_size:
                            raise _refuse(
                                zip_path,
                                f"entry {index} unpacks to more than its header says (zip bomb)",
                            )
                        if total > limits.max_unpacked_bytes:
                            raise _refuse(
                                zip_path,
                                f"unpacks to more than the limit of {limits.max_unpacked_bytes} bytes",
                            )
                        out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
        raise _refuse(zip_path, f"damaged or unsupported entry ({type(exc).__name__})") from None
    except (ValueError, RuntimeError) as exc:  # zlib errors, bad passwords...
        raise _refuse(zip_path, f"damaged entry ({type(exc).__name__})") from None
