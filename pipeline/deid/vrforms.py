"""Is a value valid for its VR? PS3.5 section 6.2: character repertoire, form and length.

A kept value that its VR cannot hold is how identifiers get past a
de-identifier: a name typed into a Decimal String, a URL with the patient's
name in a query, a damaged length that swallowed the elements after it. The
engine and the verifier judge kept values with these rules, by the data
dictionary's VR (never the VR the file claims), on raw bytes where possible.
"""

from __future__ import annotations

import re

# One value (multi-valued strings are split on backslash first), as bytes.
_FORMS: dict[str, re.Pattern[bytes]] = {
    "AE": re.compile(rb"^ *[\x21-\x5b\x5d-\x7e][\x20-\x5b\x5d-\x7e]* *$"),
    "AS": re.compile(rb"^\d{3}[DWMY]$"),
    "CS": re.compile(rb"^[A-Z0-9_ ]*$"),
    # DA: YYYYMMDD; the ACR-NEMA form YYYY.MM.DD is accepted on reading (PS3.5 6.2 note).
    "DA": re.compile(rb"^ *(\d{8}|\d{4}\.\d{2}\.\d{2}) *$"),
    "DS": re.compile(rb"^ *[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)? *$"),
    "DT": re.compile(rb"^ *\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})? *$"),
    "IS": re.compile(rb"^ *[+-]?\d+ *$"),
    # TM: HHMMSS.FFFFFF and shorter; the ACR-NEMA form HH:MM:SS is accepted on reading.
    "TM": re.compile(rb"^ *\d{2}((\d{2}(\d{2}(\.\d{1,6})?)?)|(:\d{2}(:\d{2}(\.\d{1,6})?)?))? *$"),
    "UI": re.compile(rb"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"),
    # UR: RFC 3986 characters, no embedded spaces; trailing spaces are padding.
    "UR": re.compile(rb"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]* *$"),
}
# Longest value (in characters) of each VR, PS3.5 Table 6.2-1; PN per component group.
MAX_LENGTH = {"AE": 16, "AS": 4, "CS": 16, "DA": 10, "DS": 16, "DT": 26, "IS": 12, "LO": 64,
              "PN": 64, "SH": 16, "ST": 1024, "LT": 10240, "TM": 16, "UI": 64}
# Text VRs: what may appear besides printable characters (ESC for character sets everywhere;
# CR LF FF TAB only in the long texts).
_TEXT_CONTROLS = {"ST", "LT", "UT"}
_CONTROLS_ANY = re.compile(rb"[\x00-\x08\x0a-\x1a\x1c-\x1f\x7f]")  # everything below 0x20 but TAB, ESC
_CONTROLS_SHORT = re.compile(rb"[\x00-\x1a\x1c-\x1f\x7f]")  # everything below 0x20 but ESC
_CONTROLS_LONG = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")  # CR LF FF TAB ESC allowed
MULTI_STRING = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UC", "UI"})
SINGLE_STRING = frozenset({"LT", "ST", "UR", "UT"})
STRING_VRS = MULTI_STRING | SINGLE_STRING
_IS_RANGE = (-(2 ** 31), 2 ** 31 - 1)


def problem(vr: str, raw: bytes) -> str | None:
    """Why ``raw`` (the value's bytes, padding included) is not valid for ``vr``; None when it is.

    Text VRs other than the fixed forms are judged on control characters and
    length only, so this works on any character set's bytes (multi-byte sets
    never use bytes below 0x20 except ESC); lengths are counted in bytes, an
    upper bound of characters, only for ASCII values.
    """
    if vr not in STRING_VRS:
        return None
    if vr == "UI":
        parts = raw.rstrip(b"\x00 ").split(b"\\")
    elif vr in MULTI_STRING:
        parts = raw.rstrip(b"\x00").split(b"\\")
    else:
        parts = [raw.rstrip(b"\x00")]
    control = _CONTROLS_LONG if vr in _TEXT_CONTROLS else _CONTROLS_SHORT if vr != "UC" else _CONTROLS_ANY
    limit = MAX_LENGTH.get(vr)
    ascii_ = raw.isascii()
    form = _FORMS.get(vr)
    for part in parts:
        if vr == "UI":
            part = part.rstrip(b"\x00 ")
        if not part.strip(b" \x00"):
            continue  # an empty value is valid for every VR
        if control.search(part):
            return "control characters"
        if form is not None and not form.match(part):
            return f"not of the form {vr} requires"
        if vr == "PN":
            if ascii_ and any(len(g) > 64 for g in part.split(b"=")):
                return "a name component group longer than 64 characters"
            continue
        if limit is not None and ascii_ and len(part.strip(b" ") if vr != "UI" else part) > limit:
            return f"longer than {limit} characters"
        if vr == "IS" and not _IS_RANGE[0] <= int(part) <= _IS_RANGE[1]:
            return "out of the range of IS"
    return None


def text_problem(vr: str, text: str) -> str | None:
    """``problem`` for a decoded value (str); non-ASCII text is judged by its UTF-8 bytes."""
    return problem(vr, text.encode("utf-8", "surrogateescape"))
