"""Recognise DICOM by content, read it once, write it with its pixel bytes streamed.

Reading stops before the pixel data: the header is parsed by pydicom, and the
pixel data element's bytes are later copied straight from the source into the
output, so pixel data stays byte-identical and a 1 GB file never sits in
memory. Files whose layout does not allow that (deflated, big endian, elements
after the pixel data) are read whole instead.

Errors never carry PHI: no paths, no values, only tags and exception types.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pydicom
from pydicom import config as _pydicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UID,
)

from pipeline import dicomraw
from pipeline.limits import InflateLimits
from pipeline.exceptions import DeidentificationError, DicomReadError, NotDicomError

class _WithholdText(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = "pydicom message withheld (it may quote file names or values)"
        record.args = ()
        return True


_WITHHOLD = _WithholdText()


def quiet_pydicom() -> None:
    """Keep PHI out of pydicom's warnings and log lines, for the whole process (idempotent).

    pydicom warns about invalid values by quoting them, and names files by path;
    both may be PHI. Validation warnings are turned off, and pydicom's log records
    lose their text (the level and logger stay, so a problem is still visible).
    Called by every entry point that reads DICOM (``telerad``, the worker, the
    engine and ``read``), not as a side effect of importing this module.
    """
    _pydicom_config.settings.reading_validation_mode = _pydicom_config.IGNORE
    logger = logging.getLogger("pydicom")
    if _WITHHOLD not in logger.filters:
        logger.addFilter(_WITHHOLD)

PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
SYNTAX_MISMATCH = ("the data set is not encoded in the transfer syntax its file meta declares; "
                   "export it again from the sending system")
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
IMPLEMENTATION_CLASS_UID = "2.25.148939371387591563436155633391563728945"
IMPLEMENTATION_VERSION_NAME = "TELERAD_0_1"
_CHUNK = 4 * 1024 * 1024
_LONG_VRS = {vr.encode() for vr in dicomraw.LONG_VRS}
_VRS = set(dicomraw.VR_CODES)


DEFAULT_INFLATE = InflateLimits()


def inflate(data: bytes | memoryview, limits: InflateLimits = DEFAULT_INFLATE) -> bytes:
    """Inflate a raw deflate stream, refusing one that grows past ``limits``.

    The output is produced in bounded steps (``max_length``), so memory never
    exceeds the limit however small the compressed input is.
    """
    unpacker = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    pending = bytes(data)
    step = 4 * 1024 * 1024
    while True:
        piece = unpacker.decompress(pending, step)
        out += piece
        if len(out) > limits.max_bytes:
            raise DicomReadError(
                f"the deflated dataset inflates to more than {limits.max_bytes // (1024 * 1024)} MB "
                "(TELERAD_DEFLATED_MAX_BYTES); refused as a possible decompression bomb"
            )
        if len(out) > limits.ratio_floor and len(out) > limits.max_ratio * max(1, len(data)):
            raise DicomReadError(
                f"the deflated dataset inflates more than {limits.max_ratio}:1 "
                "(TELERAD_DEFLATED_MAX_RATIO); refused as a possible decompression bomb"
            )
        pending = unpacker.unconsumed_tail
        if unpacker.eof or (not pending and not piece):
            break
    if not unpacker.eof:
        raise DicomReadError("the deflated dataset is truncated (its deflate stream does not end)")
    return bytes(out)


@dataclass
class SourceFile:
    """A parsed DICOM file: its header dataset and where its pixel element lies."""

    dataset: Dataset
    transfer_syntax: UID
    pixel_span: tuple[int, int] | None  # (offset, length) of the raw pixel element in the source
    path: Path | None  # None for a header parsed from memory
    head: bytes | None = None  # the file's bytes up to the pixel element (all of it if not streamed)
    data: bytes | None = None  # the whole file, when it was small enough to read in one go

    def header_bytes(self) -> bytes:
        """The file up to its pixel element: where every identifier of the header lies."""
        if self.head is not None:
            return self.head
        with open(self.path, "rb") as fh:
            return fh.read() if self.pixel_span is None else fh.read(self.pixel_span[0])


def _kind(head: bytes) -> str:
    """``"part10"`` (DICM preamble) or ``"raw"`` (a bare dataset); else NotDicomError."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "part10"
    if _looks_like_raw_dataset(head):
        return "raw"
    raise NotDicomError("not a DICOM file (no DICM preamble and no dataset at the start)")


