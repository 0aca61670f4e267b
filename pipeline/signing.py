"""The organisation's Ed25519 key: sign manifests at the site, verify them at the reader.

The private key is created on first use in ``TELERAD_HOME/secrets`` (0600, PKCS#8
PEM) unless ``signing_key_file`` names an existing one. Readers receive only the
public key (``public_key_pem``), which proves a batch came from the site and was
not altered: the signature covers the exact bytes of ``manifest.json``, and the
manifest holds the size and SHA-256 of every object.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.exceptions import ConfigError, IntegrityError
from pipeline.settings import Settings

PRIVATE_KEY_NAME = "signing-ed25519.pem"


class SignatureError(IntegrityError):
    """A manifest's signature is missing, malformed, or not made by the expected key."""


def private_key_path(settings: Settings) -> Path:
    configured = settings.signing_key_file
    return Path(configured) if configured else Path(settings.secrets_dir) / PRIVATE_KEY_NAME


def _create(path: Path) -> None:
    """Write a fresh key 0600 (first writer wins, as for every secret file)."""
    from pipeline.secrets import create_private_once

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    create_private_once(path, pem)


def load_private_key(settings: Settings) -> Ed25519PrivateKey:
    """The organisation's signing key, generated on first use when not configured."""
    path = private_key_path(settings)
    if not path.exists():
        if settings.signing_key_file:
            raise ConfigError(f"signing key file {path} does not exist; create it or unset signing_key_file")
        _create(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"signing key file {path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key file {path} is not an Ed25519 key")
    return key


def sign_bytes(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """Base64 of the Ed25519 signature of ``data`` (the content of manifest.sig)."""
    return base64.b64encode(key.sign(data))


def sign_manifest(settings: Settings, body: bytes) -> bytes:
    """Sign the exact manifest bytes with the organisation's key."""
    return sign_bytes(load_private_key(settings), body)


def public_key_pem(settings: Settings) -> bytes:
    """The public half, as PEM, to hand to readers (``telerad keys public``)."""
    return load_private_key(settings).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def export_public_key(settings: Settings, dest: Path) -> Path:
    """Write the public key PEM to ``dest`` (world-readable: it is not a secret)."""
    dest = Path(dest)
    dest.write_bytes(public_key_pem(settings))
    os.chmod(dest, 0o644)  # the process umask makes new files private; this one is meant to travel
    return dest


def load_public_key(source: Path | bytes) -> Ed25519PublicKey:
    """A public key from a PEM file (or PEM bytes)."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source if isinstance(source, (str, Path)) else 'public key'} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("the public key is not an Ed25519 key (export it with `telerad keys public`)")
    return key


def fingerprint(key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key (SHA-256 of its raw bytes, 16 hex digits)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def verify_bytes(key: Ed25519PublicKey, data: bytes, signature_b64: bytes) -> None:
    """Raise SignatureError unless ``signature_b64`` is ``key``'s signature of ``data``."""
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("manifest.sig is not base64; the batch cannot be trusted") from None
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise SignatureError(
            f"manifest.json is not signed by the key {fingerprint(key)}: it was altered, or "
            "comes from another organisation; do not use this batch"
        ) from None
