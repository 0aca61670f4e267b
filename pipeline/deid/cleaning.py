"""The ``C`` (clean) action: date shifts, descriptor vocabularies, safe private elements.

What "clean" means depends on the option that asked for it and on the VR:
Modified Dates shifts DA and DT values by the patient's keyed number of days;
Clean Descriptors (and the cleaning parts of other options) keep only words of
the clinical vocabulary in ``config/deid/``; sequences are kept and their items
de-identified like everything else; AE titles become keyed tokens; binary
values that cannot be inspected are removed.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from pipeline.deid import rawelem, standard, values
from pipeline.deid.profile import keyword_or_tag
from pipeline.deid.vocabulary import Vocabulary

DATE_OPTIONS = {"retain-long-modified-dates", "retain-long-full-dates"}
_TEXTISH = {"LO", "SH", "ST", "LT", "UT", "UC", "CS", "PN", "UR"}
_NUMERIC = {"DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV", "AT", "OF", "OD"}
_DT_RE = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(.*)$")


def shift_da(value: str, days: int) -> str:
    """Shift one DA value (``YYYYMMDD``, a ``-`` range, or old ``YYYY.MM.DD``); '' if unreadable."""
    v = value.strip()
    if "-" in v:
        return "-".join(shift_da(p, days) if p else "" for p in v.split("-"))
    v = v.replace(".", "")
    if len(v) != 8 or not v.isdigit():
        return ""
    try:
        d = dt.date(int(v[:4]), int(v[4:6]), int(v[6:8])) + dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return ""
    return f"{d.year:04d}{d.month:02d}{d.day:02d}"


def shift_dt(value: str, days: int) -> str:
    """Shift the date part of one DT value, keeping its precision, time and offset."""
    m = _DT_RE.match(value.strip())
    if not m:
        return ""
    y, mo, d, rest = m.group(1), m.group(2), m.group(3), m.group(4)
    try:
        base = dt.date(int(y), int(mo or 1), int(d or 1)) + dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return ""
    out = f"{base.year:04d}"
    if mo:
        out += f"{base.month:02d}"
    if d:
        out += f"{base.day:02d}" + rest
    return out


def _map_values(value, fn):
    if isinstance(value, (list, tuple, MultiValue)):
        return [fn(str(v)) for v in value]
    return fn(str(value))


class Cleaners:
    """The clean actions of one Deidentifier; holds the vocabulary, no per-patient state."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary

    # --- dispatch ------------------------------------------------------------------
    def clean(self, ctx, ds: Dataset, tag: int, vr: str, rule) -> None:
        if vr == "SQ":
            rawelem.walk_sequence(ctx, ds, tag)
            ctx.count(tag, "cleaned")
            return
        if rule.source in DATE_OPTIONS:
            self.shift_dates(ctx, ds, tag, vr)
            return
        if rawelem.is_empty(ds, tag, vr):
            ctx.count(tag, "kept empty")
            return
        if vr == "AE":
            old = rawelem.text_value(ds, tag, vr)
            rawelem.set_value(ds, tag, vr, "AE" + ctx.pseudonyms.text("ae", str(old).strip(), 14))
            ctx.count(tag, "replaced")
        elif vr in _TEXTISH:
            self.clean_text(ctx, ds, tag, vr)
        elif vr in ("DA", "DT"):
            self.shift_dates(ctx, ds, tag, vr)
        elif rule.source == "clean-graphics" and (vr in _NUMERIC or vr in ("OB", "OW", "OB or OW")):
            ctx.count(tag, "kept")  # overlay bitmaps and curve samples: graphics, not text
        elif vr in _NUMERIC or vr == "TM":
            rawelem.check_kept(ds, tag, vr, rule.label)  # kept: so it must be what its VR says
            ctx.count(tag, "kept")
        else:
            del ds[tag]  # binary or unknown content cannot be cleaned, only removed
            ctx.count(tag, "removed")

    def clean_text(self, ctx, ds: Dataset, tag: int, vr: str, *, required: bool | None = None) -> None:
        """Keep only the clinical words of a text value (each value of a multi-valued one).

        Where the IOD requires a value (Type 1 or 1C where this dataset stands;
        ``required`` says so, else ``ctx.node`` is asked), a value with no clinical
        word left becomes a dummy instead of empty.
        """
        if rawelem.is_empty(ds, tag, vr):
            ctx.count(tag, "kept empty")
            return
        old = rawelem.text_value(ds, tag, vr)
        new = _map_values(old, self.vocabulary.clean)
        if vr == "CS":  # a code string holds only capitals, digits, space and underscore
            new = _map_values(new, lambda v: re.sub(r"[^A-Z0-9_ ]", "", v.upper())[:16].strip())
        if required is None:
            required = ctx.node is not None and ctx.node.type_of(tag) in ("1", "1C")
        if required and (vr == "PN" or rawelem.is_empty_value(new)
                         or (isinstance(new, list) and not any(new))):
            rawelem.set_value(ds, tag, vr, values.dummy_value(vr, int(tag)))
            ctx.count(tag, "replaced")
            return
        if new != old:  # an unchanged value stays as it was read
            rawelem.set_value(ds, tag, vr, new)
        ctx.count(tag, "cleaned")

    # --- dates -----------------------------------------------------------------------
    def shift_dates(self, ctx, ds: Dataset, tag: int, vr: str) -> None:
        """Modified Dates: DA and DT shifted by the patient's days; times and offsets kept."""
        if rawelem.is_empty(ds, tag, vr):
            ctx.count(tag, "kept empty")
            return
        if ctx.profile.date_policy == "keep" or vr in ("TM", "SH", "CS") or vr in _NUMERIC:
            rawelem.check_kept(ds, tag, vr, keyword_or_tag(tag))  # kept: valid for its VR or the file fails
            ctx.count(tag, "kept")  # a time of day or offset names no day
            return
        days = ctx.date_shift
        if vr == "DA":
            old = rawelem.text_value(ds, tag, vr)
            rawelem.set_value(ds, tag, vr, _map_values(old, lambda v: shift_da(v, days)))
            ctx.count(tag, "shifted")
        elif vr == "DT":
            old = rawelem.text_value(ds, tag, vr)
            rawelem.set_value(ds, tag, vr, _map_values(old, lambda v: shift_dt(v, days)))
            ctx.count(tag, "shifted")
        else:
            del ds[tag]  # e.g. binary timestamps: cannot be shifted, so removed
            ctx.count(tag, "removed")

    # --- Retain Safe Private ---------------------------------------------------------
    @staticmethod
    def keep_private(ds: Dataset, tag: BaseTag) -> bool:
        """True when Table E.3.10-1 lists this element (by creator and element byte)."""
        group, elem = tag.group, tag.element
        if 0x0010 <= elem <= 0x00FF:  # a private creator: kept while its block has safe elements
            creator = str(ds[tag].value or "").strip().upper()
            return any(k[0] == creator and k[1] == group for k in standard.safe_private())
        if elem < 0x1000:
            return False
        creator_tag = BaseTag((group << 16) | (elem >> 8))
        if creator_tag not in ds:
            return False
        creator = str(ds[creator_tag].value or "").strip().upper()
        return (creator, group, elem & 0xFF) in standard.safe_private()


def drop_empty_private_blocks(ds: Dataset) -> list[int]:
    """Remove private creators whose blocks no longer hold any element; returns their tags."""
    creators = [t for t in ds.keys() if t.group & 1 and 0x0010 <= t.element <= 0x00FF]
    dropped = []
    for ct in creators:
        block = ct.element
        used = any(t.group == ct.group and t.element >> 8 == block for t in ds.keys() if t.element >= 0x1000)
        if not used:
            del ds[ct]
            dropped.append(int(ct))
    return dropped


def vocabulary_paths(config_root: Path) -> list[Path]:
    """The clinical word list and every institution extension next to it."""
    main = config_root / "deid" / "clinical-words.txt"
    extra = sorted((config_root / "deid" / "clinical-words.d").glob("*.txt"))
    return [p for p in [main, *extra] if p.exists()]
