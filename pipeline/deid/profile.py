"""A de-identification profile: Table E.1-1 rows resolved to one action each.

A profile is the Basic Profile plus a set of named Options, and (for custom
profiles) per-attribute overrides. Resolving happens once, at load time, so
the engine only looks an action up per element. Actions are single letters:
``K`` keep, ``X`` remove, ``Z`` empty, ``D`` dummy, ``C`` clean, ``U`` new UID,
plus custom-profile actions ``R`` (replace with a constant), ``H`` (keyed hash)
and ``S`` (shift a date).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pydicom.datadict import keyword_for_tag

from pipeline.deid import standard
from pipeline.deid.standard import OPTION_COLUMNS, PIXEL_OPTIONS, Row, TagPattern
from pipeline.exceptions import ConfigError
from pipeline.settings import config_dir

ALL_OPTIONS: tuple[str, ...] = tuple(OPTION_COLUMNS) + tuple(PIXEL_OPTIONS)

#: Other spellings users know from the standard and from other tools.
OPTION_ALIASES: dict[str, str] = {
    "full-dates": "retain-long-full-dates",
    "retain-full-dates": "retain-long-full-dates",
    "retain-longitudinal-full-dates": "retain-long-full-dates",
    "modified-dates": "retain-long-modified-dates",
    "retain-modified-dates": "retain-long-modified-dates",
    "retain-longitudinal-modified-dates": "retain-long-modified-dates",
    "safe-private": "retain-safe-private",
}

#: Presets: named option sets, matching names users know from other tools.
PRESETS: dict[str, tuple[str, ...]] = {
    "basic": (),
    "retain-safe-private": ("retain-safe-private",),
    "retain-uids": ("retain-uids",),
    "retain-device-identity": ("retain-device-identity",),
    "clean-graphics": ("clean-graphics",),
    "clean-descriptors": ("clean-descriptors",),
    # Why these: see docs/deidentification.md ("The teleradiology preset").
    "teleradiology": (
        "retain-patient-characteristics",
        "retain-device-identity",
        "clean-descriptors",
        "retain-long-modified-dates",
    ),
}

ACTION_NAMES = {
    "K": "keep", "X": "remove", "Z": "empty", "D": "dummy", "C": "clean", "U": "new UID",
    "R": "replace", "H": "hash", "S": "shift date",
}


def _action_name(rule: "Rule") -> str:
    """What ``profile show`` calls a rule's action: a date "cleaned" by Modified Dates is shifted."""
    if rule.action == "C" and rule.source == "retain-long-modified-dates":
        return ACTION_NAMES["S"]
    return ACTION_NAMES[rule.action]


def normalize_option(name: str) -> str:
    """``Retain_UIDs`` -> ``retain-uids``; ConfigError for an unknown option."""
    n = name.strip().lower().replace("_", "-").replace(" ", "-")
    n = OPTION_ALIASES.get(n, n)
    if n not in ALL_OPTIONS:
        raise ConfigError(
            f"unknown de-identification option {name!r}; known options: {', '.join(ALL_OPTIONS)}"
        )
    return n


@dataclass(frozen=True)
class Rule:
    """The resolved action for one attribute (or tag pattern)."""

    label: str  # keyword, or the tag as the table prints it
    pattern: TagPattern
    action: str  # one letter, see module docstring
    code: str  # the table's code for the chosen column, e.g. "X/Z/D"
    source: str  # "basic", an option name, or "profile:FILE"
    value: str | None = None  # constant for R


@lru_cache(maxsize=8)
def _compound_choices(path: Path, mtime: float) -> dict[str, str]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return {k: str(v).upper() for k, v in data.get("choose", {}).items()}


def compound_choices() -> dict[str, str]:
    """Keyword -> chosen letter for compound actions (config/deid/compound.toml)."""
    path = config_dir() / "deid" / "compound.toml"
    if not path.exists():
        return {}
    return _compound_choices(path, path.stat().st_mtime)


def resolve_code(code: str, label: str, choices: dict[str, str]) -> str:
    """One letter for a table code: the first letter unless compound.toml picks a later one."""
    letters = [c.rstrip("*") for c in code.split("/")]
    chosen = choices.get(label)
    if chosen and chosen in letters:
        return chosen
    return letters[0]


_STRENGTH = {"X": 0, "Z": 1, "D": 2, "U": 2}
REQUIRED = {"1": "D", "1C": "D", "2": "Z", "2C": "Z"}  # Type -> the least an action may do


