"""Element handlers: one small callable per kind of value, asked in order.

Each handler is ``handler(ctx, dataset, tag) -> bool``: True when it dealt
with the element (kept, changed or removed it), so later handlers are not
asked. ``describe()`` says in one line what it does. The walker in
``engine.py`` calls them for every element of every dataset, at every depth.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from pipeline.deid import rawelem, values
from pipeline.deid.profile import Profile, Rule, keyword_or_tag
from pipeline.exceptions import DeidentificationError
from pipeline.pseudonyms import Pseudonyms

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
ACCESSION = 0x00080050
_IDENTITY_TAGS = frozenset({PATIENT_ID, PATIENT_NAME, ACCESSION})  # a set: no BaseTag.__eq__ per element
TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC", "AE"}


@dataclass
class Context:
    """Everything the handlers of one file share: keyed sources, policies, counts."""

    profile: Profile
    pseudonyms: Pseudonyms
    patient_key: str
    never_remap: frozenset[int]
    keep_text: frozenset[int]
    cleaners: "object"  # cleaning.Cleaners; typed loosely to keep imports one-way
    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    walk: "object" = None  # the walker, for handlers that recurse into sequences
    current_tag: int = 0  # the top-level element being handled, for error messages

    def count(self, tag: int, what: str) -> None:
        self.counts[keyword_or_tag(tag)][what] += 1

    @property
    def date_shift(self) -> int:
        return self.pseudonyms.date_shift_days(self.patient_key)


def element_vr(ds: Dataset, tag: int) -> str:
    """The element's VR, falling back to the dictionary; a raw element stays raw when it can."""
    return rawelem.vr_of(ds, tag)


def _is_empty(value) -> bool:
    return value is None or value == "" or value == b"" or (hasattr(value, "__len__") and len(value) == 0)


# --- handlers ----------------------------------------------------------------------
class GroupLength:
    """Group length elements (gggg,0000) are retired; they are removed."""

    def describe(self) -> str:
        return "remove group length elements (gggg,0000)"

    def __call__(self, ctx: Context, ds: Dataset, tag: int) -> bool:
        if tag & 0xFFFF == 0 and tag >> 16 != 0x0002:
            del ds[tag]
            ctx.count(tag, "removed")
            return True
        return False


class Private:
    """Private elements are removed, except safe ones under Retain Safe Private."""

    def describe(self) -> str:
        return "remove private elements (Retain Safe Private keeps Table E.3.10-1 by creator and element byte)"

    def __call__(self, ctx: Context, ds: Dataset, tag: int) -> bool:
        if not (tag >> 16) & 1:
            return False
        rule = ctx.profile.private
        if rule.action == "C" and ctx.cleaners.keep_private(ds, BaseTag(tag)):
            if rawelem.vr_of(ds, tag) == "SQ":
                rawelem.walk_sequence(ctx, ds, tag)
            ctx.counts["private attributes (safe)"]["kept"] += 1
            return True
        del ds[tag]
        ctx.counts["private attributes"]["removed"] += 1
        return True


class Identity:
    """Patient ID, Patient's Name and Accession Number become keyed pseudonyms, at any depth."""

    def describe(self) -> str:
        return "pseudonymise PatientID, PatientName (top level: the patient's key) and AccessionNumber"

    def __call__(self, ctx: Context, ds: Dataset, tag: int, *, top: bool = False) -> bool:
        if tag not in _IDENTITY_TAGS:
            return False
        rule = ctx.profile.rule_for(tag)
        if rule is not None and rule.source.startswith("profile:"):
            return False  # an institution's explicit rule wins
        elem = ds[tag]
        raw = elem.value
        if _is_empty(raw):
            ctx.count(tag, "kept empty")
            return True
        text = str(raw).strip()
        if tag == PATIENT_ID:
            elem.value = ctx.pseudonyms.patient_id(text)
        elif tag == PATIENT_NAME:
            key = ctx.patient_key if top else "name:" + text
            elem.value = ctx.pseudonyms.patient_name(key)
        else:
            elem.value = ctx.pseudonyms.accession(text)
        ctx.count(tag, "pseudonymised")
        return True


