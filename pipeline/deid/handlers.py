"""Element handlers: one per kind of element, asked in order; each plans once, acts per element.

Handlers are asked in order, ``plan(policy, tag, vr)``, until one claims the
element. Most outcomes depend on the tag and VR alone (remove a private
element, keep a code, walk a sequence), so the engine asks once per tag and
VR for a profile and then acts on every element from that cached ``Plan``;
only outcomes that depend on the value (pseudonyms, new UIDs, shifted dates,
cleaned text) call back into code per element. ``describe()`` says in one
line what a handler does.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace

from pydicom.datadict import get_entry, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from pipeline.deid import rawelem, values
from pipeline.deid.profile import REQUIRED, Profile, Rule, keyword_or_tag, typed_letter
from pipeline.exceptions import DeidentificationError
from pipeline.pseudonyms import Pseudonyms

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
ACCESSION = 0x00080050
_IDENTITY_TAGS = frozenset({PATIENT_ID, PATIENT_NAME, ACCESSION})  # a set: no BaseTag.__eq__ per element
_IDENTITY_VRS = {PATIENT_ID: "LO", PATIENT_NAME: "PN", ACCESSION: "SH"}
CODE_MEANING = 0x00080104
CODE_VALUE = 0x00080100
CODING_SCHEME = 0x00080102
TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC", "UR", "AE"}  # free text (UR: a URL's query can name anyone)


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
    node: "object" = None  # iodtypes.TypeNode of the dataset being walked (its SOP Class, its sequence)

    def count(self, tag: int, what: str) -> None:
        self.counts[keyword_or_tag(tag)][what] += 1

    @property
    def date_shift(self) -> int:
        return self.pseudonyms.date_shift_days(self.patient_key)


# --- plans -------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What the walk does with an element, decided once per tag (and VR) for a profile.

    ``kind`` is ``remove``, ``keep``, ``check`` (keep after vetting the value),
    ``walk`` (de-identify the items of a sequence) or ``call`` (the value decides:
    ``handler(ctx, ds, tag, vr=..., top=...)`` runs for each element). A count
    is recorded as ``counts[label][what]`` when ``what`` is set.
    """

    kind: str
    label: str = ""
    what: str = ""
    check_label: str = ""
    handler: "object" = None


NEED_VR = Plan("need-vr")  # a handler can only decide once it knows the element's VR


def _counted(kind: str, tag: int, what: str, **kw) -> Plan:
    return Plan(kind, label=keyword_or_tag(tag), what=what, **kw)


# --- handlers ----------------------------------------------------------------------
# Each handler's ``plan(policy, tag, vr)`` says whether the element is its own
# (None: ask the next one) and what to do with it; ``policy`` carries the
# profile, never_remap and keep_text. Handlers whose outcome depends on the
# value are also called per element.
class GroupLength:
    """Group length elements (gggg,0000) are retired, and file meta (0002) belongs only in the file meta."""

    def describe(self) -> str:
        return "remove group length elements (gggg,0000) and file meta elements (0002,eeee) inside the dataset"

    def plan(self, policy, tag: int, vr: str | None, node=None) -> Plan | None:
        if tag >> 16 == 0x0002:  # e.g. Private Information inside a sequence item
            return _counted("remove", tag, "removed")
        if tag & 0xFFFF == 0:
            return _counted("remove", tag, "removed")
        return None


class Private:
    """Private elements are removed, except safe ones under Retain Safe Private."""

    def describe(self) -> str:
        return "remove private elements (Retain Safe Private keeps Table E.3.10-1 by creator and element byte)"

    def plan(self, policy, tag: int, vr: str | None, node=None) -> Plan | None:
        if not (tag >> 16) & 1:
            return None
        if policy.profile.private.action == "C":
            return Plan("call", handler=self)
        return Plan("remove", label="private attributes", what="removed")

    def __call__(self, ctx: Context, ds: Dataset, tag: int, *, vr: str | None = None, top: bool = False) -> None:
        if ctx.cleaners.keep_private(ds, BaseTag(tag)):
            if rawelem.vr_of(ds, tag) == "SQ":
                rawelem.walk_sequence(ctx, ds, tag)
            ctx.counts["private attributes (safe)"]["kept"] += 1
            return
        del ds[tag]
        ctx.counts["private attributes"]["removed"] += 1


