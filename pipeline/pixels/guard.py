"""Whole-file guard before the walk: burned-in text, found in the pixels and masked.

A *candidate* is a file that may show text in its pixels: BurnedInAnnotation
YES, or the flag absent on a SOP class or modality that commonly burns text in
(ultrasound, secondary capture, XA/RF, screen captures), or a SOP class the
site lists. Everything else passes without its pixels being decoded, so CT and
MR cost what they always did.

A candidate's frames are decoded and read by OCR (``pipeline.pixels.inspect``). What
happens then is the policy of ``config/deid/pixels.toml`` (or the profile's
``burned_in_policy``; the Clean Pixel Data option means ``mask``):

- no text: the file passes unchanged, byte for byte, whatever the policy;
- ``mask``: the text's boxes (and a matching rule's rectangles, with Clean
  Pixel Data) are masked, OCR reads the masked frames again, and only when it
  finds nothing is BurnedInAnnotation set to NO;
- ``quarantine`` refuses the file, ``fail`` fails the batch, ``warn`` lets it
  through unchanged and the outcome carries the warning for every report;
- doubt (low-confidence words, pixels that cannot be decoded, text left after
  masking, or the flag YES with nothing found) holds the file in the review
  queue (``telerad review``); under ``warn`` it is let through with a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NoReturn

from pydicom.dataset import Dataset

from pipeline import dicomio
from pipeline.dicomraw import value_of
from pipeline.exceptions import ConfigError, DeidentificationError, RefusedFileError
from pipeline.pixels.inspect import inspect_candidate
from pipeline.pixels.outcome import PixelOutcome
from pipeline.pixels.rules import POLICIES, PixelConfig, PixelRule

__all__ = ["POLICIES", "BurnedInGuard", "PixelOutcome", "PixelRule"]


class BurnedInGuard:
    """Decides, before the walk, whether a file's pixels may leave, and masks text where the policy says so."""

    def __init__(self, config: PixelConfig, policy: str, clean: bool, review_dir: Path | None = None) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"burned-in policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        self.config = config
        self.clean = clean
        self.policy = "mask" if clean else policy
        self.review_dir = review_dir

    @classmethod
    def from_config(cls, root: Path, profile, review_dir: Path | None = None) -> "BurnedInGuard":
        config = PixelConfig.load(root / "deid" / "pixels.toml")
        policy = str(profile.settings.get("burned_in_policy") or config.policy)
        return cls(config, policy, profile.has("clean-pixel-data"), review_dir)

    @property
    def rules(self) -> tuple[PixelRule, ...]:
        return self.config.rules

    def describe(self) -> str:
        text = f"burned-in text: OCR on candidates, policy {self.policy}"
        return text + (f"; Clean Pixel Data with {len(self.rules)} region rules" if self.clean else "")

    # --- judging ---------------------------------------------------------------------
    def suspect(self, ds: Dataset) -> str | None:
        """Why this file may show text in its pixels, or None."""
        present = ds._dict  # looked up by tag: Dataset's `in` parses keywords and tags each time
        if not any(t in present for t in dicomio.PIXEL_TAGS):
            has_pixels = 0x00280010 in present and 0x00280011 in present  # Rows, Columns
        else:
            has_pixels = True
        if not has_pixels:
            return None
        flag = str(value_of(ds, "BurnedInAnnotation", "") or "").strip().upper()
        if flag == "YES":
            return "BurnedInAnnotation is YES"
        sop_class = str(value_of(ds, "SOPClassUID", "") or "")

        def listed(prefixes: tuple[str, ...]) -> bool:
            return any(sop_class == p or sop_class.startswith(p + ".") for p in prefixes)

        if listed(self.config.site_sop_classes):
            return "the site lists its SOP class for examination"
        if flag == "NO":
            return None
        if listed(self.config.suspect_sop_classes):
            return "its SOP class commonly carries burned-in text and BurnedInAnnotation is absent"
        if str(value_of(ds, "Modality", "") or "").strip().upper() in self.config.suspect_modalities:
            return "its modality commonly carries burned-in text and BurnedInAnnotation is absent"
        return None

    def matching_rules(self, ds: Dataset) -> tuple[PixelRule, ...]:
        """The region rules to apply before OCR: only with the Clean Pixel Data option."""
        return self.config.matching_rules(ds) if self.clean else ()

    # --- the one call the engine makes -------------------------------------------------
    def inspect(self, path: Path, source: dicomio.SourceFile, *,
                inflate_limits: dicomio.InflateLimits = dicomio.DEFAULT_INFLATE,
                before_change: Callable[[dicomio.SourceFile], None] | None = None,
                captured: Iterable[str] = (),
                ) -> tuple[dicomio.SourceFile, PixelOutcome | None]:
        """Examine a candidate's pixels by the policy; returns the source to walk and what was done.

        Not a candidate: ``(source, None)``, pixels untouched. Raises
        RefusedFileError (quarantine, review) or DeidentificationError (fail).
        ``before_change(full)`` sees the file read with its pixels just before
        they are masked (the completeness gate's snapshot); ``captured`` are the
        identifying values the engine captured, certain hits when OCR reads them.
        """
        reason = self.suspect(source.dataset)
        if reason is None:
            return source, None
        return inspect_candidate(self, Path(path), source, reason, inflate_limits, before_change, captured)

    # --- what the policy says about a finding -----------------------------------------
    def refuse(self, what: str) -> NoReturn:
        """Text was found and the policy is not ``mask``: refuse the file or fail the batch."""
        msg = f"possible burned-in annotation: {what}"
        if self.policy == "fail":
            raise DeidentificationError(msg)
        raise RefusedFileError(msg)
