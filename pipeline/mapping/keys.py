"""Key-encryption keys (KEKs) for the mapping store: a local keyring file or AWS KMS.

Each mapping is encrypted with its own random AES-256-GCM data key; a KEK only
*wraps* that data key. A record names the KEK that wrapped it by provider, key ID
and version, so rotation re-wraps data keys and never touches the data itself.

Local keyring file (``mapping_key_file``, or ``secrets/mapping.key`` generated 0600)::

    telerad-mapping-keyring 1
    current 2
    key 1 <base64 of 32 random bytes>
    key 2 <base64 of 32 random bytes>

A file of exactly 32 raw bytes (what Telerad generates on first run, or
``openssl rand 32``) is read as a keyring holding one key, version 1; the first
rotation rewrites it in the text form above. Key IDs are fingerprints
(``local-`` + 16 hex digits of a SHA-256 over the key): they name a key without
revealing it, and stay the same when a keyring file is rewritten.

AWS KMS (``mapping_kms_key_id``): the data key is encrypted by KMS under that key,
with the batch ID in the encryption context. KMS keeps its own backing-key
versions inside the ciphertext, so a KMS record's ``version`` is ``None``; its key
ID is the key ARN KMS reports, which is what decryption is checked against.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.settings import Settings
from pipeline.exceptions import ConfigError, KeyError_, TransientError
from pipeline.locking import flocked

LOCAL = "local"
AWS_KMS = "aws-kms"
KEYRING_HEADER = "telerad-mapping-keyring 1"
KEY_BYTES = 32


def fingerprint(key: bytes) -> str:
    """A key's public name: ``local-`` + 16 hex digits; it cannot be turned back into the key."""
    return "local-" + hashlib.sha256(b"telerad mapping kek id\0" + key).hexdigest()[:16]


@dataclass(frozen=True)
class KeyRef:
    """What a record says about the KEK that wrapped its data key."""

    provider: str
    key_id: str
    version: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "key_id": self.key_id, "version": self.version}

    @classmethod
    def from_dict(cls, d: Any) -> "KeyRef":
        if not isinstance(d, dict) or not isinstance(d.get("provider"), str) or not isinstance(
            d.get("key_id"), str
        ):
            raise KeyError_("the record does not name the key that wrapped it")
        version = d.get("version")
        if version is not None and not isinstance(version, int):
            raise KeyError_("the record names its key with an invalid version")
        return cls(d["provider"], d["key_id"], version)

    def __str__(self) -> str:
        return self.key_id + (f" v{self.version}" if self.version is not None else "")


