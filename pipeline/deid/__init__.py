"""De-identification: PS3.15 Annex E profiles, the engine, and the leak verifier.

    from pipeline.deid import load_profile, Deidentifier
    profile = load_profile("teleradiology")
    deid = Deidentifier(profile, pseudonyms, overrides={"StudyDescription": "CT chest"})
    result = deid.deidentify_file(src, out_root)
"""

from pipeline.deid.custom import load_profile
from pipeline.deid.engine import DeidentifiedFile, Deidentifier, OriginalIds, action_totals
from pipeline.deid.profile import ALL_OPTIONS, PRESETS, Profile
from pipeline.deid.report import build_report
from pipeline.deid.verify import Finding, Verifier, VerifyReport

__all__ = [
    "ALL_OPTIONS",
    "PRESETS",
    "DeidentifiedFile",
    "Finding",
    "Verifier",
    "VerifyReport",
    "build_report",
    "Deidentifier",
    "OriginalIds",
    "Profile",
    "action_totals",
    "load_profile",
]
