"""What identifies the patient in a source file, captured before the walk, and one matcher for it.

The verifier does not trust the engine's rules: whatever produced a value (a
table action, an option, a profile's keep, a ``--set`` override), the written
file must not hold the identifying values the source held. So at ingest the
engine captures them (the patient's name and each of its components, IDs,
the birth date in its common written forms, the accession number, addresses,
telephone numbers, names of physicians and operators, institution names, and
the names of the submitted file and its folders); they live only in memory.
``Matcher`` compiles them into one regular expression over bytes that finds
them as whole tokens (never as a digit run inside a longer number or UID), so
a batch's search costs one pass over each header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePath

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

# Attribute keyword -> what kind of identifier it holds (top level of the source).
_PERSON_NAMES = (
    "PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
    "ReferringPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
    "OperatorsName", "RequestingPhysician", "PhysiciansOfRecord", "ScheduledPerformingPhysicianName",
    "ResponsiblePerson", "PersonName",
)
_IDS = (
    "PatientID", "OtherPatientIDs", "AccessionNumber", "MedicalRecordLocator", "AdmissionID",
    "StudyID", "RequestedProcedureID", "ScheduledProcedureStepID", "PerformedProcedureStepID",
    "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberImagingServiceRequest",
)
_WHOLE_VALUES = (
    "PatientAddress", "InstitutionAddress", "ReferringPhysicianAddress",
    "PatientTelephoneNumbers", "ReferringPhysicianTelephoneNumbers", "PersonTelephoneNumbers",
    "InstitutionName", "InstitutionalDepartmentName",
)
_BIRTH_DATE = "PatientBirthDate"
SUBMITTED_NAME = "a submitted file or folder name"  # the kind of values that differ per file
_TAGS = {tag_for_keyword(k): k for k in (*_PERSON_NAMES, *_IDS, *_WHOLE_VALUES, _BIRTH_DATE)}
_PN = frozenset(tag_for_keyword(k) for k in _PERSON_NAMES)
_ID = frozenset(tag_for_keyword(k) for k in _IDS)
# Words that stand in for no one (placeholders, folder names of every DICOM export):
# searching for them would fail files for words Telerad or any device writes.
STOP_WORDS = frozenset({
    "ANONYMIZED", "ANONYMISED", "ANONYMOUS", "ANON", "UNKNOWN", "NONE", "NULL", "NAME", "PATIENT",
    "TEST", "PHANTOM", "DICOM", "DICOMDIR", "IMAGE", "IMAGES", "SERIES", "STUDY", "STUDIES", "DATA",
    "EXPORT", "FILES", "DCM", "IMG", "YES", "NO", "MODIFIED", "REMOVED",
    # the priorities Telerad writes into every manifest (and the inbox's stat/urgent/routine
    # folders), and the folders of Telerad's own inbox and listener
    "STAT", "URGENT", "ROUTINE", "INBOX", "INCOMING", "OUTGOING", "UPLOAD", "QUARANTINE",
    # modalities (PS3.3 C.7.3.1.1.1), often the name of an exported file or folder
    "RTDOSE", "RTPLAN", "RTSTRUCT", "RTIMAGE", "RTRECORD", "SEG", "REG", "KER", "PLAN", "DOC",
})
_MIN_LEN = 3
_SHORT_NUMBER = 6  # digit-only identifiers shorter than this match only in text, not in numbers
_UID_LIKE = re.compile(r"^\d+(\.\d+)+$")
_EXTENSIONS = re.compile(r"\.(dcm|dicom|ima|img|zip)$", re.IGNORECASE)
TOKEN_CHARS = rb"0-9A-Za-z"


@dataclass(frozen=True)
class Captured:
    """Identifying values of one or more source files: (upper-case text, kind) pairs, sorted."""

    needles: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash(self.needles))  # looked up per file in caches

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined]

    def __bool__(self) -> bool:
        return bool(self.needles)

    @classmethod
    def of(cls, pairs) -> "Captured":
        best: dict[str, str] = {}
        for text, kind in pairs:
            t = " ".join(str(text).split()).upper()
            if _keep(t):
                best.setdefault(t, kind)
        return cls(tuple(sorted(best.items())))

    def merged(self, *others: "Captured") -> "Captured":
        return Captured.of([p for c in (self, *others) for p in c.needles])

    def split_names(self) -> tuple["Captured", tuple[tuple[str, str], ...]]:
        """The values a patient's files share, and the submitted names (which differ per file)."""
        split = self.__dict__.get("_split")
        if split is None:
            split = (Captured(tuple(p for p in self.needles if p[1] != SUBMITTED_NAME)),
                     tuple(p for p in self.needles if p[1] == SUBMITTED_NAME))
            object.__setattr__(self, "_split", split)
        return split

    def without(self, words) -> "Captured":
        drop = {str(w).upper() for w in words if w}
        return Captured(tuple(p for p in self.needles if p[0] not in drop))


