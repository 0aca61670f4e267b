"""Text hidden in numbers: a binary value that holds a run of characters where values belong.

A damaged tag or a mismatched VR can make a name or a UID read as numbers of another
attribute; the engine (kept values), the value checks and the verifier all ask the same
question here, so the rule is written once.
"""

from __future__ import annotations

import re

from pipeline.exceptions import DeidentificationError
from pipeline.multiplicity import NUMERIC_VRS, VALUE_SIZE

_SIZE = {vr: n for vr, n in VALUE_SIZE.items() if vr in NUMERIC_VRS}
_BYTES = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_IDENTIFIER_TEXT = re.compile(rb"[0-9A-Za-z.^ _\-=,']{8,}")
_SHORT_TEXT = re.compile(rb"[A-Za-z][A-Za-z^ ,.'\-]*[A-Za-z]")
_NAME_RUN = re.compile(rb"[A-Za-z][0-9A-Za-z]{2,}(?:[\^ ,.\-]{1,2}[A-Za-z][0-9A-Za-z]+)+")
# Not searched for text runs: pixel data (the burned-in annotation policy's concern; compressed
# frames form any bytes) and the ICC Profile (a binary format with text tags by design).
_TEXT_BY_DESIGN = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009, 0x00282000})


def text_in_binary(vr: str, raw: bytes | None, tag: int = 0) -> bool:
    """True when a numeric or binary value of any length holds a run of text.

    A damaged tag or a mismatched VR can make a name or UID read as numbers of
    another attribute (``1.2.826...`` as Simple Frame List, UL), and a palette
    or a long float array can carry a name inside; its bytes then pass every
    check of a number. Short values (4 to 64 bytes) are text when they are all
    identifier characters; longer ones when they hold words joined by a name
    or word separator (``DOE^JOHN``, ``SMITH, ANN``), which ramps and number
    arrays do not form. Pixel data and binary formats that hold text by design
    (an ICC profile) are left to the verifier's search for captured values.
    """
    if raw is None or (vr not in _SIZE and vr not in _BYTES) or len(raw) < 4 or tag in _TEXT_BY_DESIGN:
        return False
    body = raw.rstrip(b" \x00")
    if len(raw) <= 64:
        if len(body) >= 8 and _IDENTIFIER_TEXT.fullmatch(body):
            return True
        if len(raw) < 8:
            return len(body) >= 3 and bool(_SHORT_TEXT.fullmatch(body))
    return _NAME_RUN.search(raw) is not None


def binary_text_error(label: str, vr: str) -> DeidentificationError:
    return DeidentificationError(
        f"{label} ({vr}) holds bytes that read as text, not {vr} values (a damaged tag or VR "
        "that may hide an identifier); refusing to keep it"
    )
