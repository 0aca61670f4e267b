"""Stream a multipart body (form-data or related) to files, part by part, never whole.

One parser for the two kinds of multipart the gateway takes: ``multipart/form-data``
from browsers and scripts (files plus a few small fields) and STOW-RS's
``multipart/related; type="application/dicom"``. Each file part goes straight
into its own file under ``dest`` as its bytes arrive, named by its position
(``0001.part``): client file names often carry patient names and are never used.
Small text fields stay in memory, up to ``FIELD_LIMIT`` bytes each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header

from pipeline.gateway.limits import check_declared_length, too_large

FIELD_LIMIT = 64 * 1024
MAX_PARTS = 100_000


@dataclass
class Part:
    """One part: a form field's text, or a file written to ``path``."""

    name: str
    content_type: str
    path: Path | None = None
    size: int = 0
    value: bytearray = field(default_factory=bytearray)

    @property
    def is_file(self) -> bool:
        return self.path is not None

    @property
    def text(self) -> str:
        return self.value.decode("utf-8", "replace")


def boundary_of(content_type: str) -> bytes:
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "the multipart body has no boundary in its Content-Type")
    return boundary


class _Collector:
    """python-multipart callbacks that write file parts to disk as they stream in."""

    def __init__(self, dest: Path, limit: int, file_fields: set[str] | None) -> None:
        self.dest, self.limit, self.file_fields = dest, limit, file_fields
        self.parts: list[Part] = []
        self.total = 0
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._current: Part | None = None
        self._fh = None

    # headers of one part
    def on_part_begin(self) -> None:
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._field, self._value = bytearray(), bytearray()

    def on_headers_finished(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise HTTPException(413, f"too many parts (more than {MAX_PARTS})")
        disposition, params = parse_options_header(self._headers.get("content-disposition", ""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        ctype = self._headers.get("content-type", "")
        is_file = b"filename" in params or disposition == b"" or (
            self.file_fields is not None and name in self.file_fields)
        part = Part(name=name, content_type=ctype.split(";")[0].strip().lower())
        if is_file:
            part.path = self.dest / f"{len(self.parts) + 1:04d}.part"
            fd = os.open(part.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            self._fh = os.fdopen(fd, "wb")
        self._current = part
        self.parts.append(part)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current
        n = end - start
        self.total += n
        if self.total > self.limit:
            raise too_large(self.limit)
        part.size += n
        if self._fh is not None:
            self._fh.write(data[start:end])
        else:
            if part.size > FIELD_LIMIT:
                raise HTTPException(413, f"form field '{part.name[:40]}' is longer than {FIELD_LIMIT} bytes")
            part.value += data[start:end]

    def on_part_end(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._current = None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


async def stream_parts(request: Request, dest: Path, limit: int,
                       file_fields: set[str] | None = None) -> list[Part]:
    """Parse the request's multipart body into ``dest``; 413 past ``limit`` bytes, 400 when malformed."""
    check_declared_length(request, limit)
    dest.mkdir(parents=True, exist_ok=True)
    collector = _Collector(dest, limit, file_fields)
    callbacks = {name: getattr(collector, name) for name in (
        "on_part_begin", "on_header_field", "on_header_value", "on_header_end",
        "on_headers_finished", "on_part_data", "on_part_end")}
    parser = MultipartParser(boundary_of(request.headers.get("content-type", "")), callbacks)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except HTTPException:
        raise
    except Exception:
        raise HTTPException(400, "the multipart body is malformed") from None
    finally:
        collector.close()
    return collector.parts
