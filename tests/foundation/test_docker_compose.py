"""docker-compose.yml is valid and wires the services and settings a site needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_specification():
    """The file validates against the compose-spec schema (offline, built into check-jsonschema)."""
    exe = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_redis_worker_and_s3_store_are_there_and_depend_on_existing_services():
    """Redis, a worker and an S3-compatible store exist; every depends_on names a real service."""
    services = load()["services"]
    assert {"redis", "worker", "minio"} <= set(services)
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}) or {}:
            assert dep in services, f"{name} depends on missing service {dep}"


def test_redis_keeps_queued_work_across_restarts():
    """Redis runs with append-only persistence, so queued batches survive a restart."""
    command = " ".join(load()["services"]["redis"]["command"])
    assert "--appendonly yes" in command


def test_worker_environment_uses_real_settings_names():
    """Every TELERAD_* variable in the file is a setting Telerad reads (no typos)."""
    env = load()["services"]["worker"]["environment"]
    fields = {f.upper() for f in Settings.model_fields}
    names = [k for k in env if k.startswith("TELERAD_")]
    assert {"TELERAD_BROKER_URL", "TELERAD_STORE_URL", "TELERAD_MAPPING_URL"} <= set(names)
    for name in names:
        assert name.removeprefix("TELERAD_") in fields, f"{name} is not a Telerad setting"
    assert env["TELERAD_BROKER_URL"].startswith("redis://redis:")
    assert env["TELERAD_STORE_URL"].startswith("s3://")
    assert not env["TELERAD_MAPPING_URL"].startswith("s3://telerad-batches")
