"""One DICOM file through the pipeline's engine and leak verifier, for anonymize-stream and review.

The same ``Deidentifier`` as a batch and ``telerad anonymize`` (the configured
profile, options and keyed pseudonyms, so the same study gets the same cloud
study ID here as in a batch), and the same gate as ``telerad anonymize``: the
verifier checks each encoded header, with that file's own original
identifiers, before a byte of it is written. One engine per thread and
organisation and overrides, built once (building one reads the profile and vocabularies).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pipeline.deid import DeidentifiedFile, Deidentifier, OriginalIds, Verifier, load_profile
from pipeline.exceptions import VerificationError
from pipeline.pseudonyms import Pseudonyms
from pipeline.settings import Settings


class Unverified(VerificationError):
    """The verifier's findings for a header that was therefore never written."""

    def __init__(self, findings: list[Any]) -> None:
        self.findings = [str(f) for f in findings]
        super().__init__(f"verification: {len(findings)} finding(s), first: {findings[0]}")


class OneFile:
    """De-identifies single files with the site's settings; safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local = threading.local()

    def engine(self, organization: str | None = None, overrides: dict[str, str] | None = None) -> Deidentifier:
        org = (organization or self.settings.organization).upper()
        key = (org, tuple(sorted((overrides or {}).items())))
        cache = self._local.__dict__.setdefault("engines", {})
        engine = cache.get(key)
        if engine is None:
            if len(cache) > 16:
                cache.clear()
            profile = load_profile(self.settings.profile, options=list(self.settings.options))
            engine = cache[key] = Deidentifier(profile, Pseudonyms(self.settings.pseudonym_secret, org),
                                               overrides=overrides or None)
        return engine

    def run(self, src: Path, out_root: Path, *, organization: str | None = None,
            overrides: dict[str, str] | None = None) -> DeidentifiedFile:
        """De-identify ``src`` under ``out_root``; raises the engine's errors or ``Unverified``."""
        engine = self.engine(organization, overrides)
        alias = engine.overrides.as_dict().get("PatientName")

        def gate(header: bytes, relpath: str, original: OriginalIds) -> None:
            verifier = Verifier(engine.pseudonyms, engine.profile,
                                originals=[original.patient_id, original.study_instance_uid,
                                           original.accession_number],
                                allowed_names=[alias] if alias else [])
            findings = verifier.verify_header(header, relpath)
            if findings:
                raise Unverified(findings)

        return engine.deidentify_file(src, out_root, gate, digest=False)
