"""One DICOM file through the study runner, for anonymize-stream and review.

The same runner as a batch and ``telerad anonymize`` (``pipeline.run``: the
configured profile, options and keyed pseudonyms, so the same study gets the
same cloud study ID here as in a batch; the site's deflate limits), and the
same gate as ``telerad anonymize``: the verifier checks each encoded header,
with that file's own original identifiers and the values captured from it
(names, birth date, addresses, the submitted name), before a byte of it is
written. One runner per thread and organisation and overrides, built once
(building one reads the profile and vocabularies).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

from pipeline.deid import DeidentifiedFile
from pipeline.exceptions import TeleradError
from pipeline.run import Recipe, StudyRunner, Unverified, Verify
from pipeline.settings import Settings
from pipeline.study import Outcome

__all__ = ["OneFile", "Unverified"]


class OneFile:
    """De-identifies single files with the site's settings; safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local = threading.local()

    def runner(self, organization: str | None = None, overrides: dict[str, str] | None = None) -> StudyRunner:
        """This thread's runner for the organisation and overrides (the site's profile and options)."""
        recipe = Recipe.of(self.settings, organization=organization, overrides=overrides,
                           verify=Verify.GATE, hold_for_review=False)
        cache = self._local.__dict__.setdefault("runners", {})
        runner = cache.get(recipe)
        if runner is None:
            if len(cache) > 16:
                cache.clear()
            runner = cache[recipe] = StudyRunner(self.settings, recipe)
        return runner

    def run(self, src: Path, out_root: Path, *, organization: str | None = None,
            overrides: dict[str, str] | None = None) -> DeidentifiedFile:
        """De-identify ``src`` under ``out_root``; raises the engine's errors or ``Unverified``."""
        runner = self.runner(organization, overrides)
        out_root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".incoming-", dir=out_root.parent))
        try:
            done = runner.one(src, out_root, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if done.outcome is not Outcome.WRITTEN or done.result is None:
            raise done.error if done.error is not None else TeleradError(done.reason)
        return done.result
