"""Settings: defaults from config/default.toml, TELERAD_* overrides, refusals at start-up."""

from __future__ import annotations

import os
import stat

import pytest

from pipeline.exceptions import ConfigError
from pipeline.settings import load_settings


def test_defaults_put_everything_under_telerad_home(telerad_home):
    """With no configuration: embedded broker, a local bucket and mapping store under TELERAD_HOME."""
    s = load_settings()
    assert s.home == telerad_home
    assert s.embedded_broker
    assert s.effective_store_url == (telerad_home / "bucket").as_uri()
    assert s.effective_mapping_url == (telerad_home / "mapping").as_uri()
    assert s.staging_root == telerad_home / "staging"


def test_environment_overrides_the_toml_defaults(monkeypatch):
    """TELERAD_* variables win over config/default.toml."""
    monkeypatch.setenv("TELERAD_ORGANIZATION", "acme")
    monkeypatch.setenv("TELERAD_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("TELERAD_OPTIONS", "retain-uids, clean-graphics")
    s = load_settings()
    assert s.organization == "ACME"
    assert not s.embedded_broker
    assert s.options == ["retain-uids", "clean-graphics"]


@pytest.mark.parametrize(
    "store, mapping",
    [
        ("s3://bucket/site", "s3://bucket/site/mapping"),
        ("s3://bucket/site/x", "s3://bucket/site"),
        ("s3://bucket", "s3://bucket/anything"),
        ("az://container/a", "az://container/a"),
    ],
)
def test_mapping_store_inside_the_upload_location_is_refused(monkeypatch, store, mapping):
    """A mapping store in, around or equal to the bucket is refused with a clear error."""
    monkeypatch.setenv("TELERAD_STORE_URL", store)
    monkeypatch.setenv("TELERAD_MAPPING_URL", mapping)
    with pytest.raises(ConfigError, match="separate place"):
        load_settings()


def test_local_mapping_store_inside_the_local_bucket_is_refused(telerad_home, monkeypatch):
    monkeypatch.setenv("TELERAD_MAPPING_URL", (telerad_home / "bucket" / "keys").as_uri())
    with pytest.raises(ConfigError, match="separate place"):
        load_settings()


def test_a_separate_bucket_for_the_mapping_is_accepted(monkeypatch):
    monkeypatch.setenv("TELERAD_STORE_URL", "s3://uploads/site")
    monkeypatch.setenv("TELERAD_MAPPING_URL", "s3://phi-mappings/site")
    assert load_settings().effective_mapping_url == "s3://phi-mappings/site"


def test_bad_organization_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TELERAD_ORGANIZATION", "St Mary's/ward 3")
    with pytest.raises(ConfigError, match="organization"):
        load_settings()


def test_pseudonym_secret_is_generated_once_with_mode_0600(telerad_home):
    """The HMAC secret is created on first use, private to its owner, and stable."""
    first = load_settings().pseudonym_secret
    path = telerad_home / "secrets" / "pseudonym.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_settings().pseudonym_secret == first
    assert len(first) == 32


def test_configured_secret_file_that_is_missing_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TELERAD_PSEUDONYM_SECRET_FILE", str(tmp_path / "nope.key"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings().pseudonym_secret


def test_default_toml_documents_every_setting_with_the_codes_default():
    """config/default.toml and the Settings fields agree: every key a field, every field a key, one value each."""
    import tomllib

    from pydantic_core import PydanticUndefined

    from pipeline.settings import Settings, config_dir

    toml = tomllib.loads((config_dir() / "default.toml").read_text())
    fields = Settings.model_fields
    assert set(toml) - set(fields) == set(), "keys in default.toml that no setting reads"
    # TELERAD_HOME's default is the user's data folder, computed at run time, not a constant.
    assert set(fields) - set(toml) == {"home"}, "settings default.toml does not document"
    for key, value in toml.items():
        field = fields[key]
        default = field.default_factory() if field.default_factory is not None else field.default
        assert default is not PydanticUndefined, key
        assert getattr(default, "value", default) == value, f"{key}: code says {default!r}, default.toml {value!r}"