_ALNUM = re.compile(r"[^\W_]")


def _keep(text: str) -> bool:
    return len(text) >= _MIN_LEN and text not in STOP_WORDS and _ALNUM.search(text) is not None


def birth_date_forms(da: str) -> list[str]:
    """A DA birth date as people write it: 19610203, 1961-02-03, 03/02/1961, 02/03/1961, ..."""
    d = da.strip().replace(".", "")
    if len(d) != 8 or not d.isdigit():
        return [da.strip()] if da.strip() else []
    y, m, dd = d[:4], d[4:6], d[6:]
    return [d, f"{y}-{m}-{dd}", f"{y}/{m}/{dd}", f"{y}.{m}.{dd}", f"{dd}/{m}/{y}", f"{m}/{dd}/{y}",
            f"{dd}.{m}.{y}", f"{dd}-{m}-{y}", f"{m}-{dd}-{y}"]


def _texts(elem) -> list[str]:
    """The text values of an element, raw or converted (bytes decoded leniently)."""
    value = elem.value
    if isinstance(elem, RawDataElement):
        if not value:
            return []
        text = value.decode("utf-8", "replace") if not value.isascii() else value.decode("ascii")
        return [p.strip(" \x00") for p in text.split("\\")]
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    return [str(v).strip(" \x00") for v in items]


def capture(ds: Dataset, submitted: str | None = None, ordinary=None) -> Captured:
    """The identifying values of a source dataset's top level, and of its submitted path.

    ``submitted`` is the file's path as submitted (the study folder's name and
    the path under it): each folder name and the file's name without its
    extension are captured, except names that look like UIDs or dates (those
    are judged by the UID and date policies), short numbers, and names that
    ``ordinary(name)`` calls ordinary words (the clinical vocabulary: a folder
    ``CT_HEAD`` names no one); a name component that is an ordinary word is
    searched only within the whole name. An institution name that is also the name of the
    device's maker (a test set's ``TOSHIBA``) names a company and is left out.
    """
    pairs: list[tuple[str, str]] = []
    d = ds._dict
    for tag, kind in _TAGS.items():
        elem = d.get(tag)
        if elem is None:
            continue
        try:
            texts = _texts(elem)
        except Exception:  # an unreadable value is judged by the engine, not captured
            continue
        for text in texts:
            if not text:
                continue
            if tag in _PN:
                for group in text.split("="):
                    comps = group.split("^")
                    pairs.append((" ".join(c for c in comps if c), kind))
                    # family, given, middle (not prefix, suffix); a component that is a clinical
                    # word (a phantom's "Perfusion") is searched only as part of the whole name
                    pairs += [(c, kind) for c in comps[:3]
                              if ordinary is None or not all(ordinary(w) for w in c.split() if w)]
            elif kind == _BIRTH_DATE:
                pairs += [(f, "birth date") for f in birth_date_forms(text)]
            else:
                if kind.startswith("Institution") and _in_manufacturer(d, text):
                    continue
                pairs.append((text, kind))
                if kind.endswith("TelephoneNumbers"):
                    digits = "".join(c for c in text if c.isdigit())
                    if len(digits) >= 7:
                        pairs.append((digits, kind))
    if submitted:
        for part in PurePath(submitted).parts:
            name = _EXTENSIONS.sub("", part).strip()
            if not name or _UID_LIKE.match(name) or (name.isdigit() and len(name) < 9) or tag_for_keyword(name):
                continue  # UIDs, dates and short numbers have their own policies; a keyword names no one
            if ordinary is not None and all(ordinary(w) for w in re.split(r"[\s_]+", name) if w):
                continue
            pairs.append((name, SUBMITTED_NAME))
    return Captured.of(pairs)


_MANUFACTURER = tag_for_keyword("Manufacturer")


def _in_manufacturer(d: dict, text: str) -> bool:
    elem = d.get(_MANUFACTURER)
    if elem is None:
        return False
    try:
        maker = " ".join(_texts(elem)).upper()
    except Exception:
        return False
    if re.search(r"(?<![0-9A-Z])" + re.escape(text.upper()) + r"(?![0-9A-Z])", maker) is not None:
        return True
    # The same company written with other punctuation: "G.E. Medical Systems" and "GE MEDICAL SYSTEMS".
    def plain(t: str) -> str:
        return " ".join(re.sub(r"[^0-9A-Z]+", " ", t.upper().replace(".", "")).split())

    return bool(plain(text)) and f" {plain(text)} " in f" {plain(maker)} "


