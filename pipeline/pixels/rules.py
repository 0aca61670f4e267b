"""``config/deid/pixels.toml`` as typed data: policy, candidates, OCR settings, region rules.

The rules are data a site edits, not code: each names where its rectangles
come from (``source``), in the manner of CTP's DicomPixelAnonymizer script
(manufacturer / model / rows x columns -> rectangles).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from pipeline.dicomraw import value_of
from pipeline.exceptions import ConfigError

POLICIES = ("mask", "quarantine", "warn", "fail")


@dataclass(frozen=True)
class PixelRule:
    """Rectangles to mask for images that match modality / manufacturer / model / size."""

    name: str
    rectangles: tuple[tuple[int, int, int, int], ...]
    source: str = ""
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


@dataclass(frozen=True)
class OcrSettings:
    """How Tesseract is asked, and how its confidences are judged (see pixels.toml [ocr])."""

    lang: str = "eng"
    psm: int = 11
    mask_confidence: float = 60.0
    review_confidence: float = 30.0
    min_characters: int = 3
    margin: int = 4
    upscale_below: int = 400
    min_size: int = 48
    max_decoded_mb: int = 1024

    def __post_init__(self) -> None:
        if not 0 <= self.review_confidence <= self.mask_confidence <= 100:
            raise ValueError("need 0 <= review_confidence <= mask_confidence <= 100")
        if self.margin < 0 or self.min_characters < 1 or self.min_size < 1 or self.max_decoded_mb < 1:
            raise ValueError("margin >= 0, min_characters >= 1, min_size >= 1 and max_decoded_mb >= 1")


@dataclass(frozen=True)
class PixelConfig:
    """Everything pixels.toml says."""

    policy: str
    suspect_sop_classes: tuple[str, ...]
    suspect_modalities: frozenset[str]
    site_sop_classes: tuple[str, ...]
    ocr: OcrSettings
    rules: tuple[PixelRule, ...]

    @classmethod
    def load(cls, path: Path) -> "PixelConfig":
        data = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: dict, where: str = "pixels.toml") -> "PixelConfig":
        policy = str(data.get("policy", "mask"))
        if policy not in POLICIES:
            raise ConfigError(f"{where}: policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        try:
            ocr = OcrSettings(**data.get("ocr", {}))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: invalid [ocr]: {exc}") from None
        return cls(
            policy=policy,
            suspect_sop_classes=tuple(data.get("suspect_sop_classes", [])),
            suspect_modalities=frozenset(m.upper() for m in data.get("suspect_modalities", [])),
            site_sop_classes=tuple(data.get("site_sop_classes", [])),
            ocr=ocr,
            rules=tuple(_rule_from(r, where) for r in data.get("rule", [])),
        )

    def matching_rules(self, ds: Dataset) -> tuple[PixelRule, ...]:
        """Every rule that matches (a generic banner and a model's own clock may both apply)."""
        return tuple(r for r in self.rules if r.matches(ds))


def _rule_from(d: dict, where: str) -> PixelRule:
    try:
        rects = tuple(tuple(int(v) for v in r) for r in d["rectangles"])
        if not rects or any(len(r) != 4 or r[2] <= 0 or r[3] <= 0 or min(r) < 0 for r in rects):
            raise ValueError("each rectangle is [x, y, width, height] with positive size")
        return PixelRule(
            name=str(d.get("name", "unnamed")), rectangles=rects, source=str(d.get("source", "")),
            modality=d.get("modality"), manufacturer=d.get("manufacturer"), model=d.get("model"),
            rows=int(d["rows"]) if "rows" in d else None,
            columns=int(d["columns"]) if "columns" in d else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: invalid [[rule]] {d.get('name', '')!r}: {exc}") from None
