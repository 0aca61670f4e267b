"""Per-submission overrides of a few key fields, applied after the profile.

As 3DICOM offers before upload: a patient name alias, the study description,
the series description. Values are checked here (no control characters, the
VR's length) and the leak verifier checks the written file like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.exceptions import ConfigError

#: Keyword -> maximum length (the VR's limit).
ALLOWED: dict[str, int] = {
    "PatientName": 64,
    "StudyDescription": 64,
    "SeriesDescription": 64,
    "BodyPartExamined": 16,
}


@dataclass(frozen=True)
class Overrides:
    """Validated keyword -> value pairs, applied to the top-level dataset."""

    values: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, raw: dict) -> "Overrides":
        out = []
        for k, v in (raw or {}).items():
            if k not in ALLOWED:
                raise ConfigError(
                    f"override {k!r} is not allowed; allowed: {', '.join(ALLOWED)}"
                )
            v = str(v)
            if len(v) > ALLOWED[k] or any(ord(c) < 32 or c == "\\" for c in v):
                raise ConfigError(
                    f"override {k}: at most {ALLOWED[k]} characters, no control characters or backslash"
                )
            out.append((k, v))
        return cls(tuple(out))

    def __bool__(self) -> bool:
        return bool(self.values)

    def as_dict(self) -> dict[str, str]:
        return dict(self.values)

    def describe(self) -> str:
        return ("per-submission overrides: " + ", ".join(k for k, _ in self.values)
                if self.values else "no per-submission overrides")

    def apply(self, ctx, ds) -> None:
        for k, v in self.values:
            setattr(ds, k, v)
            ctx.counts[k]["overridden"] += 1