class TableRule:
    """Apply the profile's resolved Table E.1-1 action (with its options) to a listed element."""

    def describe(self) -> str:
        return "apply the Table E.1-1 action of the profile and its options"

    def __call__(self, ctx: Context, ds: Dataset, tag: int) -> bool:
        rule = ctx.profile.rule_for(tag)
        if rule is None:
            return False
        apply_rule(ctx, ds, tag, rule)
        return True


class Unlisted:
    """Elements the table does not list: UIDs remapped, free text removed unless kept, rest kept."""

    def describe(self) -> str:
        return ("unlisted elements: remap instance UIDs, remove free-text VRs not on the keep list, "
                "apply the date policy to DA/DT, remove unknown UN elements, walk sequences, keep the rest")

    def __call__(self, ctx: Context, ds: Dataset, tag: int) -> bool:
        vr = element_vr(ds, tag)
        if vr == "SQ":
            rawelem.walk_sequence(ctx, ds, tag)
            return True
        if vr == "UI":
            if tag in ctx.never_remap or ctx.profile.has("retain-uids"):
                rawelem.check_kept(ds, tag, vr, keyword_or_tag(tag))
                return True
            remap(ctx, ds, tag)
            return True
        if vr == "UN":
            del ds[tag]  # a standard tag we cannot read: its content cannot be judged
            ctx.count(tag, "removed")
            return True
        if vr in TEXT_VRS and tag not in ctx.keep_text:
            del ds[tag]
            ctx.count(tag, "removed")
            return True
        if vr in ("DA", "DT"):  # dates the table does not list follow the date policy too
            policy = ctx.profile.date_policy
            if policy == "shift":
                ctx.cleaners.shift_dates(ctx, ds, tag, vr)
            elif policy == "remove":
                del ds[tag]
                ctx.count(tag, "removed")
            return True
        rawelem.check_kept(ds, tag, vr, keyword_or_tag(tag))
        return True


# --- actions -------------------------------------------------------------------------
def remap(ctx: Context, ds: Dataset, tag: int) -> None:
    elem = ds[tag]
    if _is_empty(elem.value):
        return
    new = values.remap_uid_value(elem.value, ctx.pseudonyms)
    if new != elem.value:
        elem.value = new
        ctx.count(tag, "remapped")


def apply_rule(ctx: Context, ds: Dataset, tag: int, rule: Rule) -> None:
    """Carry out one letter of a resolved rule on ``ds[tag]``."""
    a = rule.action
    if a == "X":
        del ds[tag]
        ctx.count(tag, "removed")
        return
    vr = element_vr(ds, tag)
    if a == "K":
        if vr == "SQ":
            rawelem.walk_sequence(ctx, ds, tag)
        else:
            rawelem.check_kept(ds, tag, vr, rule.label)
        ctx.count(tag, "kept")
        return
    elem = ds[tag]
    if a == "Z":
        elem.value = values.empty_value(vr)
        ctx.count(tag, "emptied")
    elif a == "D":
        if vr == "UI":
            remap(ctx, ds, tag)
            return
        if _is_empty(elem.value) and vr != "SQ":
            ctx.count(tag, "kept empty")
            return
        elem.value = values.dummy_value(vr)
        ctx.count(tag, "replaced")
    elif a == "U":
        if vr == "SQ":  # X/Z/U*: keep the references, remap the UIDs inside
            rawelem.walk_sequence(ctx, ds, tag)
            ctx.count(tag, "kept")
        elif vr == "UI":
            remap(ctx, ds, tag)
        else:
            del ds[tag]
            ctx.count(tag, "removed")
    elif a == "C":
        ctx.cleaners.clean(ctx, ds, tag, vr, rule)
    elif a == "R":
        elem.value = rule.value
        ctx.count(tag, "replaced")
    elif a == "H":
        if not _is_empty(elem.value):
            elem.value = ctx.pseudonyms.text(keyword_for_tag(tag) or str(tag), str(elem.value))
            ctx.count(tag, "hashed")
    elif a == "S":
        ctx.cleaners.shift_dates(ctx, ds, tag, vr)
    else:  # pragma: no cover - profile validation prevents this
        raise DeidentificationError(f"unknown action {a!r} for {rule.label}")