def _looks_like_raw_dataset(head: bytes) -> bool:
    """A bare dataset starts with a low, even group's element, explicit or implicit VR."""
    if len(head) < 8:
        return False
    for endian in ("<", ">"):
        group, elem = struct.unpack(endian + "HH", head[:4])
        if group not in (0x0002, 0x0004, 0x0008, 0x0010) or elem > 0x0100:
            continue
        if head[4:6] in _VRS:
            return True
        (length,) = struct.unpack(endian + "I", head[4:8])
        if endian == "<" and length < 0x10000 and (length % 2 == 0 or length == 1):
            return True
    return False


class _BoundedReader(io.BufferedReader):
    """A file whose reads never ask for more than is left in it.

    pydicom reads an element's value with ``read(declared_length)``, and CPython
    allocates the whole requested size before reading: a 700-byte file declaring
    a 2 GB element would cost 2 GB of memory (or a MemoryError). Capped at what
    the file holds, the short read is reported as truncation instead.
    """

    def __init__(self, fd: int) -> None:
        super().__init__(io.FileIO(fd, "rb", closefd=True))
        self._size = os.fstat(fd).st_size

    def read(self, n: int | None = -1) -> bytes:
        if n is not None and n > 0:
            n = min(n, max(0, self._size - self.tell()))
            if n == 0:
                return b""
        return super().read(n)


def read(path: Path, *, load_pixels: bool = False, header_only: bool = False,
         inflate_limits: InflateLimits = DEFAULT_INFLATE) -> SourceFile:
    """Parse ``path`` once; NotDicomError for non-DICOM, DicomReadError when it cannot be parsed.

    A Part 10 file is cut into raw elements by ``dicomraw`` (the fast path);
    anything that parser does not expect is read by pydicom, as before. A
    small file is read whole in one go, so its pixel bytes are written from
    memory; ``header_only`` (the verifier) reads no more than it must.
    """
    quiet_pydicom()
    try:
        with open(path, "rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            first = size if load_pixels else min(size, _HEADER_READ if header_only else _WHOLE_READ)
            buf = fh.read(first)
            kind = _kind(buf[:132])
            if kind == "part10":
                try:
                    fast = _read_raw(path, fh, buf, size, load_pixels, inflate_limits)
                except (NotDicomError, DicomReadError, OSError):
                    raise
                except Exception:  # Unparsed, or a damaged meta: pydicom decides, as it always did
                    fast = None
                if fast is not None:
                    return fast
    except OSError as exc:
        raise DicomReadError(f"cannot read the file ({exc.strerror or type(exc).__name__})") from None
    return _read_pydicom(path, kind, load_pixels)


def _read_pydicom(path: Path, kind: str, load_pixels: bool) -> SourceFile:
    try:
        # Opened by descriptor so that pydicom's messages name no path.
        with _BoundedReader(os.open(path, os.O_RDONLY)) as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fh, force=(kind == "raw"), stop_before_pixels=not load_pixels)
            stop = fh.tell()
            size = os.fstat(fh.fileno()).st_size
            if len(ds) == 0 and kind == "part10":
                raise DicomReadError("the file has a DICOM preamble but no readable data elements")
            _check_not_dicomdir(ds)
            implicit, little = ds.original_encoding
            ts = _transfer_syntax(getattr(ds, "file_meta", None), implicit, little)
            span = None
            if ts == DeflatedExplicitVRLittleEndian and not load_pixels:
                # pydicom inflates the whole stream; stopping "before the pixels" would drop
                # them and every element after them. Read it whole (the raw path already
                # checked that it inflates within the limits).
                fh.seek(0)
                ds = pydicom.dcmread(fh, force=(kind == "raw"))
            elif not load_pixels:
                span = _pixel_span(fh, stop, size, ts)
                if span is None and stop < size:
                    # Elements after the pixel data, or a layout we do not stream: read whole.
                    fh.seek(0)
                    ds = pydicom.dcmread(fh, force=(kind == "raw"))
            _check_complete(ds, size, streamed=span is not None)
    except (NotDicomError, DicomReadError):
        raise
    except Exception as exc:  # pydicom raises many types; their messages may quote values
        raise DicomReadError(
            f"the file looks like DICOM but cannot be parsed ({type(exc).__name__})"
        ) from None
    if len(ds) == 0:
        raise NotDicomError("not a DICOM object (no data elements)")
    return SourceFile(dataset=ds, transfer_syntax=ts, pixel_span=span, path=path)


