"""Whole-file guard before the walk: burned-in annotation policy and Clean Pixel Data.

Pixels are never decoded unless a Clean Pixel Data rule applies to the file.
A file that may show text in its pixels (BurnedInAnnotation = YES, or a SOP
class or modality that commonly burns text in, with the flag absent) is, by
the policy in ``config/deid/pixels.toml``, quarantined, failed or let through
with a warning; with the Clean Pixel Data option a matching rule masks the
rectangles instead, and only then is BurnedInAnnotation set to NO.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from pipeline.dicomraw import value_of
from pipeline.exceptions import ConfigError, DeidentificationError, RefusedFileError

POLICIES = ("quarantine", "warn", "fail")


@dataclass(frozen=True)
class PixelRule:
    """Rectangles to blank for images that match modality / manufacturer / model / size."""

    name: str
    rectangles: tuple[tuple[int, int, int, int], ...]
    modality: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    rows: int | None = None
    columns: int | None = None

    def matches(self, ds: Dataset) -> bool:
        def s(kw: str) -> str:
            return str(value_of(ds, kw, "") or "").strip().upper()

        if self.modality and s("Modality") != self.modality.upper():
            return False
        if self.manufacturer and self.manufacturer.upper() not in s("Manufacturer"):
            return False
        if self.model and self.model.upper() not in s("ManufacturerModelName"):
            return False
        if self.rows is not None and value_of(ds, "Rows") != self.rows:
            return False
        if self.columns is not None and value_of(ds, "Columns") != self.columns:
            return False
        return True


def _rule_from(d: dict, where: str) -> PixelRule:
    try:
        rects = tuple(tuple(int(v) for v in r) for r in d["rectangles"])
        if not rects or any(len(r) != 4 or r[2] <= 0 or r[3] <= 0 or min(r) < 0 for r in rects):
            raise ValueError("each rectangle is [x, y, width, height] with positive size")
        return PixelRule(
            name=str(d.get("name", "unnamed")), rectangles=rects, modality=d.get("modality"),
            manufacturer=d.get("manufacturer"), model=d.get("model"),
            rows=int(d["rows"]) if "rows" in d else None,
            columns=int(d["columns"]) if "columns" in d else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: invalid [[rule]] {d.get('name', '')!r}: {exc}") from None


class BurnedInGuard:
    """Decides, before the walk, whether a file's pixels may leave; cleans them when a rule says how."""

    def __init__(self, policy: str, sop_classes: tuple[str, ...], modalities: frozenset[str],
                 rules: tuple[PixelRule, ...], clean: bool) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"burned-in policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        self.policy = policy
        self.sop_classes = sop_classes
        self.modalities = modalities
        self.rules = rules
        self.clean = clean
        self.warnings = 0

    @classmethod
    def from_config(cls, root: Path, profile) -> "BurnedInGuard":
        path = root / "deid" / "pixels.toml"
        data = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        policy = str(profile.settings.get("burned_in_policy") or data.get("policy", "quarantine"))
        rules = tuple(_rule_from(r, str(path)) for r in data.get("rule", []))
        return cls(policy, tuple(data.get("suspect_sop_classes", [])),
                   frozenset(m.upper() for m in data.get("suspect_modalities", [])), rules,
                   profile.has("clean-pixel-data"))

    def describe(self) -> str:
        return (f"burned-in annotation: {self.policy}"
                + (f"; Clean Pixel Data with {len(self.rules)} rules" if self.clean else ""))

    # --- judging ---------------------------------------------------------------------
    def suspect(self, ds: Dataset) -> str | None:
        """Why this file may show text in its pixels, or None."""
        present = ds._dict  # looked up by tag: Dataset's `in` parses keywords and tags each time
        if not any(t in present for t in (0x7FE00010, 0x7FE00008, 0x7FE00009)):
            has_pixels = 0x00280010 in present and 0x00280011 in present  # Rows, Columns
        else:
            has_pixels = True
        flag = str(value_of(ds, "BurnedInAnnotation", "") or "").strip().upper()
        if flag == "YES":
            return "BurnedInAnnotation is YES"
        if flag == "NO" or not has_pixels:
            return None
        sop_class = str(value_of(ds, "SOPClassUID", "") or "")
        if any(sop_class == p or sop_class.startswith(p + ".") for p in self.sop_classes):
            return "its SOP class commonly carries burned-in text and BurnedInAnnotation is absent"
        if str(value_of(ds, "Modality", "") or "").strip().upper() in self.modalities:
            return "its modality commonly carries burned-in text and BurnedInAnnotation is absent"
        return None

    def matching_rule(self, ds: Dataset) -> PixelRule | None:
        if not self.clean:
            return None
        return next((r for r in self.rules if r.matches(ds)), None)

    def check(self, ds: Dataset) -> None:
        """Apply the policy: raise RefusedFileError (quarantine) or DeidentificationError (fail)."""
        reason = self.suspect(ds)
        if reason is None or self.matching_rule(ds) is not None:
            return
        if self.policy == "warn":
            self.warnings += 1
            return
        hint = (" and no Clean Pixel Data rule matches it" if self.clean
                else "; enable Clean Pixel Data with a rule in config/deid/pixels.toml, or review it by hand")
        msg = f"possible burned-in annotation: {reason}{hint}"
        if self.policy == "fail":
            raise DeidentificationError(msg)
        raise RefusedFileError(msg)

    def wants_cleaning(self, ds: Dataset) -> bool:
        return self.suspect(ds) is not None and self.matching_rule(ds) is not None

    # --- cleaning --------------------------------------------------------------------
    def clean_pixels(self, source) -> bool:
        """Blank the matching rule's rectangles in every frame; write pixels back uncompressed."""
        ds = source.dataset
        rule = self.matching_rule(ds)
        if rule is None:
            return False
        try:
            if source.transfer_syntax.is_compressed:
                ds.decompress(generate_instance_uid=False)
                source.transfer_syntax = ds.file_meta.TransferSyntaxUID
            arr = ds.pixel_array.copy()
        except Exception as exc:
            raise RefusedFileError(
                "possible burned-in annotation, and its pixels cannot be decoded to clean them "
                f"({type(exc).__name__}; install pylibjpeg or python-gdcm for compressed images)"
            ) from None
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        multi_sample = int(ds.get("SamplesPerPixel", 1) or 1) > 1
        for x, y, w, h in rule.rectangles:
            if multi_sample:
                idx = (..., slice(y, y + h), slice(x, x + w), slice(None))
            else:
                idx = (..., slice(y, y + h), slice(x, x + w))
            arr[idx] = 0
        del frames
        if multi_sample:
            ds.PlanarConfiguration = 0
        ds.PixelData = arr.tobytes()
        ds.BurnedInAnnotation = "NO"
        source.pixel_span = None
        return True
