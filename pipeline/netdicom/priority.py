"""Which priority a received study gets: the highest that any rule gives any of its instances.

Four signals, each optional:

* the calling AE title (``listen_priority_by_ae``: a scanner or PACS node that
  sends only emergencies, e.g. ``CT_STAT=STAT``);
* site attribute rules (``listen_priority_rules``: ``Keyword=PATTERN:PRIORITY``,
  an fnmatch pattern over the attribute's text, case-insensitive);
* Requested Procedure Priority (0040,1003), at the top level or in the Request
  Attributes Sequence: ``STAT`` -> STAT, ``HIGH`` -> URGENT, others -> ROUTINE;
* a hint from the transport (the C-STORE Priority field: HIGH -> STAT, LOW ->
  ROUTINE; a STOW-RS caller may pass one too).

The highest wins, so no rule can lower what another raised; with no signal the
study gets ``default_priority`` (ROUTINE unless configured). A study's
priority is the highest of its instances'.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Iterable

from pydicom.datadict import keyword_dict
from pydicom.dataset import Dataset

from pipeline.exceptions import ConfigError
from pipeline.settings import Priority, Settings

ORDER = Priority.names()  # highest first

#: Requested Procedure Priority (0040,1003) defined terms -> Telerad priority.
REQUESTED_PROCEDURE_PRIORITY = {"STAT": "STAT", "HIGH": "URGENT", "ROUTINE": "ROUTINE",
                                "MEDIUM": "ROUTINE", "LOW": "ROUTINE"}

#: C-STORE Priority (0000,0700): 0 MEDIUM (no opinion), 1 HIGH, 2 LOW.
CSTORE_PRIORITY = {1: "STAT", 2: "ROUTINE"}


def highest(priorities: Iterable[str | None]) -> str | None:
    """The most urgent of ``priorities`` (None when there is none)."""
    known = [p for p in priorities if p in ORDER]
    return min(known, key=ORDER.index) if known else None


@dataclass(frozen=True)
class AttributeRule:
    """``Keyword=PATTERN:PRIORITY``: instances whose attribute matches get the priority."""

    keyword: str
    pattern: str
    priority: str

    @classmethod
    def parse(cls, text: str) -> "AttributeRule":
        try:
            left, priority = text.rsplit(":", 1)
            keyword, pattern = left.split("=", 1)
        except ValueError:
            raise ConfigError(
                f"priority rule {text!r} must read Keyword=PATTERN:PRIORITY, e.g. StudyDescription=*TRAUMA*:STAT"
            ) from None
        keyword, priority = keyword.strip(), priority.strip().upper()
        if keyword not in keyword_dict:
            raise ConfigError(f"priority rule {text!r}: {keyword!r} is not a DICOM keyword (e.g. StudyDescription)")
        if priority not in ORDER:
            raise ConfigError(f"priority rule {text!r}: the priority must be STAT, URGENT or ROUTINE")
        return cls(keyword, pattern.strip(), priority)

    def matches(self, ds: Dataset) -> bool:
        value = ds.get(self.keyword)
        if value is None:
            return False
        text = str(value.value if hasattr(value, "value") else value)
        return fnmatch.fnmatchcase(text.upper(), self.pattern.upper())


@dataclass(frozen=True)
class PriorityRules:
    """The site's priority rules, built once from settings."""

    by_calling_ae: dict[str, str] = field(default_factory=dict)
    attribute_rules: tuple[AttributeRule, ...] = ()
    default: str = Priority.ROUTINE.value

    @classmethod
    def from_settings(cls, settings: Settings) -> "PriorityRules":
        return cls(
            by_calling_ae=dict(settings.listen_priority_by_ae),
            attribute_rules=tuple(AttributeRule.parse(r) for r in settings.listen_priority_rules),
            default=settings.default_priority.value,
        )

    @property
    def keywords(self) -> set[str]:
        """Attributes the rules read (a reader of headers may stop once it has these)."""
        return {r.keyword for r in self.attribute_rules} | {"RequestedProcedurePriority", "RequestAttributesSequence"}

    def signal(self, ds: Dataset, calling: str = "", hint: str | None = None) -> str | None:
        """The highest priority any rule gives this instance, or None when no rule speaks."""
        found = [self.by_calling_ae.get(calling.strip()), hint.upper() if hint else None]
        found += [r.priority for r in self.attribute_rules if r.matches(ds)]
        found += [REQUESTED_PROCEDURE_PRIORITY.get(v) for v in _requested_priorities(ds)]
        return highest(found)

    def for_instance(self, ds: Dataset, calling: str = "", hint: str | None = None) -> str:
        return self.signal(ds, calling, hint) or self.default


def _requested_priorities(ds: Dataset) -> list[str]:
    values = []
    top = ds.get("RequestedProcedurePriority")
    if top:
        values.append(str(top).strip().upper())
    for item in ds.get("RequestAttributesSequence") or []:
        v = item.get("RequestedProcedurePriority")
        if v:
            values.append(str(v).strip().upper())
    return values
