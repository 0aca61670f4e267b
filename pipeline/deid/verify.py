"""The leak verifier: a second, independent look at de-identified files before upload.

It does not trust the engine. It re-reads each written file and reports any
private element outside the safe list, a person name or patient ID that is not
a pseudonym, a short numeric value whose bytes read as text (a damaged tag), a
date the date policy forbids, BurnedInAnnotation = YES, an instance UID that
was not replaced, a file meta or preamble that was copied, and (given the
mapping's originals) any original identifier anywhere in the header bytes or
the path. It fails closed: a file it cannot read is a finding.
Findings name the file, the tag and the check, never the offending value.
"""

from __future__ import annotations

import re

from dataclasses import dataclass, field
from pathlib import Path

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue

from pipeline import dicomio, dicomraw
from pipeline.dicomraw import value_of
from pipeline.deid import rawelem, standard
from pipeline.deid.cleaning import Cleaners
from pipeline.deid.profile import keyword_or_tag
from pipeline.deid.values import DUMMY_TEXT, is_standard_uid
from pipeline.exceptions import TeleradError, VerificationError
from pipeline.pseudonyms import Pseudonyms

INSTANCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
DUMMY_DATES = {"19000101", "19000101000000"}
_CODE_OPTIONS = {standard.code_for(o)["code_value"]: o for o in standard.OPTION_COLUMNS}
_INSPECTED_VRS = frozenset({"SQ", "PN", "DA", "DT"})
_PIXEL_TAGS = frozenset(dicomio.PIXEL_TAGS)
_FORBIDDEN_META = {tag_for_keyword(kw): kw for kw in (
    "SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
    "PrivateInformation", "PrivateInformationCreatorUID")}
MIN_ORIGINAL_LEN = 3  # shorter originals ("1", "A") would match by chance anywhere
# Originals shorter than this ("ID1", "204") count only as a whole word: inside the
# binary values before the pixels (overlays, LUTs), or the digits of a new UID in the
# path, three characters match by chance. Short all-digit originals are not searched
# at all: "134" is as likely a kept measurement (an IS or DS value) of another image
# of a mixed batch. PatientID and AccessionNumber are replaced by keyed pseudonyms
# whatever their length, and PatientID is checked to be one.
WHOLE_WORD_BELOW = 6


def _whole_word(needle: bytes, haystack: bytes) -> bool:
    """``needle`` occurs in ``haystack`` with no letter or digit right before or after it."""
    return re.search(rb"(?<![a-z0-9])" + re.escape(needle) + rb"(?![a-z0-9])", haystack) is not None


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


def _items(ds, tag) -> list:
    """A sequence's items: cut from the raw bytes when possible, else converted by pydicom."""
    elem = ds.get_item(tag)
    if isinstance(elem, RawDataElement):
        if not elem.value:
            return []
        try:
            return dicomraw.parse_items(elem, ds)
        except dicomraw.Unparsed:
            pass
    return list(ds[tag].value or [])