class Kek(Protocol):
    """One key-encryption key: wraps and unwraps 32-byte data keys, bound to a context."""

    ref: KeyRef

    def wrap(self, data_key: bytes, context: dict[str, str]) -> dict[str, str]:
        """The fields to store in the record (base64 strings) that unwrap() takes back."""

    def unwrap(self, fields: dict[str, Any], context: dict[str, str]) -> bytes:
        """The data key, or ``KeyError_`` when this key (or the context) does not fit."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise KeyError_(f"the record's {what} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise KeyError_(f"the record's {what} is not valid base64") from None


def context_aad(context: dict[str, str]) -> bytes:
    """Canonical bytes of a context dict (sorted keys), used as AES-GCM associated data."""
    import json

    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


class LocalKek:
    """A 32-byte key from the local keyring file; wraps with AES-256-GCM."""

    def __init__(self, key: bytes, version: int) -> None:
        if len(key) != KEY_BYTES:
            raise KeyError_(f"a mapping key must be {KEY_BYTES} bytes")
        self._key = key
        self.ref = KeyRef(LOCAL, fingerprint(key), version)

    def __repr__(self) -> str:  # never show the key
        return f"LocalKek({self.ref})"

    def _aad(self, context: dict[str, str]) -> bytes:
        return context_aad({**context, "kek_id": self.ref.key_id})

    def wrap(self, data_key: bytes, context: dict[str, str]) -> dict[str, str]:
        nonce = os.urandom(12)
        wrapped = AESGCM(self._key).encrypt(nonce, data_key, self._aad(context))
        return {"wrap_nonce": _b64(nonce), "wrapped_key": _b64(wrapped)}

    def unwrap(self, fields: dict[str, Any], context: dict[str, str]) -> bytes:
        nonce = _unb64(fields.get("wrap_nonce"), "wrap nonce")
        wrapped = _unb64(fields.get("wrapped_key"), "wrapped data key")
        try:
            return AESGCM(self._key).decrypt(nonce, wrapped, self._aad(context))
        except (InvalidTag, ValueError):
            raise KeyError_(
                f"key {self.ref} cannot unwrap this record's data key: it is the wrong key, "
                "or the record was altered or copied from another batch"
            ) from None


class KmsKek:
    """An AWS KMS key: the data key is encrypted by KMS with the context as encryption context."""

    def __init__(self, key_id: str, client: Any) -> None:
        self.configured_id = key_id
        self._client = client
        self.ref = KeyRef(AWS_KMS, key_id, None)

    def __repr__(self) -> str:
        return f"KmsKek({self.configured_id})"

    def _call(self, op: str, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

        try:
            return getattr(self._client, op)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"ThrottlingException", "KMSInternalException", "DependencyTimeoutException",
                        "ServiceUnavailableException", "InternalFailure"}:
                raise TransientError(f"AWS KMS is busy or failing ({code}); retry shortly") from None
            raise KeyError_(
                f"AWS KMS refused to {op} with key {self.configured_id} ({code or 'error'}): "
                "check that the key exists, is enabled, and that these credentials may use it"
                + ("; the record may have been altered or copied from another batch"
                   if code in {"InvalidCiphertextException", "IncorrectKeyException"} else "")
            ) from None
        except NoRegionError:
            raise ConfigError(
                "AWS KMS needs a region: set AWS_DEFAULT_REGION (or use a key ARN and an AWS profile with a region)"
            ) from None
        except BotoCoreError as exc:
            raise TransientError(f"AWS KMS cannot be reached ({type(exc).__name__}); retry shortly") from None

    def wrap(self, data_key: bytes, context: dict[str, str]) -> dict[str, str]:
        resp = self._call("encrypt", KeyId=self.configured_id, Plaintext=data_key,
                          EncryptionContext=context)
        return {"wrapped_key": _b64(resp["CiphertextBlob"]), "kms_key_arn": resp["KeyId"]}

    def unwrap(self, fields: dict[str, Any], context: dict[str, str]) -> bytes:
        blob = _unb64(fields.get("wrapped_key"), "wrapped data key")
        resp = self._call("decrypt", CiphertextBlob=blob, KeyId=self.configured_id,
                          EncryptionContext=context)
        if resp.get("KeyId") != self.configured_id:
            # Checked here too: emulators (and aliases) must not let another key stand in.
            raise KeyError_(
                f"AWS KMS decrypted this record with key {resp.get('KeyId')}, not {self.configured_id} "
                "that the record names; refusing it"
            )
        return resp["Plaintext"]

    def resolved(self) -> "KmsKek":
        """The same key named by its ARN (what records store), asking KMS once."""
        meta = self._call("describe_key", KeyId=self.configured_id)["KeyMetadata"]
        if meta.get("KeyState") not in (None, "Enabled"):
            raise KeyError_(f"AWS KMS key {meta.get('Arn')} is {meta.get('KeyState')}, not Enabled")
        return KmsKek(meta["Arn"], self._client)


def kms_client() -> Any:
    """A boto3 KMS client; endpoint from AWS_ENDPOINT_URL(_KMS), credentials the SDK's usual way."""
    try:
        import boto3
    except ImportError as exc:  # pragma: no cover - boto3 is in the [s3] extra
        raise ConfigError("AWS KMS needs boto3: pip install 'telerad[s3]'") from exc
    from botocore.exceptions import NoRegionError

    try:
        return boto3.client("kms")
    except NoRegionError:
        raise ConfigError(
            "AWS KMS needs a region: set AWS_DEFAULT_REGION (or AWS_REGION)"
        ) from None


# --- the local keyring file -------------------------------------------------------
def _check_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyError_(
            f"mapping key file {path} is readable by other users (mode {mode:04o}); "
            f"run: chmod 600 {path}"
        )


def parse_keyring(data: bytes, source: str) -> tuple[dict[int, bytes], int]:
    """Versions -> keys and the current version, from a keyring file's bytes."""
    if not data.startswith(KEYRING_HEADER.encode()):
        if len(data) == KEY_BYTES:
            return {1: data}, 1
        raise KeyError_(
            f"{source} is not a Telerad mapping key file: it must hold exactly {KEY_BYTES} random "
            "bytes or a keyring written by `telerad keys rotate`"
        )
    keys: dict[int, bytes] = {}
    current = None
    n = 1
    try:
        lines = data.decode("ascii").splitlines()
        for n, line in enumerate(lines[1:], start=2):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if parts[0] == "current" and len(parts) == 2:
                current = int(parts[1])
            elif parts[0] == "key" and len(parts) == 3:
                key = base64.b64decode(parts[2], validate=True)
                if len(key) != KEY_BYTES or int(parts[1]) in keys or int(parts[1]) < 1:
                    raise ValueError
                keys[int(parts[1])] = key
            else:
                raise ValueError
    except ValueError:
        raise KeyError_(f"{source} is damaged (line {n}); restore it from your backup") from None
    if current not in keys:
        raise KeyError_(f"{source} names no valid current key; restore it from your backup")
    return keys, current