@dataclass(frozen=True)
class Hit:
    """One captured value found: what kind it was, whether it is a short number or UID-shaped."""

    kind: str
    short_number: bool
    uid_like: bool = False


class Matcher:
    """One search for a set of captured values, as whole tokens, case-insensitive.

    The values a source shares with the other files of its patient and study
    (names, IDs, dates, addresses) are compiled into one regular expression,
    once per set (``_compiled``); the submitted file and folder names, which
    differ from file to file, are found with plain byte searches, so a new
    file costs no compilation.
    """

    def __init__(self, captured: Captured) -> None:
        shared, names = captured.split_names()
        self._regex = _compiled(shared.needles)
        self._names = _name_variants(names)

    def with_names(self, names: tuple[tuple[str, str], ...]) -> "Matcher":
        """This search plus more submitted names (a file's own), with no compilation."""
        other = object.__new__(Matcher)
        other._regex, other._names = self._regex, tuple(sorted({*self._names, *_name_variants(names)}))
        return other

    def __bool__(self) -> bool:
        return self._regex is not None or bool(self._names)

    def any_in(self, data: bytes) -> bool:
        """True when ``data`` may hold a captured value (a quick test; ``hits`` says which, as tokens)."""
        upper = data.upper()
        return (self._regex is not None and any(v in upper for v in self._regex.upper)) or any(
            name in upper for name, _ in self._names)

    def hits(self, data: bytes) -> list[Hit]:
        found: list[tuple[bytes, str]] = []
        if self._regex is not None:
            found += [(m.group().upper(), self._regex.kinds.get(m.group().upper(), "a captured value"))
                      for m in self._regex.pattern.finditer(data)]
        if self._names:
            upper = data.upper()
            for name, kind in self._names:
                at = upper.find(name)
                while at >= 0:
                    end = at + len(name)
                    if (at == 0 or upper[at - 1] not in _TOKEN_BYTES) and (
                            end == len(upper) or upper[end] not in _TOKEN_BYTES):
                        found.append((name, kind))
                    at = upper.find(name, at + 1)
        return [Hit(kind, text.isdigit() and len(text) < _SHORT_NUMBER,
                    _UID_LIKE.match(text.decode("latin-1")) is not None) for text, kind in found]

    def text_hits(self, text: str) -> list[Hit]:
        return self.hits(text.encode("utf-8", "ignore"))


_TOKEN_BYTES = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _name_variants(names) -> tuple[tuple[bytes, str], ...]:
    return tuple(sorted({(v.upper(), kind) for text, kind in names for v in _variants(text)}))


def _variants(text: str) -> set[bytes]:
    """A value's bytes as a file may hold them: UTF-8 and Latin-1."""
    out = set()
    for enc in ("utf-8", "latin-1"):
        try:
            out.add(text.encode(enc))
        except UnicodeEncodeError:
            continue
    return out


@dataclass(frozen=True)
class _Regex:
    pattern: re.Pattern[bytes]  # the values as whole tokens, case-insensitive
    # The quick test: the same values as upper-case bytes, looked for one by one with ``in`` over
    # upper-cased bytes, no boundaries (a substring search per value is several times faster on a
    # header than one regular expression of alternatives, with or without IGNORECASE).
    upper: tuple[bytes, ...]
    kinds: dict[bytes, str]


@lru_cache(maxsize=256)
def _compiled(needles: tuple[tuple[str, str], ...]) -> _Regex | None:
    """One compiled search for a set of values (the same for every file of a patient)."""
    kinds: dict[bytes, str] = {}
    variants: set[bytes] = set()
    for text, kind in needles:
        for b in _variants(text):
            variants.add(b)
            kinds.setdefault(b.upper(), kind)
    if not variants:
        return None
    alternatives = b"|".join(re.escape(v) for v in sorted(variants, key=lambda v: (-len(v), v)))
    upper = {v.upper() for v in variants}
    return _Regex(
        re.compile(rb"(?<![" + TOKEN_CHARS + rb"])(?:" + alternatives + rb")(?![" + TOKEN_CHARS + rb"])",
                   re.IGNORECASE),
        tuple(sorted(upper, key=lambda v: (-len(v), v))),
        kinds)


@lru_cache(maxsize=256)
def matcher_for(captured: Captured) -> Matcher:
    """The compiled matcher of a set of captured values (a batch's, or one patient's)."""
    return Matcher(captured)


def label(tag: int) -> str:
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