def read_header_bytes(buf: bytes, inflate_limits: InflateLimits = DEFAULT_INFLATE) -> SourceFile:
    """Parse a Part 10 header held in memory (up to its pixel element), as ``read`` parses a file."""
    quiet_pydicom()
    kind = _kind(buf[:132])
    if kind == "part10":
        try:
            fast = _read_raw(None, None, buf, len(buf), False, inflate_limits)
        except (NotDicomError, DicomReadError):
            raise
        except Exception:  # Unparsed, or a damaged meta: pydicom decides
            fast = None
        if fast is not None:
            return fast
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(buf), force=(kind == "raw"), stop_before_pixels=True)
        implicit, little = ds.original_encoding
        ts = _transfer_syntax(getattr(ds, "file_meta", None), implicit, little)
    except Exception as exc:  # pydicom raises many types; their messages may quote values
        raise DicomReadError(f"the header cannot be parsed ({type(exc).__name__})") from None
    return SourceFile(dataset=ds, transfer_syntax=ts, pixel_span=None, path=None, head=buf)


def read_header_lean(buf: bytes, leave_out: set[int] | frozenset[int]) -> SourceFile | None:
    """A Part 10 header held in memory without the elements ``leave_out`` names (see
    ``dicomraw.scan_explicit_little``); None when it is not a plain explicit VR little
    endian header ending at its pixel element (then ``read_header_bytes`` reads it)."""
    if buf[128:132] != b"DICM":
        return None
    try:
        meta, start = _file_meta(buf)
        declared = dicomraw.value_of(meta, "TransferSyntaxUID")
        syntax = None if declared is None else _explicit_little_syntax(str(declared))
        if syntax is None or start + 6 > len(buf) or buf[start + 4:start + 6] not in dicomraw.VR_CODES:
            return None
        elements, _, _ = dicomraw.scan_explicit_little(buf, start, len(buf), leave_out, stop_at_pixels=True)
        ds = dicomraw.dataset_of(elements, implicit=False, little=True)
    except Exception:  # Unparsed, a damaged meta or charset: read_header_bytes decides, with its errors
        return None
    ds.file_meta = meta
    return SourceFile(dataset=ds, transfer_syntax=syntax, pixel_span=None, path=None, head=buf)


@lru_cache(maxsize=64)
def _explicit_little_syntax(declared: str) -> UID | None:
    """The transfer syntax when its dataset is explicit VR little endian and not deflated, else None."""
    syntax = UID(declared)
    if (not syntax.is_transfer_syntax or syntax.is_implicit_VR or not syntax.is_little_endian
            or syntax == DeflatedExplicitVRLittleEndian):
        return None
    return syntax


_WHOLE_READ = 1024 * 1024  # files up to this size are read whole: their pixels need no second open
_HEADER_READ = 64 * 1024