class Identity:
    """Patient ID, Patient's Name and Accession Number become keyed pseudonyms, at any depth."""

    def describe(self) -> str:
        return "pseudonymise PatientID, PatientName (top level: the patient's key) and AccessionNumber"

    def plan(self, policy, tag: int, vr: str | None, node=None) -> Plan | None:
        if tag not in _IDENTITY_TAGS:
            return None
        rule = policy.profile.rule_for(tag)
        if rule is not None and rule.source.startswith("profile:"):
            return None  # an institution's explicit rule wins
        return Plan("call", handler=self)

    def __call__(self, ctx: Context, ds: Dataset, tag: int, *, vr: str | None = None, top: bool = False) -> None:
        vr = _IDENTITY_VRS[tag]
        if rawelem.is_empty(ds, tag, vr):
            ctx.count(tag, "kept empty")
            return
        text = str(rawelem.text_value(ds, tag, vr)).strip()
        if tag == PATIENT_ID:
            new = ctx.pseudonyms.patient_id(text)
        elif tag == PATIENT_NAME:
            key = ctx.patient_key if top else "name:" + text
            new = ctx.pseudonyms.patient_name(key)
        else:
            new = ctx.pseudonyms.accession(text)
        rawelem.set_value(ds, tag, vr, new)
        ctx.count(tag, "pseudonymised")


class CodeMeaning:
    """A code item keeps its code; its Code Meaning is the standard's, else cleaned by vocabulary.

    Code Meaning is display text anyone could have typed into (``CT HEAD DOE
    JOHN`` in a Procedure Code Sequence), and the sequences that hold it are
    mostly not in Table E.1-1, so it is handled here under every profile. An
    institution's explicit rule for it in a profile still wins.
    """

    def describe(self) -> str:
        return ("Code Meaning: the standard meaning of a known code (DCM, SCT, UCUM...), "
                "otherwise cleaned with the clinical vocabulary")

    def plan(self, policy, tag: int, vr: str | None, node=None) -> Plan | None:
        if tag != CODE_MEANING:
            return None
        rule = policy.profile.rule_for(tag)
        if rule is not None and rule.source.startswith("profile:"):
            return None
        return Plan("call", handler=self)

    def __call__(self, ctx: Context, ds: Dataset, tag: int, *, vr: str | None = None, top: bool = False) -> None:
        from pipeline.deid.codes import standard_meaning

        if rawelem.is_empty(ds, tag, "LO"):
            ctx.count(tag, "kept empty")
            return
        old = rawelem.text_value(ds, tag, "LO")
        scheme = CODING_SCHEME in ds._dict and rawelem.text_value(ds, CODING_SCHEME, "SH")
        value = CODE_VALUE in ds._dict and rawelem.text_value(ds, CODE_VALUE, "SH")
        meaning = (standard_meaning(str(scheme), str(value))
                   if isinstance(scheme, str) and isinstance(value, str) else None)
        if meaning is not None:
            if meaning != old:
                rawelem.set_value(ds, tag, "LO", meaning)
            ctx.count(tag, "standard meaning")
            return
        new = ctx.cleaners.vocabulary.clean(str(old)) if isinstance(old, str) else \
            [ctx.cleaners.vocabulary.clean(str(v)) for v in old]
        if not new and ctx.node is not None and ctx.node.type_of(tag) in ("1", "1C"):
            new = values.DUMMY_TEXT  # a code item needs a meaning: no clinical word left, a dummy
        if new != old:
            rawelem.set_value(ds, tag, "LO", new)
        ctx.count(tag, "cleaned")


OVERLAY_DATA = 0x60003000


class OverlayPlane:
    """An overlay plane (a 60xx group) goes out whole or not at all.

    Table E.1-1 removes Overlay Data (X, unless Clean Graphics), but the rest of
    the group (rows, columns, type, origin: Type 1 with it) would then describe a
    bitmap that is not there. So when Overlay Data is removed, every element of
    its group is removed with it; under Clean Graphics the group is kept and each
    element takes its own rule.
    """

    def describe(self) -> str:
        return "overlay planes (60xx): removed as a whole group when Overlay Data is removed"

    def plan(self, policy, tag: int, vr: str | None, node=None) -> Plan | None:
        group = tag >> 16
        if not (0x6000 <= group <= 0x601E) or group & 1:
            return None
        rule = policy.profile.rule_for(OVERLAY_DATA)
        if rule is None or rule.action != "X":
            return None
        return _counted("remove", tag, "removed")


