"""The mapping store is compared with the upload store as a place, not as a string."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.exceptions import ConfigError
from pipeline.settings import load_settings
from tests.harness.worker import telerad_env
from tests.hardening.helpers import run_telerad


def _refused(monkeypatch: pytest.MonkeyPatch, store: str, mapping: str) -> None:
    monkeypatch.setenv("TELERAD_STORE_URL", store)
    monkeypatch.setenv("TELERAD_MAPPING_URL", mapping)
    with pytest.raises(ConfigError, match="separate place from TELERAD_STORE_URL"):
        load_settings()


def test_file_urls_are_resolved_before_comparing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """localhost host, percent-escapes, '..' and a symlink into the bucket are all refused."""
    bucket = tmp_path / "bucket"
    (bucket / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(bucket / "sub", tmp_path / "innocent-looking")
    store = bucket.as_uri()
    for mapping in (
        f"file://localhost{bucket}/mapping",
        f"file://{tmp_path}/buck%65t/mapping",
        f"file://{tmp_path}/elsewhere/../bucket/mapping",
        (tmp_path / "innocent-looking" / "mapping").as_uri(),
        f"file://{tmp_path}/elsewhere/..",  # a folder around the bucket
    ):
        _refused(monkeypatch, store, mapping)


def test_a_symlinked_store_is_seen_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store URL that is a symlink to the mapping folder's parent is refused too."""
    real = tmp_path / "real"
    (real / "mapping").mkdir(parents=True)
    os.symlink(real, tmp_path / "link")
    _refused(monkeypatch, (tmp_path / "link").as_uri(), (real / "mapping").as_uri())


@pytest.mark.parametrize(
    "store, mapping",
    [
        ("s3://hospital-upload/site-a", "s3://hospital-upload//site-a/mapping"),
        ("s3://hospital-upload/site-a", "s3://hospital-upload/other-prefix"),
        ("s3://hospital-upload/site-a", "s3://Hospital-Upload/mapping"),
        ("s3://hospital-upload", "s3://hospital-upload/mapping"),
        ("az://uploads/site-a", "az://uploads/mappings"),
        ("az://uploads/site-a", "az://UPLOADS/x"),
    ],
)
def test_same_bucket_or_container_is_refused_whatever_the_prefix(monkeypatch, store: str, mapping: str) -> None:
    """One bucket or container for both is refused, with any prefix, slashes or case."""
    _refused(monkeypatch, store, mapping)


def test_separate_places_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sibling folders, and another bucket, are fine."""
    monkeypatch.setenv("TELERAD_STORE_URL", (tmp_path / "bucket").as_uri())
    monkeypatch.setenv("TELERAD_MAPPING_URL", (tmp_path / "bucket-mapping").as_uri())
    load_settings()
    monkeypatch.setenv("TELERAD_STORE_URL", "s3://hospital-upload/site-a")
    monkeypatch.setenv("TELERAD_MAPPING_URL", "s3://hospital-mappings/site-a")
    load_settings()


def test_submit_with_the_mapping_beside_the_bucket_writes_nothing(tmp_path: Path) -> None:
    """The issue's reproduction: `file://localhost/X/bucket/mapping` is refused at submit and no .map appears."""
    bucket = tmp_path / "X" / "bucket"
    bucket.mkdir(parents=True)
    study = tmp_path / "study"
    study.mkdir()
    (study / "f").write_bytes(b"x")
    env = telerad_env(tmp_path / "home", TELERAD_STORE_URL=bucket.as_uri(),
                      TELERAD_MAPPING_URL=f"file://localhost{bucket}/mapping")
    proc = run_telerad(["submit", str(study), "--no-queue"], env, timeout=60)
    assert proc.returncode == 2
    assert "TELERAD_MAPPING_URL must be a separate place" in proc.stderr
    assert list(bucket.rglob("*")) == []


def test_a_folder_seen_under_another_path_is_refused(tmp_path: Path) -> None:
    """A bind mount of the bucket (same folder, other path, as on a case-insensitive mount) is seen through by identity."""
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    bucket, alias = tmp_path / "bucket", tmp_path / "alias"
    bucket.mkdir()
    alias.mkdir()
    check = (
        "from pipeline.locations import check_mapping_apart as c\n"
        f"c({bucket.as_uri()!r}, {(alias / 'mapping').as_uri()!r})\n"
    )
    script = f"mount --bind {bucket} {alias} && exec {sys.executable} -c \"$CHECK\""
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], env={**os.environ, "CHECK": check},
                          capture_output=True, text=True, timeout=60)
    if "mount" in proc.stderr and proc.returncode != 0 and "ConfigError" not in proc.stderr:
        pytest.skip(f"no mount namespaces here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 1 and "TELERAD_MAPPING_URL must be a separate place" in proc.stderr