def _read_raw(path: Path | None, fh, buf: bytes, size: int, load_pixels: bool,
              inflate_limits: InflateLimits = DEFAULT_INFLATE) -> SourceFile | None:
    """The fast path: header bytes cut by ``dicomraw``; None (or Unparsed) leaves it to pydicom.

    ``fh`` is None for bytes already in memory (``read_header_bytes``).
    """
    meta, start = _file_meta(buf)
    declared = dicomraw.value_of(meta, "TransferSyntaxUID")
    if declared is None or start >= size:
        return None
    declared = UID(str(declared))
    if not declared.is_transfer_syntax:
        return None  # unknown: pydicom guesses
    if declared == DeflatedExplicitVRLittleEndian:
        return _read_deflated(path, fh, buf, size, meta, start, inflate_limits)
    little = declared.is_little_endian
    while True:
        if start + 6 > len(buf) and len(buf) < size:
            buf += fh.read(size - len(buf))
        implicit = buf[start + 4:start + 6] not in dicomraw.VR_CODES
        try:
            elements, stop, at_pixels = dicomraw.parse_elements(
                buf, start, len(buf), implicit=implicit, little=little, stop_at_pixels=not load_pixels)
        except dicomraw.Unparsed:
            if len(buf) >= size:
                raise
            buf += fh.read(max(len(buf), 64 * 1024))
            continue
        if not at_pixels and len(buf) < size:
            buf += fh.read(max(len(buf), 64 * 1024))
            continue
        break
    ts = _transfer_syntax(meta, implicit, little)
    if fh is None:  # a header held in memory: it ends where the pixel element starts
        ds = dicomraw.dataset_of(elements, implicit=implicit, little=little)
        ds.file_meta = meta
        return SourceFile(dataset=ds, transfer_syntax=ts, pixel_span=None, path=None, head=buf)
    span = _pixel_span(fh, stop, size, ts) if at_pixels else None
    if at_pixels and span is None:
        # Elements after the pixel data, or a layout we do not stream: read whole.
        fh.seek(len(buf))
        buf += fh.read(size - len(buf))
        elements, stop, _ = dicomraw.parse_elements(buf, start, len(buf), implicit=implicit, little=little)
    ds = _part10_dataset(elements, meta, buf[:128], implicit=implicit, little=little)
    head = buf if span is None else buf[:span[0]]
    whole = buf if span is not None and len(buf) == size else None
    return SourceFile(dataset=ds, transfer_syntax=ts, pixel_span=span, path=path, head=head, data=whole)


def _part10_dataset(elements: dict, meta: FileMetaDataset, preamble: bytes, *, implicit: bool,
                    little: bool) -> Dataset:
    """The dataset of a Part 10 file cut by ``dicomraw``; refuses an empty one and a DICOMDIR."""
    if not elements:
        raise DicomReadError("the file has a DICOM preamble but no readable data elements")
    ds = dicomraw.dataset_of(elements, implicit=implicit, little=little)
    ds.file_meta = meta
    ds.preamble = preamble
    _check_not_dicomdir(ds)
    return ds


def _read_deflated(path: Path | None, fh, buf: bytes, size: int, meta: FileMetaDataset, start: int,
                   limits: InflateLimits) -> SourceFile:
    """A Deflated Explicit VR Little Endian file, inflated within ``limits`` and held whole.

    Its pixels cannot be streamed from the source (they are inside the deflate
    stream), so the whole dataset, pixels and all, is parsed and written again.
    ``head`` is the inflated file (preamble, meta, dataset), so the verifier
    searches readable bytes, not compressed ones.
    """
    if fh is not None and len(buf) < size:
        if size > limits.max_bytes:
            raise DicomReadError(
                f"the deflated file is larger than {limits.max_bytes // (1024 * 1024)} MB "
                "(TELERAD_DEFLATED_MAX_BYTES)"
            )
        fh.seek(len(buf))
        buf += fh.read(size - len(buf))
    body = inflate(memoryview(buf)[start:], limits)
    elements, _stop, _ = dicomraw.parse_elements(body, 0, len(body), implicit=False, little=True)
    ds = _part10_dataset(elements, meta, buf[:128], implicit=False, little=True)
    return SourceFile(dataset=ds, transfer_syntax=DeflatedExplicitVRLittleEndian, pixel_span=None,
                      path=path, head=bytes(buf[:start]) + body)


def _file_meta(buf: bytes) -> tuple[FileMetaDataset, int]:
    """The File Meta Information group (always explicit VR little endian) and where the dataset starts."""
    pos = 132
    while pos + 8 <= len(buf) and buf[pos:pos + 2] == b"\x02\x00":
        pos += (12 + struct.unpack_from("<I", buf, pos + 8)[0] if buf[pos + 4:pos + 6] in _LONG_VRS
                else 8 + struct.unpack_from("<H", buf, pos + 6)[0])
    if pos > len(buf):
        raise dicomraw.Unparsed("the file meta runs past the end")
    elements, _, _ = dicomraw.parse_elements(buf, 132, pos, implicit=False, little=True)
    return dicomraw.dataset_of(elements, implicit=False, little=True, cls=FileMetaDataset), pos