#: Attributes that may only be present with another one (PS3.3's condition), by tag.
#: Responsible Person Role (0010,2298) is Type 1C "if Responsible Person is present
#: and has a value"; Table E.1-1 removes Responsible Person.
DEPENDS_ON = {0x00102298: 0x00102297}


class Dependent:
    """An attribute whose condition is another attribute's value goes when that one is removed or emptied."""

    def describe(self) -> str:
        return "ResponsiblePersonRole is removed with ResponsiblePerson"

    def plan(self, policy, tag: int, vr: str | None, node=None) -> Plan | None:
        governing = DEPENDS_ON.get(tag)
        if governing is None:
            return None
        rule = policy.profile.rule_for(governing)
        if rule is None:
            return None
        letter = typed_letter(rule, node.type_of(governing) if node is not None else None)
        return _counted("remove", tag, "removed") if letter in ("X", "Z") else None


class TableRule:
    """Apply the profile's resolved Table E.1-1 action (with its options) to a listed element."""

    def describe(self) -> str:
        return "apply the Table E.1-1 action of the profile and its options"

    def plan(self, policy, tag: int, vr: str | None, node=None) -> Plan | None:
        rule = policy.profile.rule_for(tag)
        if rule is None:
            return None
        letter = typed_letter(rule, node.type_of(tag) if node is not None else None)
        if letter != rule.action:
            rule = replace(rule, action=letter)
        if rule.action == "X":
            return _counted("remove", tag, "removed")
        if vr is None:
            return NEED_VR
        if rule.action == "K":
            if vr == "SQ":
                return _counted("walk", tag, "kept")
            return _counted("check", tag, "kept", check_label=rule.label)
        return Plan("call", handler=_RuleAction(rule))


