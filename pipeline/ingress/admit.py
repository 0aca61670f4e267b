"""One intake contract for every door: what arrived becomes a received instance, or is refused with why.

Every door (C-STORE, STOW-RS, anonymize-stream, review, and the collector behind
the first two) hands the file it received to ``admit``; the file is checked in
full before anything acknowledges it:

* a deflated dataset is inflated as a count only, in bounded steps, against the
  site's ``TELERAD_DEFLATED_MAX_BYTES`` / ``_RATIO`` (a 1 MB file inflating to
  1 GiB costs a few MB here, not a GiB);
* the file is parsed by the one bounded reader (``pipeline.dicomio.read``, with
  the site's inflate limits): a truncated file or a giant element length is
  refused there;
* the file meta must declare a transfer syntax this site knows, and the data
  set must really be encoded in it; the meta's SOP Class and Instance UIDs must
  be the data set's own;
* every element at every depth is decoded, and each binary VR (US, SS, UL, SL,
  FL, FD, AT, SV, UV, OW, OL, OF, OD, OV) has a length that is a whole number of
  values and, for the numeric ones, as many values as the DICOM dictionary
  allows (a 6-byte Smallest Image Pixel Value, US with VM 1, is refused);
* Study, Series and SOP Instance UIDs and the SOP Class UID must be present.

A refusal is an ``InstanceRefused`` with a ``code`` (stable, for counters and
tests) and a reason naming tags and checks, never a value from the data.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import AllTransferSyntaxes, DeflatedExplicitVRLittleEndian, UID

from pipeline import dicomio
from pipeline.checksums import sha256_file
from pipeline.dicomio import InflateLimits
from pipeline.exceptions import DicomReadError, NotDicomError, PermanentError
from pipeline.multiplicity import binary_problem
from pipeline.settings import Settings

PIXEL_TAGS = frozenset(dicomio.PIXEL_TAGS)
_STEP = 4 * 1024 * 1024


#: Refusals of data that parses but says what it may not (DICOM's "data set does not match SOP
#: class": C-STORE 0xA900, STOW-RS Failure Reason 0xA900); every other code "cannot understand".
MISMATCH_CODES = frozenset({"bad_value_length", "bad_value_multiplicity", "bad_element", "meta_mismatch",
                            "duplicate_conflict", "too_deep"})


class InstanceRefused(PermanentError):
    """An instance refused at the door; ``code`` is stable, the message names no value."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    @property
    def mismatch(self) -> bool:
        """True: the data parses but does not match what it claims (0xA900); else it cannot be understood."""
        return self.code in MISMATCH_CODES


@dataclass(frozen=True)
class AdmitLimits:
    """The site's limits for one instance at the door (from ``Settings``)."""

    inflate: InflateLimits
    max_bytes: int = 0  # 0: no limit of its own (the door's body limit applies)

    @classmethod
    def from_settings(cls, settings: Settings, *, max_bytes: int = 0) -> "AdmitLimits":
        return cls(inflate=settings.inflate_limits, max_bytes=max_bytes)


@dataclass(frozen=True)
class ReceivedInstance:
    """An instance that passed the door: where it is, what it is (UIDs stay in memory, never in names)."""

    path: Path
    size: int
    sha256: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    header: Dataset  # the parsed header (no pixel data), for priority rules