def typed_letter(rule: "Rule", attr_type: str | None) -> str:
    """The rule's letter where the attribute has Type ``attr_type`` (None: the IOD does not list it).

    PS3.15 E.1.1: a compound code takes the least disruptive of its letters that
    keeps the object valid for its IOD (X/Z/D: X for Type 3, Z for Type 2, D for
    Type 1). The letter chosen without Types (the first, or ``compound.toml``'s)
    stands when it already does enough. A single Z on a Type 1 attribute becomes
    a dummy (Table E.1-1a allows Z to be a dummy value), and a single X on a Type
    1 or 2 attribute (never a conditional one) becomes D or Z: the IOD needs the
    attribute, and a dummy or empty value identifies no one. An institution's own
    rules (``profile:`` sources) are taken as written.
    """
    letter = rule.action
    need = REQUIRED.get(attr_type or "")
    if need is None or letter not in ("X", "Z") or rule.source.startswith("profile:"):
        return letter
    if _STRENGTH[letter] >= _STRENGTH[need]:
        return letter
    letters = [c.rstrip("*") for c in rule.code.split("/")]
    if len(letters) > 1:
        enough = [c for c in letters if _STRENGTH.get(c, -1) >= _STRENGTH[need]]
        if enough:
            return enough[0]  # X/Z/U*, Type 1: U keeps the references, remapped
        return "D" if need == "D" else letter  # X/Z on a Type 1: Z may be a dummy
    if letter == "Z":
        return "D" if need == "D" else letter
    return need if attr_type in ("1", "2") else letter


def _row_action(row: Row, options: tuple[str, ...], choices: dict[str, str]) -> tuple[str, str, str]:
    """(letter, table code, source) for a row under the given options.

    Option actions replace the Basic action. Where two chosen options give a row
    different actions (only Retain Device Identity ``K`` against Modified Dates
    ``C`` on calibration dates), cleaning wins: it honours both requests.
    """
    picked = [(o, row.options[o]) for o in options if o in row.options]
    if picked:
        cleaning = [p for p in picked if p[1] == "C"]
        opt, code = (cleaning or picked)[0]
        return resolve_code(code, row.label, choices), code, opt
    return resolve_code(row.basic, row.label, choices), row.basic, "basic"


@dataclass
class Profile:
    """Resolved actions for every Table E.1-1 row under a set of options."""

    name: str
    options: tuple[str, ...]
    exact: dict[int, Rule]
    masked: list[Rule]
    private: Rule
    source_file: str | None = None
    settings: dict = field(default_factory=dict)

    def rule_for(self, tag: int) -> Rule | None:
        """The rule for a (non-private) tag, or None when the table does not list it."""
        r = self.exact.get(tag)
        if r is not None:
            return r
        for m in self.masked:
            if m.pattern.matches(tag):
                return m
        return None

    def has(self, option: str) -> bool:
        return option in self.options

    @property
    def date_policy(self) -> str:
        """``shift`` (Modified Dates), ``keep`` (Full Dates) or ``remove`` (Basic)."""
        if self.has("retain-long-modified-dates"):
            return "shift"
        if self.has("retain-long-full-dates"):
            return "keep"
        return "remove"

    def codes(self) -> list[dict]:
        """CID 7050 codes of the Basic Profile and the options (not per-file pixel cleaning)."""
        return [standard.code_for(None)] + [
            standard.code_for(o) for o in self.options if o not in PIXEL_OPTIONS
        ]

    def describe(self) -> dict:
        """What the manifest and deid-report record about this profile."""
        return {
            "profile": self.name,
            "options": list(self.options),
            "codes": self.codes(),
            "standard": f"DICOM PS3.15 Annex E, edition {standard.EDITION}",
            "edition": standard.EDITION,
            "custom_rules": sorted(
                r.label for r in [*self.exact.values(), *self.masked] if r.source.startswith("profile:")
            ),
            "source_file": self.source_file,
        }

    def effective_actions(self) -> list[dict]:
        """Every attribute's effective action, in tag order (for ``profile show``)."""
        rules = sorted([*self.exact.values(), *self.masked], key=lambda r: (r.pattern.value, r.label))
        out = [
            {"tag": r.pattern.text, "attribute": r.label, "action": _action_name(r),
             "code": r.code, "source": r.source, **({"value": r.value} if r.value is not None else {})}
            for r in rules
        ]
        out.append({"tag": self.private.pattern.text, "attribute": self.private.label,
                    "action": ACTION_NAMES[self.private.action], "code": self.private.code,
                    "source": self.private.source})
        return out


def build_profile(name: str, options: list[str] | tuple[str, ...] = ()) -> Profile:
    """The Basic Profile plus ``options`` (names normalised, order canonical)."""
    opts = {normalize_option(o) for o in options}
    if {"retain-long-full-dates", "retain-long-modified-dates"} <= opts:
        raise ConfigError(
            "the Full Dates and Modified Dates options cannot be used together; choose one"
        )
    ordered = tuple(o for o in ALL_OPTIONS if o in opts)
    choices = compound_choices()
    rows, private_row = standard.table_rows()
    exact: dict[int, Rule] = {}
    masked: list[Rule] = []
    for row in rows:
        letter, code, source = _row_action(row, ordered, choices)
        rule = Rule(row.label, row.pattern, letter, code, source)
        if row.pattern.exact:
            exact[row.pattern.value] = rule
        else:
            masked.append(rule)
    letter, code, source = _row_action(private_row, ordered, choices)
    private = Rule("private attributes", private_row.pattern, letter, code, source)
    return Profile(name=name, options=ordered, exact=exact, masked=masked, private=private)


@lru_cache(maxsize=4096)
def keyword_or_tag(tag: int) -> str:
    """A label for a tag in reports: its keyword, or ``(gggg,eeee)``."""
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
