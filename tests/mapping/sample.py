"""Mappings shaped like the batch code's (docs/architecture.md), with planted PHI markers."""

from __future__ import annotations

import uuid
from typing import Any

from pipeline.testing import PlantedPHI


def new_batch_id() -> str:
    return str(uuid.uuid4())


def sample_mapping(batch_id: str, *, studies: int = 2, org: str = "ACME") -> tuple[dict, list[str]]:
    """A mapping of ``studies`` studies, and every PHI string planted in it."""
    entries, markers = [], []
    for i in range(studies):
        phi = PlantedPHI()
        study_uid = f"1.2.826.0.1.3680043.10.1234.{phi.tag.lower().encode().hex()}{i}"
        entries.append(
            {
                "cloud_study_id": f"{org}-CS{phi.tag}{i}",
                "original": {
                    "patient_id": phi.patient_id,
                    "study_instance_uid": study_uid,
                    "accession_number": phi.accession,
                },
                "pseudonym": {
                    "patient_id": f"{org}-PPSEUDO{i}",
                    "study_instance_uid": f"2.25.{1000 + i}",
                    "accession_number": f"PSEUDOACC{i}",
                },
                "files": [
                    {"source": f"{phi.patient_id}/series0/{phi.patient_id}_0000",
                     "key": f"{batch_id}/{org}-CS{i}/2.25.1/2.25.2.dcm"}
                ],
            }
        )
        markers += [phi.patient_id, phi.accession, study_uid]
    return {"batch_id": batch_id, "organization": org, "studies": entries}, markers


class SettingsWith:
    """Real settings plus attributes the Settings class does not have yet (mapping_kms_key_id)."""

    def __init__(self, settings: Any, **extra: Any) -> None:
        self._settings = settings
        self.__dict__.update(extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._settings, name)
