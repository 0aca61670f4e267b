"""API keys of the HTTP gateway: random secrets handed out once, stored only as hashes.

A key reads ``trk_<id>_<secret>``. The file ``TELERAD_HOME/secrets/api-keys.json``
(0600) holds, per key ID, the SHA-256 of the whole key, its scopes, a label and
when it was made; never the key. The key has 256 bits of randomness, so a plain
hash is enough (no slow password hash needed) and checking one costs microseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.exceptions import ConfigError
from pipeline.secrets import replace_private
from pipeline.settings import Settings
from pipeline.state import utcnow

#: What a key may do: submit studies (and anonymize-stream), read batches, re-identify,
#: manage batches (the operator's actions: cancel one for good).
SCOPES = ("submit", "read", "reidentify", "manage")
PREFIX = "trk_"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """One key's record: never the key itself."""

    key_id: str
    sha256: str
    scopes: tuple[str, ...]
    label: str = ""
    created_at: str = field(default_factory=utcnow)

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def parse_scopes(text: str) -> tuple[str, ...]:
    """``"submit,read"`` -> ("submit", "read"); an unknown scope is refused by name."""
    scopes = tuple(dict.fromkeys(s.strip().lower() for s in text.split(",") if s.strip()))
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ConfigError(f"scopes must be a comma-separated list of {', '.join(SCOPES)}")
    return scopes


class ApiKeyStore:
    """The hashed keys in one 0600 JSON file; re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: tuple[float, dict[str, ApiKey]] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "ApiKeyStore":
        return cls(settings.secrets_dir / "api-keys.json")

    def _load(self) -> dict[str, ApiKey]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        with self._lock:
            if self._cache is None or self._cache[0] != mtime:
                raw = json.loads(self.path.read_text() or "{}")
                keys = {k: ApiKey(**{**v, "scopes": tuple(v["scopes"])}) for k, v in raw.items()}
                self._cache = (mtime, keys)
            return self._cache[1]

    def _save(self, keys: dict[str, ApiKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {k: {**asdict(v), "scopes": list(v.scopes)} for k, v in sorted(keys.items())}
        replace_private(self.path, json.dumps(data, indent=1).encode())

    def create(self, scopes: tuple[str, ...], label: str = "") -> tuple[ApiKey, str]:
        """A new key with ``scopes``: its record and the key, which is shown only this once."""
        key_id = secrets.token_hex(4)
        key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(key_id=key_id, sha256=_digest(key), scopes=scopes, label=label)
        keys = dict(self._load())
        keys[key_id] = record
        self._save(keys)
        return record, key

    def revoke(self, key_id: str) -> bool:
        keys = dict(self._load())
        if keys.pop(key_id, None) is None:
            return False
        self._save(keys)
        return True

    def all(self) -> list[ApiKey]:
        return sorted(self._load().values(), key=lambda k: k.created_at)

    def check(self, key: str | None) -> ApiKey | None:
        """The record of a valid key, or None (malformed, unknown, revoked)."""
        if not key or not key.startswith(PREFIX):
            return None
        key_id = key[len(PREFIX):].partition("_")[0]
        record = self._load().get(key_id)
        if record is None or not hmac.compare_digest(record.sha256, _digest(key)):
            return None
        return record