def _check_complete(ds: Dataset, size: int, *, streamed: bool) -> None:
    """Refuse a truncated file: pydicom silently returns the elements it could read."""
    last_end = 0
    for elem in ds._dict.values():
        length = getattr(elem, "length", None)
        tell = getattr(elem, "value_tell", None)
        value = getattr(elem, "value", None)
        if length is None or tell is None or length == 0xFFFFFFFF:
            last_end = 0  # an undefined-length element: its end is not known here
            continue
        if isinstance(value, (bytes, bytearray)) and len(value) != length:
            raise DicomReadError("the file is truncated (an element is shorter than its length)")
        last_end = tell + length
    if not streamed and last_end and last_end < size and size - last_end < 12:
        raise DicomReadError("the file is truncated (it ends inside an element header)")


def _check_not_dicomdir(ds: Dataset) -> None:
    meta = getattr(ds, "file_meta", None)
    sop_class = str(dicomraw.value_of(meta, "MediaStorageSOPClassUID", "")) if meta is not None else ""
    if sop_class == DICOMDIR_SOP_CLASS or 0x00041220 in ds:
        raise NotDicomError("a DICOMDIR (media directory), not an image: skipped")


def _transfer_syntax(meta, implicit: bool | None, little: bool | None) -> UID:
    """The syntax the data set is encoded in; DicomReadError when the file meta declares another."""
    declared = dicomraw.value_of(meta, "TransferSyntaxUID") if meta is not None else None
    declared = UID(str(declared)) if declared is not None else None
    if implicit is None:
        return declared or ExplicitVRLittleEndian
    actual = ImplicitVRLittleEndian if implicit else (
        ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )
    if declared is None:
        return actual
    if declared.is_implicit_VR == implicit and declared.is_little_endian == little:
        return declared
    if declared.is_compressed:
        # Encapsulated pixels in an implicit-VR data set: a known vendor quirk (pydicom's
        # SC_rgb_jpeg.dcm). Nothing is lost or guessed: the output is written explicit, as the
        # declared syntax requires, with the same fragments.
        return declared
    # The meta says one encoding and the data set is in another: a sender's bug that every
    # door refuses alike (it is never re-labelled silently), so the sender can fix and resend.
    raise DicomReadError(SYNTAX_MISMATCH)


def _pixel_span(fh, stop: int, size: int, ts: UID) -> tuple[int, int] | None:
    """Offset and length of the top-level pixel element at ``stop``, if it can be streamed."""
    if stop >= size or ts == DeflatedExplicitVRLittleEndian or not ts.is_little_endian:
        return None
    fh.seek(stop)
    head = fh.read(12)
    if len(head) < 8:
        return None
    group, elem = struct.unpack("<HH", head[:4])
    if (group << 16 | elem) not in PIXEL_TAGS:
        return None
    if ts.is_implicit_VR:
        (length,) = struct.unpack("<I", head[4:8])
        header_len = 8
    else:
        if head[4:6] not in _LONG_VRS or len(head) < 12:
            return None
        (length,) = struct.unpack("<I", head[8:12])
        header_len = 12
    if length != 0xFFFFFFFF:
        end = stop + header_len + length
    else:
        end = _end_of_encapsulated(fh, stop + header_len, size)
        if end is None:
            return None
    if end != size:
        return None
    return stop, end - stop


def _end_of_encapsulated(fh, pos: int, size: int) -> int | None:
    """Walk the items of encapsulated pixel data to the sequence delimiter."""
    while pos + 8 <= size:
        fh.seek(pos)
        group, elem, length = struct.unpack("<HHI", fh.read(8))
        pos += 8
        if (group, elem) == (0xFFFE, 0xE0DD):
            return pos
        if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            return None
        pos += length
    return None


