"""What a study run is asked to do: one value every door fills in, so no door wires the engine itself.

A recipe names the profile, options, organisation and overrides (what the
engine needs), how the leak verifier is applied, and the few per-door
choices: a SHA-256 for a manifest, a plan instead of a write, whether the
caller needs every result field (none of these changes a written byte), and
whether images OCR is unsure about wait in the site's review queue (the batch
and anonymize, whose reviewed decisions then apply) or are refused with the
reason (the gateway, as before). It is frozen and
hashable: a gateway caches one engine per recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from pipeline.run.source import submitted_name
from pipeline.settings import Settings
from pipeline.state import BatchRecord


class Verify(str, Enum):
    """Where the leak verifier looks; it always searches for the sources' captured values."""

    GATE = "gate"  # each encoded header, with its own source's values, before a byte of it is written
    STAGED = "staged"  # the placed study as a whole, with every source's values, before anything leaves
    OFF = "off"  # `telerad anonymize --no-verify` only


@dataclass(frozen=True)
class Recipe:
    """How one study is de-identified; build it with ``Recipe.of`` (settings fill what is not given)."""

    profile: str
    options: tuple[str, ...]
    organization: str  # upper case
    overrides: tuple[tuple[str, str], ...] = ()  # Keyword -> value, in the order given
    verify: Verify = Verify.GATE
    hold_for_review: bool = True  # doubtful burned-in images wait in the site's review queue (else: refused)
    digest: bool = False  # a SHA-256 per output (a manifest lists it)
    plan: bool = False  # a dry run: de-identify into scratch, keep the action counts, delete the output
    full_results: bool = False  # keep captured values and action counts in results (report, mapping, verifier)
    submitted_as: str | None = None  # the study folder's name as submitted; None: each file's own name

    @classmethod
    def of(cls, settings: Settings, *, profile: str | None = None, options: list[str] | tuple[str, ...] | None = None,
           organization: str | None = None, overrides: Mapping[str, str] | None = None,
           verify: Verify = Verify.GATE, hold_for_review: bool = True, digest: bool = False, plan: bool = False,
           full_results: bool = False, submitted_as: str | None = None) -> Recipe:
        """A recipe with the site's profile, options and organisation where none is given."""
        return cls(
            profile=profile or settings.profile,
            options=tuple(options if options is not None else settings.options),
            organization=(organization or settings.organization).upper(),
            overrides=tuple((overrides or {}).items()),
            verify=verify, hold_for_review=hold_for_review, digest=digest, plan=plan,
            full_results=full_results, submitted_as=submitted_as,
        )

    @classmethod
    def for_batch(cls, settings: Settings, record: BatchRecord) -> Recipe:
        """A batch's recipe (its step and its fan-out chunks alike): digests, full results, verified staged."""
        return cls.of(settings, profile=record.profile, options=record.options, organization=record.organization,
                      overrides=record.overrides, verify=Verify.STAGED, hold_for_review=True, digest=True,
                      full_results=True, submitted_as=submitted_name(record.source))

    @property
    def override_map(self) -> dict[str, str]:
        return dict(self.overrides)
