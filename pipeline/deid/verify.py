"""The leak verifier: a second, independent look at de-identified files before upload.

It does not trust the engine. It re-reads each written file and reports any
private element outside the safe list, a person name or patient ID that is not
a pseudonym, a numeric or binary value whose bytes hold text, an element whose
VR is not the dictionary's, a date the date policy forbids, BurnedInAnnotation
= YES, an instance UID that was not replaced, a file meta or preamble that was
copied, and any identifying value captured from the source (``capture.py``:
names, IDs, birth date, addresses, institution, submitted file names; or the
mapping's originals) anywhere in the header's values, of any VR, or in the
path, whatever rule wrote it. Captured values are found as whole tokens by one
compiled matcher; a hit fails closed unless the profile allows that attribute
(``allow_identifying``). A file it cannot read is a finding. Findings name the
file, the tag and the check, never the offending value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue

from pipeline import dicomio, dicomraw
from pipeline.dicomraw import value_at, value_of
from pipeline.deid import rawelem, standard
from pipeline.deid.binarytext import text_in_binary
from pipeline.deid.capture import Captured, Matcher, matcher_for
from pipeline.deid.cleaning import Cleaners
from pipeline.deid.profile import keyword_or_tag
from pipeline.deid.values import DUMMY_TEXT, is_standard_uid
from pipeline.exceptions import TeleradError, VerificationError
from pipeline.pseudonyms import Pseudonyms

INSTANCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
DUMMY_DATES = {"19000101", "19000101000000"}
_CODE_OPTIONS = {standard.code_for(o)["code_value"]: o for o in standard.OPTION_COLUMNS}
_INSPECTED_VRS = frozenset({"SQ", "PN", "DA", "DT"})
_PIXEL_TAGS = frozenset(int(t) for t in dicomio.PIXEL_TAGS)
# Explicit VRs whose raw bytes settle the VR (text and sequences; sized binary VRs need their length checked).
_PLAIN_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                        "UI", "UR", "UT", "SQ", "OB", "OD", "OF", "OL", "OV", "OW"})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT"})
_FORBIDDEN_META = {tag_for_keyword(kw): kw for kw in (
    "SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
    "PrivateInformation", "PrivateInformationCreatorUID")}
_INSTANCE_UID_TAGS = tuple((kw, tag_for_keyword(kw)) for kw in INSTANCE_UIDS)
_IDENTITY_REMOVED, _BURNED_IN, _PATIENT_ID, _SOP_INSTANCE_UID, _LONGITUDINAL = (tag_for_keyword(kw) for kw in (
    "PatientIdentityRemoved", "BurnedInAnnotation", "PatientID", "SOPInstanceUID",
    "LongitudinalTemporalInformationModified"))
DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: search values, not bytes
MIN_ORIGINAL_LEN = 3  # shorter originals ("1", "A") would match by chance anywhere
# Free-text VRs: the only places a short number (an accession "134") counts as a hit; in
# numbers, UIDs and binary values such a run is a number, not an identifier.
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})


@dataclass(frozen=True)
class Finding:
    """One reason a file must not leave: where, which check, which tag (never the value)."""

    file: str
    check: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file}: {self.check}: {self.detail}"


@dataclass
class VerifyReport:
    files: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict:
        return {"files": self.files, "ok": self.ok,
                "findings": [{"file": f.file, "check": f.check, "detail": f.detail} for f in self.findings]}


def _tag(t) -> str:
    return f"({t.group:04X},{t.element:04X})"


def _items(ds, tag, leave_out: set[int] | None = None) -> list:
    """A sequence's items: cut from the raw bytes when possible (without the ``leave_out``
    elements, see ``dicomraw.scan_explicit_little``), else converted by pydicom."""
    elem = ds.get_item(tag)
    if isinstance(elem, RawDataElement):
        if not elem.value:
            return []
        try:
            return dicomraw.parse_items(elem, ds, leave_out)
        except dicomraw.Unparsed:
            pass
    return list(ds[tag].value or [])


class Verifier:
    """Checks files against the de-identification promises; options come from the profile or the file.

    ``captured`` are the identifying values of the sources (one compiled matcher
    for all of them); ``originals`` are plain strings to find as well (a
    mapping's original IDs). ``allow_identifying`` are tags whose values (and
    everything inside them, for sequences) may hold captured values, by the
    profile's explicit allowance.
    """

    def __init__(self, pseudonyms: Pseudonyms, profile=None, *, originals: list[str] | None = None,
                 allowed_names: list[str] | None = None, captured: Captured | None = None,
                 allow_identifying: frozenset[int] | None = None) -> None:
        self.pseudonyms = pseudonyms
        self.profile = profile
        self._profile_options = None if profile is None else frozenset(profile.options)
        self.originals = sorted({o.strip() for o in (originals or []) if len(o.strip()) >= MIN_ORIGINAL_LEN})
        self.allowed_names = {n.strip().upper() for n in (allowed_names or []) if n.strip()}
        self._settings_key = (pseudonyms.key_id, pseudonyms.organization, frozenset(self.allowed_names))
        self.captured = _combined(tuple(self.originals), captured or Captured(), pseudonyms.organization)
        self.matcher: Matcher = matcher_for(self.captured)
        if allow_identifying is None:
            allow_identifying = allowances(profile)
        self.allow_identifying = frozenset(allow_identifying)

    def with_names(self, names: tuple[tuple[str, str], ...]) -> "Verifier":
        """This verifier also searching for submitted file and folder names (a file's own)."""
        other = object.__new__(Verifier)  # a shallow copy (copy.copy costs more per file)
        other.__dict__.update(self.__dict__)
        org = self.pseudonyms.organization.upper()
        other.matcher = self.matcher.with_names(tuple(n for n in names if n[0] != org))
        return other

    @classmethod
    def originals_from_mapping(cls, mapping: dict) -> list[str]:
        """Every original identifier a mapping records (patient IDs, study UIDs, accessions)."""
        out: list[str] = []
        for s in mapping.get("studies", []):
            out += [str(v) for v in (s.get("original") or {}).values() if v]
        return out

    def text_findings(self, name: str, text: str) -> list[Finding]:
        """Findings for text that leaves with the batch (manifest, report, object metadata, keys)."""
        return [Finding(name, "captured identifier", f"holds the source's {h.kind}")
                for h in self.matcher.text_hits(text) if not h.short_number][:1]

    # --- options in force for one file -----------------------------------------------
    def _options(self, ds) -> frozenset[str]:
        if self._profile_options is not None:
            return self._profile_options
        codes = {str(i.get("CodeValue", "")) for i in ds.get("DeidentificationMethodCodeSequence", [])}
        return frozenset(_CODE_OPTIONS[c] for c in codes if c in _CODE_OPTIONS)

    # --- one file ------------------------------------------------------------------------
    def verify_file(self, path: Path, rel: str) -> list[Finding]:
        """Findings for a written file (its header is read; pixel bytes were copied unchanged)."""
        return self._verify(lambda: dicomio.read(Path(path), header_only=True), rel)

    def verify_header(self, header: bytes, rel: str) -> list[Finding]:
        """Findings for a file's header bytes before they are written (``dicomio.write``'s gate).

        Elements whose (tag, VR) every check has already passed (``_QUIET``)
        are not even built; the search for captured values still reads every
        byte of the header, and on a hit the header is read whole to say where.
        """
        lean = dicomio.read_header_lean(header, _QUIET_KEYS)
        if lean is None:
            return self._verify(lambda: dicomio.read_header_bytes(header), rel)
        return self._verify(lambda: lean, rel, whole=lambda: dicomio.read_header_bytes(header).dataset)

    def _verify(self, read, rel: str, whole=None) -> list[Finding]:
        """``read`` gives the file; ``whole`` its complete dataset when ``read``'s left elements out."""
        found: list[Finding] = []

        def add(check: str, detail: str) -> None:
            found.append(Finding(rel, check, detail))

        try:
            src = read()
            header = src.header_bytes()
        except TeleradError as exc:
            return [Finding(rel, "unreadable", str(exc))]
        except Exception as exc:
            return [Finding(rel, "unreadable", type(exc).__name__)]
        if header[128:132] != b"DICM":
            return [Finding(rel, "unreadable", "InvalidDicomError")]  # no Part 10 preamble
        ds = src.dataset
        opts = self._options(ds)

        if header[:128] != b"\x00" * 128:
            add("preamble", "the 128-byte preamble is not zeroed")
        for t in ds.file_meta._dict:
            kw = _FORBIDDEN_META.get(int(t))
            if kw is not None:
                add("file meta", f"{kw} was not removed")
        if str(value_at(ds, _IDENTITY_REMOVED, "")).upper() != "YES":
            add("marking", "PatientIdentityRemoved is not YES")
        if str(value_at(ds, _BURNED_IN, "")).strip().upper() == "YES":
            add("burned-in", "BurnedInAnnotation is YES")
        pid = str(value_at(ds, _PATIENT_ID, "") or "")
        if pid and not self.pseudonyms.is_patient_pseudonym(pid):
            add("patient id", "(0010,0020) PatientID is not a pseudonym")
        if "retain-uids" not in opts:
            for kw, tag in _INSTANCE_UID_TAGS:
                v = str(value_at(ds, tag, "") or "")
                if v and not v.startswith("2.25.") and not is_standard_uid(v):
                    add("uid", f"{kw} was not replaced")
            msi = str(value_of(ds.file_meta, "MediaStorageSOPInstanceUID", ""))
            if msi != str(value_at(ds, _SOP_INSTANCE_UID, "")):
                add("uid", "MediaStorageSOPInstanceUID differs from SOPInstanceUID")
        date_policy = ("shift" if "retain-long-modified-dates" in opts
                       else "keep" if "retain-long-full-dates" in opts else "remove")
        self._walk(ds, opts, date_policy, add)
        if date_policy == "shift" and str(value_at(ds, _LONGITUDINAL, "")) != "MODIFIED":
            add("dates", "LongitudinalTemporalInformationModified is not MODIFIED")
        deflated = str(value_of(ds.file_meta, "TransferSyntaxUID", "")) == DEFLATED  # header bytes compressed
        if self.matcher and (deflated or self.matcher.any_in(header)
                             or self.matcher.any_in(rel.encode("utf-8", "ignore"))):
            self._captured_hits(ds if whole is None else whole(), rel, opts, add)
        return found

    def _captured_hits(self, ds, rel: str, opts: frozenset[str], add) -> None:
        """Name where captured values are (the header matched as a whole); allowances apply."""
        for h in self.matcher.text_hits(rel):
            if h.short_number or (h.uid_like and "retain-uids" in opts):
                continue  # the path is made of pseudonyms and UIDs: a short number there is a number
            add("captured identifier", f"the path holds the source's {h.kind}")
            break
        seen: set[tuple[int, str]] = set()
        self._hits_in(ds, opts, add, seen, allowed=False, depth=0)

    def _hits_in(self, ds, opts: frozenset[str], add, seen: set, *, allowed: bool, depth: int) -> None:
        for t, elem in list(ds._dict.items()):
            if depth == 0 and t in _PIXEL_TAGS:
                break
            number = int(t)
            here = allowed or number in self.allow_identifying
            vr = rawelem.known_vr(elem) or rawelem.vr_of(ds, t)
            if vr == "SQ":
                for item in _items(ds, t):
                    self._hits_in(item, opts, add, seen, allowed=here, depth=depth + 1)
                continue
            if type(elem) is RawDataElement:
                data = elem.value or b""
            else:
                v = elem.value
                data = bytes(v) if isinstance(v, (bytes, bytearray)) else "\\".join(
                    str(x) for x in (v if isinstance(v, (list, MultiValue)) else [v])).encode("utf-8", "ignore")
            for h in self.matcher.hits(data):
                if h.short_number and vr not in _TEXT_VRS:
                    continue  # a short number inside a number, UID or binary value is a number
                if (vr == "UI" or h.uid_like) and "retain-uids" in opts:
                    continue  # Retain UIDs keeps original UIDs by request
                if here:
                    continue  # the profile allows identifying values here (listed in the report)
                key = (number, h.kind)
                if key not in seen:
                    seen.add(key)
                    add("captured identifier", f"{_tag(t)} {keyword_or_tag(t)} holds the source's {h.kind}")

    def _walk(self, ds, opts: frozenset[str], date_policy: str, add, depth: int = 0) -> None:
        dictionary_vr = rawelem.dictionary_vr
        for t, elem in ds._dict.items():  # nothing is changed while walking
            number = int(t)  # plain int arithmetic: BaseTag's properties run in Python
            if depth == 0 and number in _PIXEL_TAGS:
                break  # the header ends here; pixel bytes were copied unchanged
            if number >> 16 & 1:
                if "retain-safe-private" not in opts or not Cleaners.keep_private(ds, t):
                    add("private", f"{_tag(t)} private element outside the safe list")
                    continue
            raw = type(elem) is RawDataElement
            if raw and (number, elem.VR) in _QUIET:
                continue  # a public text element of its dictionary VR that no check reads
            vr = elem.VR if raw and elem.VR in _PLAIN_VRS and elem.value is not None else None
            if vr is None:
                vr = rawelem.known_vr(elem) or rawelem.vr_of(ds, t)
            dvr = dictionary_vr(number)
            if dvr is not None and vr != dvr and vr not in dvr.split(" or ") and not (vr == "SQ" and dvr == "UN"):
                add("vr", f"{_tag(t)} {keyword_or_tag(t)} is written as {vr}, not the dictionary's {dvr}")
                continue
            if raw and vr in _BINARY_VRS and text_in_binary(vr, elem.value, number):
                add("text in numbers", f"{_tag(t)} {keyword_or_tag(t)} ({vr}) holds bytes that read as text")
                continue
            if vr not in _INSPECTED_VRS:
                if raw and vr not in _BINARY_VRS and not number >> 16 & 1 and elem.VR in (vr, None):
                    _QUIET.add((number, elem.VR))  # the same answer for every such element
                    if elem.VR is not None and elem.is_little_endian and number not in _READ_AT_TOP:
                        _QUIET_KEYS.add(dicomraw.vr_key(number, elem.VR))
                continue  # no name or date can hide in it: left unconverted
            if vr == "SQ":
                self._walk_sequence(ds, t, elem, opts, date_policy, add, depth)
                continue
            if vr != "PN" and date_policy != "remove":
                continue  # dates are allowed: not converted
            value = rawelem.text_value(ds, t, vr)
            values = [] if value is None else value if isinstance(value, (list, MultiValue)) else [value]
            texts = [s for s in (str(v).strip() for v in values) if s]
            if vr == "PN":
                for s in texts:
                    if not (self.pseudonyms.is_patient_pseudonym(s) or s.upper() == DUMMY_TEXT
                            or s.upper() in self.allowed_names):
                        add("person name", f"{_tag(t)} {keyword_or_tag(t)} is not a pseudonym")
            elif any(s not in DUMMY_DATES for s in texts):
                add("dates", f"{_tag(t)} {keyword_or_tag(t)} holds a date the profile removes")

    def _walk_sequence(self, ds, t, elem, opts: frozenset[str], date_policy: str, add, depth: int) -> None:
        """Walk a sequence's items; the verdict on a raw sequence's bytes is remembered.

        Most sequences repeat byte for byte from file to file (the method codes
        Telerad writes, references within a study, code items): the same bytes
        under the same verifier settings give the same findings, so they are
        judged once. Only the checks' own results are reused, never the engine's.
        """
        key = None
        if type(elem) is RawDataElement and elem.value:
            charset = ds._dict.get(_CHARSET)  # the items' text is read in this character set
            key = (int(t), elem.value, elem.is_implicit_VR, elem.is_little_endian,
                   None if charset is None else str(charset.value), str(ds.__dict__.get("_parent_encoding")),
                   self._settings_key, frozenset(opts), date_policy)
            cached = _SEQUENCE_VERDICTS.get(key)
            if cached is not None:
                for check, detail in cached:
                    add(check, detail)
                return
        emitted: list[tuple[str, str]] = []

        def add_and_keep(check: str, detail: str) -> None:
            emitted.append((check, detail))
            add(check, detail)

        for item in _items(ds, t, _QUIET_KEYS):  # elements every check has passed are left out
            self._walk(item, opts, date_policy, add_and_keep, depth + 1)
        if key is not None:
            if len(_SEQUENCE_VERDICTS) >= _SEQUENCE_VERDICTS_MAX:
                _SEQUENCE_VERDICTS.clear()
            _SEQUENCE_VERDICTS[key] = tuple(emitted)

    # --- a tree ----------------------------------------------------------------------------
    def verify_tree(self, root: Path) -> VerifyReport:
        report = VerifyReport()
        for p in sorted(Path(root).rglob("*")):
            if not p.is_file():
                continue
            rel = p.relative_to(root).as_posix()
            if p.name in ("manifest.json", "manifest.sig", "deid-report.json"):
                if p.suffix == ".json":  # text that leaves with the batch: searched, not counted as a file
                    report.findings += self.text_findings(rel, p.read_text(encoding="utf-8", errors="replace"))
                continue
            report.files += 1
            report.findings += self.verify_file(p, rel)
        return report

    def check(self, root: Path) -> VerifyReport:
        """Verify a staging tree; VerificationError (nothing may be uploaded) on any finding."""
        report = self.verify_tree(root)
        if not report.ok:
            shown = "\n  ".join(str(f) for f in report.findings[:20])
            more = len(report.findings) - 20
            raise VerificationError(
                f"de-identified output failed verification ({len(report.findings)} findings in "
                f"{report.files} files); nothing was uploaded:\n  {shown}"
                + (f"\n  ... and {more} more" if more > 0 else "")
            )
        return report


class SourceVerifiers:
    """One ``Verifier`` per source's identifiers, reused by the files that share them.

    The files of a study carry the same patient ID, study UID, accession and
    captured values, so their verifier (combined values, compiled matcher) is
    built once, not per file; a few recent ones are kept.
    """

    KEEP = 64

    def __init__(self, pseudonyms: Pseudonyms, profile=None, *, allowed_names: list[str] | None = None) -> None:
        self.pseudonyms, self.profile, self.allowed_names = pseudonyms, profile, allowed_names
        self._made: dict[tuple, Verifier] = {}

    def for_original(self, original) -> Verifier:
        """The verifier for an ``OriginalIds`` (its IDs searched as originals, its captured values)."""
        shared, names = (original.captured or Captured()).split_names()
        key = (original.patient_id, original.study_instance_uid, original.accession_number, shared)
        verifier = self._made.get(key)
        if verifier is None:
            if len(self._made) >= self.KEEP:
                self._made.clear()
            verifier = self._made[key] = Verifier(
                self.pseudonyms, self.profile, originals=[k for k in key[:3] if k],
                captured=shared, allowed_names=self.allowed_names)
        return verifier.with_names(names) if names else verifier


# Verdicts on raw sequence bytes (see Verifier._walk_sequence), per process.
_SEQUENCE_VERDICTS: dict[tuple, tuple[tuple[str, str], ...]] = {}
_SEQUENCE_VERDICTS_MAX = 4096
_CHARSET = 0x00080005
# (tag, explicit VR or None) of public elements that pass every per-element check by their
# tag and VR alone (text of the dictionary's VR, not PN, DA, DT or SQ): skipped at once.
_QUIET: set[tuple[int, str | None]] = set()
# The same pairs as ``dicomraw.vr_key`` (explicit VR little endian), left unbuilt by verify_header,
# except the elements the file-level checks read.
_QUIET_KEYS: set[int] = set()
_READ_AT_TOP = frozenset(tag_for_keyword(kw) for kw in (
    "SpecificCharacterSet", "PatientIdentityRemoved", "BurnedInAnnotation", "PatientID", *INSTANCE_UIDS,
    "SOPInstanceUID", "LongitudinalTemporalInformationModified", "DeidentificationMethodCodeSequence"))


def forget_caches() -> None:
    """Drop what this process's verifiers remembered (a fresh process's state, for benchmarks)."""
    from pipeline.deid import capture

    _SEQUENCE_VERDICTS.clear()
    _QUIET.clear()
    _QUIET_KEYS.clear()
    _combined.cache_clear()
    capture.matcher_for.cache_clear()
    capture._compiled.cache_clear()


@lru_cache(maxsize=256)
def _combined(originals: tuple[str, ...], captured: Captured, organization: str) -> Captured:
    """A mapping's originals and the captured values as one set (the same for every file of a patient)."""
    everything = Captured.of([(o, "an original identifier from the mapping") for o in originals])
    return everything.merged(captured).without([organization])


def allowances(profile) -> frozenset[int]:
    """Tags a profile explicitly allows to hold identifying values (``allow_identifying``)."""
    if profile is None:
        return frozenset()
    return frozenset(profile.settings.get("allow_identifying", ()))


def batch_captured(originals) -> Captured:
    """Everything the batch's sources captured, merged: one matcher for the whole batch."""
    merged = Captured()
    parts = [o.captured for o in originals if o.captured]
    parts += [Captured.of([(v, "an original identifier") for v in (o.patient_id, o.study_instance_uid,
                                                                     o.accession_number) if v])
              for o in originals]
    return merged.merged(*parts)


def verify_batch(root: Path, *, deid, originals, texts: dict[str, str] | None = None) -> list[Finding]:
    """The pipeline's pre-upload check: the engine's profile and key, the batch's captured values.

    ``originals`` are ``OriginalIds`` of the batch's files (their captured
    values compiled into one matcher); ``texts`` is other text that leaves with
    the batch (report, manifest fields, object metadata), name -> text. A
    per-submission PatientName alias is the only person name allowed besides
    pseudonyms, and it is searched for captured values like everything else.
    """
    alias = deid.overrides.as_dict().get("PatientName")
    verifier = Verifier(deid.pseudonyms, deid.profile, captured=batch_captured(originals),
                        allowed_names=[alias] if alias else None)
    findings = verifier.verify_tree(Path(root)).findings
    for name, text in (texts or {}).items():
        findings += verifier.text_findings(name, text)
    return findings
