"""The encrypted re-identification mapping store (envelope AES-256-GCM over any ObjectStore).

One object per batch, ``BATCH_ID.map``: a small JSON record holding only
ciphertext and the names of keys::

    {"format": "telerad-mapping/1", "batch_id": "...", "alg": "AES-256-GCM",
     "created_at": "...", "kek": {"provider": "local", "key_id": "local-...", "version": 2},
     "wrap": {"wrap_nonce": "...", "wrapped_key": "..."},
     "nonce": "...", "ciphertext": "..."}

The mapping is encrypted with a fresh random 256-bit data key; the associated
data binds the ciphertext to its format and batch ID, so a record copied under
another batch's name does not decrypt. The data key is wrapped by the keyring's
current KEK (bound to the batch ID too). Rotation replaces ``kek`` and ``wrap``
only; ``nonce`` and ``ciphertext`` stay byte for byte the same.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.settings import Settings
from pipeline.exceptions import KeyError_, MappingError, ObjectNotFound
from pipeline.mapping.keys import (
    Keyring,
    KeyRef,
    _b64,
    _unb64,
    context_aad,
    local_key_path,
    would_generate_key,
)

log = logging.getLogger(__name__)

FORMAT = "telerad-mapping/1"
ALG = "AES-256-GCM"
SUFFIX = ".map"
CONTENT_TYPE = "application/vnd.telerad.mapping+json"
_BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


PENDING_DIR = "pending-mappings"


def pending_mapping_store(settings: Settings, keyring: Keyring | None = None) -> "MappingStore":
    """Encrypted mappings of batches not yet finished, in ``TELERAD_HOME/state/pending-mappings``.

    A batch writes its mapping here while de-identifying (nothing leaves the machine
    before the upload is confirmed); ``store_mapping`` moves it to the mapping store
    and deletes it. `telerad keys status` counts what is here and `keys rotate`
    re-wraps it, so no copy is stranded under a retired key.
    """
    url = (settings.state_dir / PENDING_DIR).resolve().as_uri()
    return MappingStore.from_settings(settings, url=url, keyring=keyring)


def check_batch_id(batch_id: Any) -> str:
    """A batch ID safe to use as an object key (letters, digits, '-' and '_')."""
    if not isinstance(batch_id, str) or not _BATCH_ID.match(batch_id):
        raise MappingError(
            "invalid batch ID: use the ID `telerad submit` printed (letters, digits, '-', '_')"
        )
    return batch_id


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class RotationReport:
    """What a rotation did: counts per outcome, and the batches it could not re-wrap."""

    rewrapped: int = 0
    already_current: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # batch ID -> reason (no PHI)

    @property
    def ok(self) -> bool:
        return not self.failed


class MappingStore:
    """Encrypted mapping records in an ObjectStore, keyed by batch ID only."""

    def __init__(self, store: Any, keyring: Keyring) -> None:
        self.store = store
        self.keyring = keyring

    def __repr__(self) -> str:
        return f"MappingStore({self.store.url!r}, {self.keyring!r})"

    @classmethod
    def from_settings(
        cls, settings: Settings, *, url: str | None = None, keyring: Keyring | None = None
    ) -> "MappingStore":
        """The store at ``url`` (default ``settings.effective_mapping_url``) with the configured keyring.

        ``url`` lets the batch code keep a pending record in its private folder
        before ``copy_from`` moves it to the mapping store; it must never be the
        upload location.
        """
        from pipeline.locations import check_mapping_apart
        from pipeline.storage import open_store

        url = url or settings.effective_mapping_url
        check_mapping_apart(settings.effective_store_url, url)
        store = open_store(url, settings)
        if keyring is None and would_generate_key(settings):
            # A lost key file must not be papered over by a new key: the mappings
            # already stored would stay unreadable and new ones would split off.
            existing = next(iter(cls(store, None).batch_ids()), None)  # type: ignore[arg-type]
            if existing is not None:
                raise KeyError_(
                    f"the mapping key file {local_key_path(settings)} is missing, but the mapping "
                    f"store {store.url} already holds mappings: restore the key file from your "
                    "backup (a new key could not read them), or set mapping_key_file / "
                    "mapping_kms_key_id"
                )
        return cls(store, keyring or Keyring.from_settings(settings))

    # --- keys in the store ---------------------------------------------------------
    @staticmethod
    def key_for(batch_id: str) -> str:
        return check_batch_id(batch_id) + SUFFIX

    def batch_ids(self) -> Iterator[str]:
        """Every batch with a mapping record (top-level ``*.map`` objects)."""
        for info in self.store.list(""):
            key = info.key
            if "/" not in key and key.endswith(SUFFIX) and _BATCH_ID.match(key[: -len(SUFFIX)]):
                yield key[: -len(SUFFIX)]

    def exists(self, batch_id: str) -> bool:
        return self.store.head(self.key_for(batch_id)) is not None

    # --- records -------------------------------------------------------------------
    @staticmethod
    def _data_aad(batch_id: str) -> bytes:
        return context_aad({"format": FORMAT, "alg": ALG, "batch_id": batch_id})

    @staticmethod
    def _wrap_context(batch_id: str) -> dict[str, str]:
        return {"purpose": "telerad-mapping", "batch_id": batch_id}

    def _read_record(self, batch_id: str) -> dict[str, Any]:
        key = self.key_for(batch_id)
        try:
            raw = self.store.get_bytes(key)
        except ObjectNotFound:
            raise MappingError(
                f"no mapping for batch {batch_id} in the mapping store {self.store.url}; "
                "check the batch ID and TELERAD_MAPPING_URL"
            ) from None
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("alg") != ALG:
            raise MappingError(
                f"the mapping record of batch {batch_id} is not a {FORMAT} record; "
                "it is damaged or was written by something else"
            )
        if record.get("batch_id") != batch_id:
            raise MappingError(
                f"the mapping record stored as batch {batch_id} belongs to another batch; "
                "it was moved or altered, refusing it"
            )
        return record

    def _write_record(self, batch_id: str, record: dict[str, Any]) -> None:
        ref = KeyRef.from_dict(record["kek"])
        self.store.put_bytes(
            self.key_for(batch_id),
            _canonical(record),
            content_type=CONTENT_TYPE,
            metadata={
                "batch_id": batch_id,
                "uploaded_at": _now(),
                "kek_provider": ref.provider,
                "kek_id": ref.key_id,
                "kek_version": "" if ref.version is None else str(ref.version),
            },
        )

    def _unwrap(self, batch_id: str, record: dict[str, Any], keyring: Keyring | None = None) -> bytes:
        ref = KeyRef.from_dict(record.get("kek"))
        keyrings = [k for k in (keyring, self.keyring) if k is not None]
        kek = next((k.find(ref) for k in keyrings if k.find(ref) is not None), None)
        if kek is None:
            raise KeyError_(
                f"the mapping of batch {batch_id} is wrapped by {ref.provider} key {ref}, which is "
                f"not in the configured keyring (current key: {self.keyring.current.ref}); "
                "configure the key file or KMS key that holds it"
            )
        wrap = record.get("wrap")
        if not isinstance(wrap, dict):
            raise KeyError_(f"the mapping record of batch {batch_id} has no wrapped data key")
        data_key = kek.unwrap(wrap, self._wrap_context(batch_id))
        if len(data_key) != 32:
            raise KeyError_(f"the data key of batch {batch_id} unwrapped to the wrong length")
        return data_key

    # --- public API -------------------------------------------------------------------
    def put(self, batch_id: str, mapping: dict, *, replace: bool = False) -> None:
        """Encrypt and store a batch's mapping.

        Idempotent: storing the same mapping again is a no-op. A *different* mapping
        for a batch that already has one is refused unless ``replace=True``, so a bug
        upstream can never silently destroy the only way back to the patient.
        """
        check_batch_id(batch_id)
        if not isinstance(mapping, dict):
            raise MappingError("a mapping must be a dict (see docs/architecture.md)")
        if mapping.get("batch_id", batch_id) != batch_id:
            raise MappingError(f"the mapping given for batch {batch_id} names another batch")
        try:
            plaintext = _canonical(mapping)
        except (TypeError, ValueError):
            raise MappingError(
                f"the mapping of batch {batch_id} holds values that are not JSON "
                "(strings, numbers, lists, dicts)"
            ) from None
        if self.exists(batch_id):
            if self.get(batch_id) == json.loads(plaintext):
                return
            if not replace:
                raise MappingError(
                    f"batch {batch_id} already has a different mapping; refusing to overwrite it"
                )
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, self._data_aad(batch_id))
        kek = self.keyring.current
        record = {
            "format": FORMAT,
            "alg": ALG,
            "batch_id": batch_id,
            "created_at": _now(),
            "kek": kek.ref.as_dict(),
            "wrap": kek.wrap(data_key, self._wrap_context(batch_id)),
            "nonce": _b64(nonce),
            "ciphertext": _b64(ciphertext),
        }
        self._write_record(batch_id, record)
        log.info("stored mapping of batch %s (key %s)", batch_id, kek.ref)

    def get(self, batch_id: str) -> dict:
        """Decrypt a batch's mapping; ``KeyError_`` when the key is missing or wrong."""
        record = self._read_record(check_batch_id(batch_id))
        data_key = self._unwrap(batch_id, record)
        nonce = _unb64(record.get("nonce"), "nonce")
        ciphertext = _unb64(record.get("ciphertext"), "ciphertext")
        try:
            plaintext = AESGCM(data_key).decrypt(nonce, ciphertext, self._data_aad(batch_id))
        except (InvalidTag, ValueError):
            raise MappingError(
                f"the mapping of batch {batch_id} fails its integrity check: the record was "
                "altered or belongs to another batch; restore it from a backup"
            ) from None
        return json.loads(plaintext)

    def copy_from(self, other: "MappingStore", batch_id: str) -> None:
        """Copy a batch's encrypted record from another mapping store, as ciphertext.

        Idempotent: an identical record already here is left alone. The copy is read
        back and decrypted before returning, so the caller may delete the source.
        A *different* mapping already stored for the batch is refused.
        """
        record = other._read_record(check_batch_id(batch_id))
        raw = _canonical(record)
        try:
            existing = self.store.get_bytes(self.key_for(batch_id))
        except ObjectNotFound:
            existing = None
        if existing is not None and existing != raw:
            if self.get(batch_id) != other.get(batch_id):
                raise MappingError(
                    f"batch {batch_id} already has a different mapping in {self.store.url}; "
                    "refusing to overwrite it"
                )
            return
        if existing is None:
            self._write_record(batch_id, record)
        self.get(batch_id)  # readable here with this store's keyring, or raise now

    def move_from(self, other: "MappingStore", batch_id: str) -> None:
        """``copy_from``, then delete the source record.

        A re-run after the delete (a worker killed in between) finds the copy here
        and the source gone, and only checks the copy.
        """
        if not other.exists(batch_id) and self.exists(batch_id):
            self.get(batch_id)
            return
        self.copy_from(other, batch_id)
        other.delete(batch_id)

    def delete(self, batch_id: str) -> None:
        """Remove a batch's record (the pending copy, once the mapping store holds it)."""
        self.store.delete(self.key_for(batch_id))

    def key_of(self, batch_id: str) -> KeyRef:
        """The KEK named by a batch's record (no decryption)."""
        return KeyRef.from_dict(self._read_record(check_batch_id(batch_id)).get("kek"))

    def key_usage(self) -> dict[KeyRef, list[str]]:
        """Which KEK wraps which batches' data keys (reads record headers only)."""
        usage: dict[KeyRef, list[str]] = {}
        for batch_id in self.batch_ids():
            try:
                ref = self.key_of(batch_id)
            except MappingError:
                ref = KeyRef("unreadable", "damaged-record", None)
            usage.setdefault(ref, []).append(batch_id)
        return usage

    def rewrap(self, batch_id: str, new_keyring: Keyring) -> bool:
        """Re-wrap one record's data key under ``new_keyring.current``; False when already there."""
        record = self._read_record(check_batch_id(batch_id))
        target = new_keyring.current
        if KeyRef.from_dict(record.get("kek")) == target.ref:
            return False
        data_key = self._unwrap(batch_id, record, new_keyring)
        record["kek"] = target.ref.as_dict()
        record["wrap"] = target.wrap(data_key, self._wrap_context(batch_id))
        record["rewrapped_at"] = _now()
        self._write_record(batch_id, record)
        return True

    def rotate(self, new_keyring: Keyring) -> RotationReport:
        """Re-wrap every record's data key under ``new_keyring.current``; the data stays as it is.

        Old keys are read from this store's keyring (or ``new_keyring``); after the
        rotation, new records are written with ``new_keyring``. A record that cannot
        be re-wrapped is reported, not fatal: re-run after fixing its key.
        """
        report = RotationReport()
        for batch_id in list(self.batch_ids()):
            try:
                if self.rewrap(batch_id, new_keyring):
                    report.rewrapped += 1
                else:
                    report.already_current += 1
            except MappingError as exc:
                report.failed[batch_id] = str(exc)
                log.warning("could not re-wrap the mapping of batch %s: %s", batch_id, exc)
        self.keyring = new_keyring
        return report