def admit(path: Path, limits: AdmitLimits) -> ReceivedInstance:
    """Validate the Part 10 file at ``path`` in full; ``InstanceRefused`` says why it cannot come in."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InstanceRefused("unreadable", f"the instance cannot be read ({type(exc).__name__})") from None
    if limits.max_bytes and size > limits.max_bytes:
        raise InstanceRefused("too_large", f"the instance is larger than {limits.max_bytes} bytes")
    declared = _declared_syntax(path)
    if declared == DeflatedExplicitVRLittleEndian:
        _check_inflates_within(path, limits.inflate)
    try:
        source = dicomio.read(path, inflate_limits=limits.inflate)
    except NotDicomError as exc:
        raise InstanceRefused("not_dicom", str(exc)) from None
    except DicomReadError as exc:
        text = str(exc)
        code = ("deflate_bomb" if "decompression bomb" in text else
                "wrong_transfer_syntax" if text == dicomio.SYNTAX_MISMATCH else
                "truncated" if "truncated" in text else "unparsable")
        raise InstanceRefused(code, text) from None
    ds = source.dataset
    meta = getattr(ds, "file_meta", None)
    uids = {kw: str(ds.get(kw) or "").strip() for kw in
            ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")}
    for kw, label in (("StudyInstanceUID", "Study Instance UID"), ("SeriesInstanceUID", "Series Instance UID"),
                      ("SOPInstanceUID", "SOP Instance UID"), ("SOPClassUID", "SOP Class UID")):
        if not uids[kw]:
            raise InstanceRefused("missing_uid", f"the instance has no {label}")
    if meta is not None:
        # The SOP Instance UID is what duplicates and grouping are decided by: the meta may not
        # name another instance. (A differing SOP Class in the meta is common and harmless.)
        value = str(meta.get("MediaStorageSOPInstanceUID") or "").strip()
        if value and value != uids["SOPInstanceUID"]:
            raise InstanceRefused("meta_mismatch",
                                  "the file meta's Media Storage SOP Instance UID is not the data set's SOP Instance UID")
    check_elements(ds)
    return ReceivedInstance(path=path, size=size, sha256=sha256_file(path), study_uid=uids["StudyInstanceUID"],
                            series_uid=uids["SeriesInstanceUID"], sop_uid=uids["SOPInstanceUID"],
                            sop_class_uid=uids["SOPClassUID"], transfer_syntax=str(source.transfer_syntax),
                            header=ds)


def meta_values(path: Path) -> dict[int, str]:
    """The text elements of the file meta group, by element number (read by hand, bounded: 64 KB)."""
    with open(path, "rb") as fh:
        head = fh.read(132)
        if len(head) < 132 or head[128:132] != b"DICM":
            raise InstanceRefused("not_part10", "not a DICOM Part 10 instance (no DICM preamble and file meta)")
        meta = fh.read(64 * 1024)
    pos, out = 0, {}
    while pos + 8 <= len(meta) and meta[pos:pos + 2] == b"\x02\x00":
        elem = struct.unpack_from("<H", meta, pos + 2)[0]
        vr = meta[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"UN", b"UT", b"SQ", b"UC", b"UR", b"OD", b"OF", b"OL", b"OV", b"SV", b"UV"):
            if pos + 12 > len(meta):
                break
            length, start = struct.unpack_from("<I", meta, pos + 8)[0], pos + 12
        else:
            length, start = struct.unpack_from("<H", meta, pos + 6)[0], pos + 8
        if start + length > len(meta):
            raise InstanceRefused("bad_meta", "the file meta runs past its end")
        if vr in (b"UI", b"AE", b"SH", b"CS", b"LO"):
            out[elem] = meta[start:start + length].decode("ascii", "replace").strip("\x00 ")
        pos = start + length
    return out


def meta_uids(path: Path) -> tuple[str, str]:
    """(Media Storage SOP Class UID, SOP Instance UID) from the file meta, or empty strings: for answers
    about an instance that may not be parsed (STOW-RS's Failed SOP Sequence)."""
    try:
        meta = meta_values(path)
    except (InstanceRefused, OSError):
        return "", ""
    return meta.get(0x0002, ""), meta.get(0x0003, "")


def _declared_syntax(path: Path) -> UID:
    """The Transfer Syntax UID of the file meta, if this site knows it."""
    syntax = meta_values(path).get(0x0010, "")
    if not syntax:
        raise InstanceRefused("no_transfer_syntax", "the file meta declares no Transfer Syntax UID")
    if syntax not in AllTransferSyntaxes:
        raise InstanceRefused("unknown_transfer_syntax",
                              "the file meta declares a transfer syntax this site does not know")
    return UID(syntax)


def _check_inflates_within(path: Path, limits: InflateLimits) -> None:
    """Count what the deflate stream inflates to, in bounded steps, holding nothing."""
    start = _dataset_start(path)
    compressed = path.stat().st_size - start
    unpacker = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    with open(path, "rb") as fh:
        fh.seek(start)
        while not unpacker.eof:
            chunk = unpacker.unconsumed_tail or fh.read(1 << 20)
            if not chunk:
                raise InstanceRefused("truncated", "the deflated data set is truncated (its stream does not end)")
            try:
                total += len(unpacker.decompress(chunk, _STEP))
            except zlib.error:
                raise InstanceRefused("unparsable", "the deflated data set is not a valid deflate stream") from None
            if total > limits.max_bytes:
                raise InstanceRefused(
                    "deflate_bomb", f"the deflated data set inflates to more than {limits.max_bytes} bytes "
                    "(TELERAD_DEFLATED_MAX_BYTES); refused as a possible decompression bomb")
            if total > limits.ratio_floor and total > limits.max_ratio * max(1, compressed):
                raise InstanceRefused(
                    "deflate_bomb", f"the deflated data set inflates more than {limits.max_ratio}:1 "
                    "(TELERAD_DEFLATED_MAX_RATIO); refused as a possible decompression bomb")


def _dataset_start(path: Path) -> int:
    with open(path, "rb") as fh:
        fh.seek(132)
        head = fh.read(12)
    if head[:4] == b"\x02\x00\x00\x00" and head[4:6] == b"UL":
        return 132 + 12 + struct.unpack_from("<I", head, 8)[0]
    raise InstanceRefused("bad_meta", "the file meta has no group length")


def check_elements(ds: Dataset, depth: int = 0) -> None:
    """Decode every element at every depth; binary VRs whole values, in the dictionary's multiplicity."""
    if depth > 32:
        raise InstanceRefused("too_deep", "sequences nest more than 32 levels deep")
    for tag in list(ds._dict.keys()):
        tag = Tag(tag)
        if int(tag) in PIXEL_TAGS and depth == 0:
            continue
        raw = ds.get_item(tag)
        vr, length = _vr_and_length(tag, raw)
        try:
            elem = ds[tag]
        except Exception as exc:  # pydicom's messages may quote values: name the tag and the type only
            raise InstanceRefused("bad_element", f"element {tag} cannot be decoded ({type(exc).__name__})") from None
        vr = vr or elem.VR
        if vr == "SQ":
            for item in elem.value or ():
                check_elements(item, depth + 1)
            continue
        if length is None:
            continue
        problem = binary_problem(int(tag), vr, length)
        if problem is not None:
            code, why = problem
            raise InstanceRefused(code, f"element {tag} ({vr}) {why}")


def _vr_and_length(tag: BaseTag, raw: object) -> tuple[str | None, int | None]:
    """The VR and value length of a raw element (the dictionary's VR when the file gives none)."""
    if isinstance(raw, RawDataElement):
        vr = raw.VR
        if vr is None or " or " in str(vr):
            try:
                vr = dictionary_VR(tag).split(" or ")[0]
            except KeyError:
                vr = None
        value = raw.value
        length = len(value) if isinstance(value, (bytes, bytearray)) else (
            None if raw.length == 0xFFFFFFFF else raw.length)
        return vr, length
    return None, None
