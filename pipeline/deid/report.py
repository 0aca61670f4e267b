"""deid-report.json: what was done to a batch, for the manifest's reader. No PHI.

Built from the per-file action counts the engine returns, so the report says
exactly what happened (not what the profile intended): the profile, options
and CID 7050 codes, the edition of the standard, the pseudonym key's ID, and
for every attribute how often it was kept, removed, emptied, replaced,
remapped, shifted, cleaned or pseudonymised.
"""

from __future__ import annotations

from collections import Counter

from pipeline.deid.engine import DeidentifiedFile, action_totals
from pipeline.deid.profile import Profile, keyword_or_tag
from pipeline.deid.standard import code_for
from pipeline.pseudonyms import Pseudonyms

REPORT_SCHEMA_VERSION = 1


def build_report(
    profile: Profile,
    pseudonyms: Pseudonyms,
    files: list[DeidentifiedFile],
    *,
    skipped: int = 0,
    refused_reasons: list[str] | None = None,
    overrides: dict | None = None,
    pixel_policy: str | None = None,
    steps: list[str] | None = None,
) -> dict:
    """The per-batch conformance report (``deid-report.json``).

    ``refused_reasons`` are the messages of RefusedFileError (they name no PHI);
    callers must not pass source paths. ``overrides`` lists only the keywords set.
    ``steps`` is the engine's own account of what it does, in order
    (``Deidentifier.describe_actions``), for an auditor reading the report.
    """
    described = profile.describe()
    codes = list(described["codes"])
    if any(f.pixels_cleaned for f in files):
        codes.append(code_for("clean-pixel-data"))
    refused = Counter(refused_reasons or [])
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "profile": described["profile"],
        "options": described["options"],
        "codes_applied": codes,
        "standard": described["standard"],
        "edition": described["edition"],
        "custom_rules": described["custom_rules"],
        "pseudonym_key_id": pseudonyms.key_id,
        "overrides": sorted((overrides or {}).keys()),
        "steps": list(steps or []),
        # Attributes the profile allows to hold identifying values (the verifier does not fail them).
        "allow_identifying": sorted(keyword_or_tag(t) for t in profile.settings.get("allow_identifying", ())),
        "counts": {
            "files": len(files),
            "studies": len({f.cloud_study_id for f in files}),
            "series": len({f.series_instance_uid for f in files}),
            "skipped_not_dicom": skipped,
            "refused": sum(refused.values()),
            "pixels_cleaned": sum(1 for f in files if f.pixels_cleaned),
            "pixels_examined": sum(1 for f in files if f.pixels is not None),
            "pixel_warnings": sum(1 for f in files if f.pixels is not None and f.pixels.warning),
        },
        "refused": [{"reason": r, "files": n} for r, n in sorted(refused.items())],
        "actions": action_totals(f.actions for f in files),
        "pixels": pixel_section(files, pixel_policy),
    }


def pixel_section(files: list[DeidentifiedFile], policy: str | None) -> dict:
    """Burned-in text, per examined file: frames read, boxes masked, OCR engine; warnings apart."""
    examined = [f for f in files if f.pixels is not None]
    engine = next(((f.pixels.engine, f.pixels.engine_version) for f in examined), ("", ""))
    return {
        "method": "Clean Pixel Data with OCR" if any(f.pixels_cleaned for f in examined) else None,
        "policy": policy,
        "ocr_engine": engine[0] or None,
        "ocr_engine_version": engine[1] or None,
        "files": [f.pixels.as_report(f.relpath) for f in examined],
        "warnings": [{"file": f.relpath, "warning": f.pixels.warning} for f in examined if f.pixels.warning],
    }
