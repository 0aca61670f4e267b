"""The hostile set: files every door must refuse, built from one good instance of a synthetic study.

``hostile_set(study, dest)`` returns ``{case name: path}``; each file is a whole Part 10 file
(so dcmtk's storescu and HTTP clients can send it), with the expected refusal code in
``EXPECTED``. The changed duplicate shares its SOP Instance UID with ``study.files[0]``.
"""

from __future__ import annotations

import copy
import struct
import zlib
from pathlib import Path

import pydicom
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

from pipeline.testing import StudyInfo

#: case -> the refusal code ``admit`` gives it
EXPECTED = {
    "deflate_bomb": "deflate_bomb",
    "truncated": "truncated",
    "giant_length": "truncated",
    "unknown_syntax": "unknown_transfer_syntax",
    "wrong_syntax": "wrong_transfer_syntax",
    "binary_vr_wrong_length": "bad_value_multiplicity",
    "changed_duplicate": "duplicate_conflict",
}

GIB = 1 << 30


def _meta(sop_class: str, sop_uid: str, syntax: str) -> bytes:
    def el(elem: int, vr: bytes, value: bytes) -> bytes:
        if len(value) % 2:
            value += b"\x00"
        if vr == b"OB":
            return struct.pack("<HH2s2xI", 2, elem, vr, len(value)) + value
        return struct.pack("<HH2sH", 2, elem, vr, len(value)) + value

    body = (el(1, b"OB", b"\x00\x01") + el(2, b"UI", sop_class.encode()) + el(3, b"UI", sop_uid.encode())
            + el(0x10, b"UI", syntax.encode()) + el(0x12, b"UI", b"1.2.3.4"))
    return b"\x00" * 128 + b"DICM" + struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(body)) + body


def _explicit_body(ds: pydicom.Dataset) -> bytes:
    """The bare data set (no preamble, no meta), explicit VR little endian."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def _fresh(ds: pydicom.Dataset, suffix: str) -> pydicom.Dataset:
    """A copy with its own SOP Instance UID (so each case is a new instance of the same study)."""
    out = copy.deepcopy(ds)
    out.SOPInstanceUID = generate_uid(entropy_srcs=[str(ds.SOPInstanceUID), suffix])
    return out


def deflate_bomb(ds: pydicom.Dataset, size: int = GIB) -> bytes:
    """A small Deflated file whose data set inflates to ``size`` bytes (pixel data of zeros)."""
    bomb = _fresh(ds, "1")
    del bomb.PixelData
    head = _explicit_body(bomb)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    pad = size - len(head) - 12
    pad -= pad % 2
    out = [packer.compress(head), packer.compress(struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OB", pad))]
    zeros = b"\x00" * (1 << 24)
    left = pad
    while left:
        n = min(left, len(zeros))
        out.append(packer.compress(zeros[:n]))
        left -= n
    out.append(packer.flush())
    body = b"".join(out)
    if len(body) % 2:
        body += b"\x00"
    return _meta(str(ds.SOPClassUID), str(bomb.SOPInstanceUID), DeflatedExplicitVRLittleEndian) + body


def hostile_set(study: StudyInfo, dest: Path, *, bomb_size: int = GIB) -> dict[str, Path]:
    dest.mkdir(parents=True, exist_ok=True)
    first = study.files[0]
    ds = pydicom.dcmread(first)
    cls = str(ds.SOPClassUID)
    cases: dict[str, bytes] = {}
    cases["deflate_bomb"] = deflate_bomb(ds, bomb_size)

    good = _fresh(ds, "2")
    whole = _meta(cls, str(good.SOPInstanceUID), "1.2.840.10008.1.2.1") + _explicit_body(good)
    cases["truncated"] = whole[: int(len(whole) * 0.6)]

    giant = _fresh(ds, "3")
    body = _explicit_body(giant)
    at = body.rfind(b"\xe0\x7f\x10\x00")  # the pixel element: declare 2 GB
    body = body[:at + 8] + struct.pack("<I", 0x7FFFFFF0) + body[at + 12:]
    cases["giant_length"] = _meta(cls, str(giant.SOPInstanceUID), "1.2.840.10008.1.2.1") + body

    unknown = _fresh(ds, "4")
    cases["unknown_syntax"] = _meta(cls, str(unknown.SOPInstanceUID), "1.2.826.0.1.3680043.9.9999.1") \
        + _explicit_body(unknown)

    wrong = _fresh(ds, "5")  # the meta says implicit VR; the data set is explicit
    cases["wrong_syntax"] = _meta(cls, str(wrong.SOPInstanceUID), "1.2.840.10008.1.2") + _explicit_body(wrong)

    six = _fresh(ds, "6")
    six.add_new(0x00280106, "US", 0)
    body = _explicit_body(six)
    at = body.find(b"\x28\x00\x06\x01US")  # (0028,0106) US, VM 1: make it 6 bytes carrying text
    old_len = struct.unpack_from("<H", body, at + 6)[0]
    body = body[:at + 6] + struct.pack("<H", 6) + b"PHIX\x00\x00" + body[at + 8 + old_len:]
    cases["binary_vr_wrong_length"] = _meta(cls, str(six.SOPInstanceUID), "1.2.840.10008.1.2.1") + body

    changed = copy.deepcopy(ds)  # the same SOP Instance UID as study.files[0], other content
    changed.SeriesDescription = "changed after sending"
    cases["changed_duplicate"] = _meta(cls, str(changed.SOPInstanceUID), "1.2.840.10008.1.2.1") \
        + _explicit_body(changed)

    paths = {}
    for name, data in cases.items():
        path = dest / f"{name}.dcm"
        path.write_bytes(data)
        paths[name] = path
    return paths