def file_meta_bytes(ds: Dataset, transfer_syntax: UID) -> bytes:
    """A new File Meta Information group, encoded: no source AE title, no private information."""
    elements = b"".join(_meta_element(number, vr, value) for number, vr, value in (
        (0x0001, b"OB", b"\x00\x01"),
        (0x0002, b"UI", str(dicomraw.value_of(ds, "SOPClassUID", "")).encode("ascii")),
        (0x0003, b"UI", str(dicomraw.value_of(ds, "SOPInstanceUID", "")).encode("ascii")),
        (0x0010, b"UI", str(transfer_syntax).encode("ascii")),
        (0x0012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
        (0x0013, b"SH", IMPLEMENTATION_VERSION_NAME.encode("ascii")),
    ))
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(elements)) + elements


def _meta_element(number: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    if vr == b"OB":
        return struct.pack("<HH2s2xI", 0x0002, number, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, number, vr, len(value)) + value


def write(source: SourceFile, ds: Dataset, dest: Path,
          gate: Callable[[bytes], None] | None = None, *, digest: bool = True) -> tuple[int, str]:
    """Write ``ds`` (plus the source's pixel bytes) atomically; returns (size, sha256).

    The SHA-256 is computed from the bytes as they are written, never by re-reading;
    without ``digest`` (nothing will need it: no manifest) it is "" and the pixel
    bytes are copied by the kernel. ``gate(header)`` sees the encoded header
    before anything is written and raises to stop the write (the leak verifier
    of ``telerad anonymize``).
    """
    ts = source.transfer_syntax
    body = dicomraw.encode(ds, implicit=ts.is_implicit_VR, little=ts.is_little_endian)
    if ts == DeflatedExplicitVRLittleEndian:
        packer = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = packer.compress(body) + packer.flush()
        if len(body) % 2:
            body += b"\x00"
    header = b"\x00" * 128 + b"DICM" + file_meta_bytes(ds, ts) + body
    if gate is not None:
        gate(header)
    hasher = hashlib.sha256(header) if digest else None
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    size = len(header)
    try:
        with _create(tmp) as out:
            out.write(header)
            if source.pixel_span is not None and source.data is not None:
                offset, length = source.pixel_span
                pixels = memoryview(source.data)[offset:offset + length]
                out.write(pixels)
                if hasher is not None:
                    hasher.update(pixels)
                size += length
            elif source.pixel_span is not None:
                size += _copy_span(source.path, source.pixel_span, out, hasher)
        # No fsync per file: staging is rebuilt from the source if the machine
        # dies, so the caller syncs once per batch where it needs durability.
        os.replace(tmp, dest)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DeidentificationError(
                "no space left on the staging disk while writing a de-identified file; "
                "free space there (TELERAD_STAGING_DIR) and run `telerad retry BATCH_ID`"
            ) from None
        raise
    return size, hasher.hexdigest() if hasher is not None else ""


def _create(path: Path):
    """Open a new file for writing, making its folder only when it is missing (one syscall, not two)."""
    try:
        return open(path, "wb")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "wb")


def _copy_span(path: Path, span: tuple[int, int], out, hasher) -> int:
    """Copy ``span`` of ``path`` into ``out``: by the kernel, or through one reused buffer when hashing."""
    offset, length = span
    with open(path, "rb", buffering=0) as src:
        if hasher is None:
            out.flush()
            start = out.tell()
            try:
                _kernel_copy(src.fileno(), out.fileno(), offset, length)
                return length
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                out.seek(start)  # the file system cannot: copy through the buffer below
                out.truncate()
        chunk = bytearray(min(_CHUNK, length))
        view = memoryview(chunk)
        left = length
        src.seek(offset)
        while left:
            n = src.readinto(view[:min(len(chunk), left)])
            if not n:
                raise DicomReadError("the source file was truncated while it was copied")
            piece = view[:n]
            out.write(piece)
            if hasher is not None:
                hasher.update(piece)
            left -= n
    return length


def _kernel_copy(src: int, dst: int, offset: int, length: int) -> None:
    left = length
    while left:
        n = os.copy_file_range(src, dst, left, offset + length - left)
        if n == 0:
            raise DicomReadError("the source file was truncated while it was copied")
        left -= n
