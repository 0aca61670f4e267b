"""Per-submission overrides of a few key fields, applied after the profile, and the submission note.

As 3DICOM offers before upload: a patient name alias, the study description,
the series description. They are data from outside: values are checked here
(no control characters, the VR's form and length) and the leak verifier
searches the written file for the source's identifying values like any other
(``--set PatientName="DOE^JOHN"`` fails the file). A submission's free-text
note stays in local state; only its clinical words go into the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

import re
from functools import lru_cache

from pipeline.deid import vrforms
from pipeline.exceptions import ConfigError

#: Keyword -> maximum length (the VR's limit).
ALLOWED: dict[str, int] = {
    "PatientName": 64,
    "StudyDescription": 64,
    "SeriesDescription": 64,
    "BodyPartExamined": 16,
}
_VRS = {"PatientName": "PN", "StudyDescription": "LO", "SeriesDescription": "LO", "BodyPartExamined": "CS"}


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
            why = vrforms.text_problem(_VRS[k], v)
            if why is not None:
                raise ConfigError(f"override {k}: not a valid {_VRS[k]} value ({why})")
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


@lru_cache(maxsize=1)
def _vocabulary():
    from pipeline.deid.cleaning import vocabulary_paths
    from pipeline.deid.vocabulary import Vocabulary
    from pipeline.settings import config_dir

    return Vocabulary.from_files(vocabulary_paths(config_dir()))


_BATCH_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def clean_note(note: str) -> str:
    """The words of a submission note that may leave: clinical vocabulary only (as Clean Descriptors).

    Batch IDs (random UUIDs Telerad made, as in the listener's follow-up notes)
    identify no one and are kept too.
    """
    vocabulary = _vocabulary()
    kept = []
    for word in (note or "").split():
        core = word.strip(".,;:()[]")
        kept.append(core if _BATCH_ID.match(core) else vocabulary.clean(word))
    return " ".join(k for k in kept if k)