class Verifier:
    """Checks files against the de-identification promises; options come from the profile or the file."""

    def __init__(self, pseudonyms: Pseudonyms, profile=None, *, originals: list[str] | None = None,
                 allowed_names: list[str] | None = None) -> None:
        self.pseudonyms = pseudonyms
        self.profile = profile
        self.originals = sorted({o.strip() for o in (originals or []) if len(o.strip()) >= MIN_ORIGINAL_LEN})
        self.allowed_names = {n.strip().upper() for n in (allowed_names or []) if n.strip()}

    @classmethod
    def originals_from_mapping(cls, mapping: dict) -> list[str]:
        """Every original identifier a mapping records (patient IDs, study UIDs, accessions)."""
        out: list[str] = []
        for s in mapping.get("studies", []):
            out += [str(v) for v in (s.get("original") or {}).values() if v]
        return out

    # --- options in force for one file -----------------------------------------------
    def _options(self, ds) -> set[str]:
        if self.profile is not None:
            return set(self.profile.options)
        codes = {str(i.get("CodeValue", "")) for i in ds.get("DeidentificationMethodCodeSequence", [])}
        return {_CODE_OPTIONS[c] for c in codes if c in _CODE_OPTIONS}

    # --- one file ------------------------------------------------------------------------
    def verify_file(self, path: Path, rel: str) -> list[Finding]:
        """Findings for a written file (its header is read; pixel bytes were copied unchanged)."""
        return self._verify(lambda: dicomio.read(Path(path), header_only=True), rel)

    def verify_header(self, header: bytes, rel: str) -> list[Finding]:
        """Findings for a file's header bytes before they are written (``dicomio.write``'s gate)."""
        return self._verify(lambda: dicomio.read_header_bytes(header), rel)

    def _verify(self, read, rel: str) -> list[Finding]:
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
        if str(value_of(ds, "PatientIdentityRemoved", "")).upper() != "YES":
            add("marking", "PatientIdentityRemoved is not YES")
        if str(value_of(ds, "BurnedInAnnotation", "")).strip().upper() == "YES":
            add("burned-in", "BurnedInAnnotation is YES")
        pid = str(value_of(ds, "PatientID", "") or "")
        if pid and not self.pseudonyms.is_patient_pseudonym(pid):
            add("patient id", "(0010,0020) PatientID is not a pseudonym")
        if "retain-uids" not in opts:
            for kw in INSTANCE_UIDS:
                v = str(value_of(ds, kw, "") or "")
                if v and not v.startswith("2.25.") and not is_standard_uid(v):
                    add("uid", f"{kw} was not replaced")
            msi = str(value_of(ds.file_meta, "MediaStorageSOPInstanceUID", ""))
            if msi != str(value_of(ds, "SOPInstanceUID", "")):
                add("uid", "MediaStorageSOPInstanceUID differs from SOPInstanceUID")
        date_policy = ("shift" if "retain-long-modified-dates" in opts
                       else "keep" if "retain-long-full-dates" in opts else "remove")
        self._walk(ds, opts, date_policy, add)
        if date_policy == "shift" and str(value_of(ds, "LongitudinalTemporalInformationModified", "")) != "MODIFIED":
            add("dates", "LongitudinalTemporalInformationModified is not MODIFIED")
        low_header, low_rel = header.lower(), rel.lower()
        for o in self.originals:
            if "retain-uids" in opts and o.replace(".", "").isdigit():
                continue  # Retain UIDs keeps original UIDs by request
            if len(o) < WHOLE_WORD_BELOW and o.isdigit():
                continue  # "134" is also a kept number (an IS or DS value) in any image: not searchable
            b = o.lower().encode("utf-8", "ignore")
            if b in low_header and (len(b) >= WHOLE_WORD_BELOW or _whole_word(b, low_header)):
                add("original identifier", "an original identifier from the mapping appears in the file")
                break
            if o.lower() in low_rel and (len(b) >= WHOLE_WORD_BELOW
                                         or _whole_word(b, low_rel.encode("utf-8", "ignore"))):
                add("original identifier", "an original identifier from the mapping appears in the path")
                break
        return found

    def _walk(self, ds, opts: set[str], date_policy: str, add, depth: int = 0) -> None:
        for t, elem in list(ds._dict.items()):
            if depth == 0 and t in _PIXEL_TAGS:
                break  # the header ends here; pixel bytes were copied unchanged
            if t.is_private:
                if "retain-safe-private" not in opts or not Cleaners.keep_private(ds, t):
                    add("private", f"{_tag(t)} private element outside the safe list")
                    continue
            vr = rawelem.known_vr(elem) or rawelem.vr_of(ds, t)
            if type(elem) is RawDataElement and rawelem.text_in_binary(vr, elem.value):
                add("text in numbers", f"{_tag(t)} {keyword_or_tag(t)} ({vr}) holds bytes that read as text")
                continue
            if vr not in _INSPECTED_VRS:
                continue  # no name or date can hide in it: left unconverted
            if vr == "SQ":
                for item in _items(ds, t):
                    self._walk(item, opts, date_policy, add, depth + 1)
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

    # --- a tree ----------------------------------------------------------------------------
    def verify_tree(self, root: Path) -> VerifyReport:
        report = VerifyReport()
        for p in sorted(Path(root).rglob("*")):
            if not p.is_file():
                continue
            rel = p.relative_to(root).as_posix()
            if p.name in ("manifest.json", "manifest.sig", "deid-report.json"):
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


def verify_batch(root: Path, *, deid, originals) -> list[Finding]:
    """The pipeline's pre-upload check: the engine's profile and key, the batch's originals.

    ``originals`` are ``OriginalIds`` of the batch's files; a per-submission
    PatientName alias is the only person name allowed besides pseudonyms.
    """
    strings: list[str] = []
    for o in originals:
        strings += [o.patient_id, o.study_instance_uid, o.accession_number]
    alias = deid.overrides.as_dict().get("PatientName")
    verifier = Verifier(deid.pseudonyms, deid.profile, originals=strings,
                        allowed_names=[alias] if alias else None)
    return verifier.verify_tree(Path(root)).findings