def format_keyring(keys: dict[int, bytes], current: int) -> bytes:
    lines = [
        KEYRING_HEADER,
        "# Telerad mapping keyring: keep it secret (mode 0600) and backed up.",
        "# Without it the re-identification mappings wrapped by these keys cannot be read.",
        f"current {current}",
    ] + [f"key {v} {_b64(k)}" for v, k in sorted(keys.items())]
    return ("\n".join(lines) + "\n").encode("ascii")


def write_private(path: Path, data: bytes) -> None:
    """Replace the key file atomically with a new 0600 file holding ``data``."""
    from pipeline.secrets import replace_private

    try:
        replace_private(path, data)
    except OSError as exc:
        raise KeyError_(
            f"cannot write the mapping key file {path} ({exc.strerror}); check its folder's "
            "permissions, or point mapping_key_file at a writable file"
        ) from None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with flocked(path.with_name(f".{path.name}.lock")):
        yield


class LocalKeyringFile:
    """The local keyring file: read, create on first use, add a version, retire old ones."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> tuple[dict[int, bytes], int]:
        try:
            _check_private(self.path)
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise KeyError_(
                f"mapping key file {self.path} does not exist; restore it from your backup "
                "or unset mapping_key_file"
            ) from None
        return parse_keyring(data, f"mapping key file {self.path}")

    def create(self) -> None:
        """Generate a first key (0600) unless one exists; safe when processes race."""
        from pipeline.secrets import load_or_create_secret

        load_or_create_secret(self.path, create=True, nbytes=KEY_BYTES)

    def add_version(self) -> int:
        """Add a fresh random key as the new current version; returns its version number."""
        with _locked(self.path):
            keys, current = self.load()
            version = max(keys) + 1
            keys[version] = os.urandom(KEY_BYTES)
            write_private(self.path, format_keyring(keys, version))
            return version

    def retire(self, versions: Sequence[int]) -> list[int]:
        """Remove versions (never the current one); returns those removed."""
        with _locked(self.path):
            keys, current = self.load()
            gone = [v for v in versions if v in keys and v != current]
            for v in gone:
                del keys[v]
            if gone:
                write_private(self.path, format_keyring(keys, current))
            return gone

    def keks(self) -> tuple[list[LocalKek], LocalKek]:
        keys, current = self.load()
        keks = {v: LocalKek(k, v) for v, k in sorted(keys.items())}
        return list(keks.values()), keks[current]


# --- the keyring ---------------------------------------------------------------
def local_key_path(settings: Settings) -> Path:
    """``mapping_key_file``, or ``secrets/mapping.key`` when unset."""
    configured = settings.mapping_key_file
    return Path(configured) if configured else settings.secrets_dir / "mapping.key"


def would_generate_key(settings: Settings) -> bool:
    """True when Keyring.from_settings would create a new local key (none configured or present)."""
    return (not settings.mapping_kms_key_id and not settings.mapping_key_file
            and not local_key_path(settings).exists())


class Keyring:
    """The KEKs Telerad may use: one current (for new records) and others to read older ones."""

    def __init__(
        self,
        current: Kek,
        others: Sequence[Kek] = (),
        *,
        kms: Any = None,
        local_file: LocalKeyringFile | None = None,
    ) -> None:
        self.current = current
        self._keks = {k.ref: k for k in [current, *others]}
        self._kms = kms
        self.local_file = local_file

    def __repr__(self) -> str:
        return f"Keyring(current={self.current.ref})"

    @property
    def refs(self) -> list[KeyRef]:
        return sorted(self._keks, key=lambda r: (r.provider, r.version or 0, r.key_id))

    def find(self, ref: KeyRef) -> Kek | None:
        """The KEK a record names, or None. Any KMS key may be asked once KMS is configured."""
        kek = self._keks.get(ref)
        if kek is None and ref.provider == AWS_KMS and self._kms is not None:
            kek = KmsKek(ref.key_id, self._kms)
        return kek

    @classmethod
    def from_settings(cls, settings: Settings, *, kms: Any = None) -> "Keyring":
        """Local keyring file (created 0600 when unset and absent) or AWS KMS as current."""
        kms_key_id = settings.mapping_kms_key_id
        configured = settings.mapping_key_file
        local = LocalKeyringFile(local_key_path(settings))
        local_keks: list[LocalKek] = []
        local_current: LocalKek | None = None
        if kms_key_id:
            if local.exists():  # still readable: records from before the move to KMS
                local_keks, local_current = local.keks()
            client = kms if kms is not None else kms_client()
            current: Kek = KmsKek(kms_key_id, client).resolved()
            return cls(current, local_keks, kms=client, local_file=local if local.exists() else None)
        if not local.exists():
            if configured:
                local.load()  # raises the clear "does not exist" error
            local.create()
        local_keks, local_current = local.keks()
        return cls(local_current, local_keks, kms=kms, local_file=local)

    @classmethod
    def from_bytes(cls, key: bytes, version: int = 1) -> "Keyring":
        """A keyring of one local key (tests, tools)."""
        return cls(LocalKek(key, version))
