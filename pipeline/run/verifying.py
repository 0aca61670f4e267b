"""The leak verifier as every door applies it: always with the values captured from the sources.

Two ways, one set of values. ``FileGate`` checks each encoded header before a
byte of it is written, with that file's own identifiers and captured values
(names, birth dates, addresses, submitted file and folder names), so a door
that answers at once (``telerad anonymize``, anonymize-stream, review) never
writes a file that fails. ``verify_staged`` checks a placed study as a whole
with every source's values, and the texts that leave with it (the batch's
manifest, report and object keys). ``tree_verifier`` is ``telerad verify``'s
look at a folder, with a mapping's original IDs when one is given.
A per-submission PatientName alias is the only person name allowed besides
pseudonyms. Findings name the file, the check and the tag, never a value.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline.deid import DeidentifiedFile, Deidentifier, Finding, OriginalIds, Profile, Verifier
from pipeline.deid.verify import SourceVerifiers, verify_batch
from pipeline.exceptions import VerificationError
from pipeline.pseudonyms import Pseudonyms


class Unverified(VerificationError):
    """The verifier's findings for a header that was therefore never written."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = [str(f) for f in findings]
        super().__init__(f"verification: {len(findings)} finding(s), first: {findings[0]}")


def allowed_names(engine: Deidentifier) -> list[str]:
    """The per-submission PatientName alias, the one name besides pseudonyms an output may carry."""
    alias = engine.overrides.as_dict().get("PatientName")
    return [alias] if alias else []


class FileGate:
    """Each file's header checked before it is written, with its own source's captured values."""

    def __init__(self, engine: Deidentifier) -> None:
        self._verifiers = SourceVerifiers(engine.pseudonyms, engine.profile, allowed_names=allowed_names(engine))

    def header(self, header: bytes, relpath: str, original: OriginalIds) -> None:
        """``Deidentifier.deidentify_file``'s check: raises ``Unverified`` on any finding."""
        findings = self._verifiers.for_original(original).verify_header(header, relpath)
        if findings:
            raise Unverified(findings)

    def written(self, path: Path, res: DeidentifiedFile) -> list[Finding]:
        """Findings for a file already written (a dry run's scratch output)."""
        return self._verifiers.for_original(res.original).verify_file(path, res.relpath)


def verify_staged(engine: Deidentifier, staging: Path, originals: Iterable[OriginalIds],
                  texts: dict[str, str] | None = None) -> list[Finding]:
    """Findings for a placed study and the texts that leave with it (every source's captured values)."""
    return verify_batch(staging, deid=engine, originals=list(originals), texts=texts)


def tree_verifier(pseudonyms: Pseudonyms, profile: Profile | None, *, originals: list[str],
                  allow_names: list[str] | None) -> Verifier:
    """The verifier ``telerad verify`` runs over a folder (no sources at hand: a mapping's IDs at most)."""
    return Verifier(pseudonyms, profile, originals=originals, allowed_names=allow_names)