class _RuleAction:
    """One resolved rule whose outcome depends on the value (Z, D, U, C, R, H, S)."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    def __call__(self, ctx: Context, ds: Dataset, tag: int, *, vr: str | None = None, top: bool = False) -> None:
        apply_rule(ctx, ds, tag, self.rule, vr)


class Unlisted:
    """Elements the table does not list: UIDs remapped, free text removed unless kept, rest kept."""

    def describe(self) -> str:
        return ("unlisted elements: remove retired and unknown attributes, remap instance UIDs, remove "
                "free-text VRs not on the keep list, apply the date policy to DA/DT, walk sequences, keep the rest")

    def plan(self, policy, tag: int, vr: str | None, node=None) -> Plan | None:
        if tag >> 16 == 0 or _retired_or_unknown(tag):
            # Command elements, retired and unknown public attributes: nothing a reader
            # needs, and where a damaged tag lands (text read as numbers) if anywhere.
            return _counted("remove", tag, "removed")
        if vr is None:
            return NEED_VR
        if vr == "SQ":
            return Plan("walk")
        if vr == "UI":
            if tag in policy.never_remap or policy.profile.has("retain-uids"):
                return Plan("check", check_label=keyword_or_tag(tag))
            return Plan("call", handler=_remap)
        if vr == "UN":
            return _counted("remove", tag, "removed")  # a standard tag we cannot read: cannot be judged
        need = REQUIRED.get(node.type_of(tag) or "") if node is not None else None
        if vr in TEXT_VRS or tag in policy.clean_text:
            if tag in policy.clean_text:  # free text a reader needs: cleaned like a descriptor
                return Plan("call", handler=_clean_text)
            if tag not in policy.keep_text:
                # The IOD decides how little may be left: Type 1 text keeps its clinical
                # words (a dummy when none is left), Type 2 is emptied, the rest removed.
                if need == "D":
                    return Plan("call", handler=_required_text)
                if need == "Z":
                    return Plan("call", handler=_empty)
                return _counted("remove", tag, "removed")
        if vr in ("DA", "DT"):  # dates the table does not list follow the date policy too
            policy_name = policy.profile.date_policy
            if policy_name == "shift":
                return Plan("call", handler=_shift_dates)
            if policy_name == "remove":
                if need == "D":
                    return Plan("call", handler=_dummy)
                if need == "Z":
                    return Plan("call", handler=_empty)
                return _counted("remove", tag, "removed")
            return Plan("check", check_label=keyword_or_tag(tag))  # kept dates must be dates
        return Plan("check", check_label=keyword_or_tag(tag))


def _retired_or_unknown(tag: int) -> bool:
    try:
        return bool(get_entry(tag)[3])  # "Retired", or ""
    except KeyError:
        return True


def _clean_text(ctx: Context, ds: Dataset, tag: int, *, vr: str | None = None, top: bool = False) -> None:
    ctx.cleaners.clean_text(ctx, ds, tag, vr)


def _required_text(ctx: Context, ds: Dataset, tag: int, *, vr: str | None = None, top: bool = False) -> None:
    """Unlisted free text the IOD requires (Type 1): its clinical words, or a dummy; names never kept."""
    if vr in ("PN", "AE", "UR"):
        _dummy(ctx, ds, tag, vr=vr)
        return
    ctx.cleaners.clean_text(ctx, ds, tag, vr, required=True)


def _dummy(ctx: Context, ds: Dataset, tag: int, *, vr: str | None = None, top: bool = False) -> None:
    if rawelem.is_empty(ds, tag, vr):
        ctx.count(tag, "kept empty")
        return
    rawelem.set_value(ds, tag, vr, values.dummy_value(vr, int(tag)))
    ctx.count(tag, "replaced")


def _empty(ctx: Context, ds: Dataset, tag: int, *, vr: str | None = None, top: bool = False) -> None:
    rawelem.set_value(ds, tag, vr, values.empty_value(vr))
    ctx.count(tag, "emptied")


def _remap(ctx: Context, ds: Dataset, tag: int, *, vr: str | None = None, top: bool = False) -> None:
    remap(ctx, ds, tag)


def _shift_dates(ctx: Context, ds: Dataset, tag: int, *, vr: str | None = None, top: bool = False) -> None:
    ctx.cleaners.shift_dates(ctx, ds, tag, vr)


# --- actions -------------------------------------------------------------------------
def remap(ctx: Context, ds: Dataset, tag: int) -> None:
    old = rawelem.uid_value(ds, tag)
    if rawelem.is_empty_value(old):
        return
    new = values.remap_uid_value(old, ctx.pseudonyms)
    if new != old:
        rawelem.set_value(ds, tag, "UI", new)
        ctx.count(tag, "remapped")


def apply_rule(ctx: Context, ds: Dataset, tag: int, rule: Rule, vr: str) -> None:
    """Carry out one letter of a resolved rule on ``ds[tag]``, an element of VR ``vr``.

    A value that is replaced whatever it holds (Z, D, R) is never converted first.
    """
    a = rule.action
    if a == "X":
        del ds[tag]
        ctx.count(tag, "removed")
        return
    if a == "K":
        if vr == "SQ":
            rawelem.walk_sequence(ctx, ds, tag)
        else:
            rawelem.check_kept(ds, tag, vr, rule.label)
        ctx.count(tag, "kept")
    elif a == "Z":
        rawelem.set_value(ds, tag, vr, values.empty_value(vr))
        ctx.count(tag, "emptied")
    elif a == "D":
        if vr == "UI":
            remap(ctx, ds, tag)
            return
        if vr == "SQ":
            # Dummy content that satisfies the items' macro: each item keeps its structure
            # (relationship and value types, codes) while every value in it is replaced,
            # emptied, cleaned or removed by the rules and Types of that item.
            rawelem.walk_sequence(ctx, ds, tag)
            ctx.count(tag, "replaced")
            return
        if rawelem.is_empty(ds, tag, vr):
            ctx.count(tag, "kept empty")
            return
        rawelem.set_value(ds, tag, vr, values.dummy_value(vr, int(tag)))
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
        rawelem.set_value(ds, tag, vr, rule.value)
        ctx.count(tag, "replaced")
    elif a == "H":
        elem = ds[tag]
        if not rawelem.is_empty_value(elem.value):
            elem.value = ctx.pseudonyms.text(keyword_for_tag(tag) or str(tag), str(elem.value))
            ctx.count(tag, "hashed")
    elif a == "S":
        ctx.cleaners.shift_dates(ctx, ds, tag, vr)
    else:  # pragma: no cover - profile validation prevents this
        raise DeidentificationError(f"unknown action {a!r} for {rule.label}")
