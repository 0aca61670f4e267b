"""The organisation key: created once and private, signatures that catch any change."""

from __future__ import annotations

import stat

import pytest

from pipeline.settings import load_settings
from pipeline.signing import (
    SignatureError,
    export_public_key,
    load_public_key,
    private_key_path,
    sign_manifest,
    verify_bytes,
)


def test_key_is_created_once_private_and_verifies_with_exported_public_key(telerad_home, tmp_path):
    """First use creates a 0600 key; the exported public key verifies its signatures."""
    settings = load_settings()
    sig = sign_manifest(settings, b'{"batch_id": "x"}\n')
    key_file = private_key_path(settings)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    before = key_file.read_bytes()
    assert sign_manifest(settings, b"other") and key_file.read_bytes() == before

    pub = load_public_key(export_public_key(settings, tmp_path / "org.pub"))
    verify_bytes(pub, b'{"batch_id": "x"}\n', sig)


def test_one_changed_byte_or_another_key_fails(telerad_home, tmp_path, monkeypatch):
    """A changed manifest, or a signature from another organisation, is refused."""
    settings = load_settings()
    body = b'{"batch_id": "x", "total_images": 3}\n'
    sig = sign_manifest(settings, body)
    pub = load_public_key(export_public_key(settings, tmp_path / "org.pub"))
    with pytest.raises(SignatureError, match="altered"):
        verify_bytes(pub, body.replace(b"3", b"4"), sig)

    monkeypatch.setenv("TELERAD_HOME", str(tmp_path / "other-site"))
    other = load_settings()
    with pytest.raises(SignatureError):
        verify_bytes(pub, body, sign_manifest(other, body))
    with pytest.raises(SignatureError, match="not base64"):
        verify_bytes(pub, body, b"not a signature!")
