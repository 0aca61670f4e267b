"""Keyed pseudonyms: the same original gives the same pseudonym everywhere.

Every value is an HMAC-SHA256 of (domain, original) under the organisation's
secret, so any worker process in any batch derives the same patient ID, UID or
date shift without a shared table. The secret never leaves this object; only a
fingerprint (``key_id``) is recorded in manifests to tell keys apart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from functools import lru_cache

from pipeline.exceptions import ConfigError

#: Shifts are drawn from this many days into the past (never zero, never forward).
MAX_DATE_SHIFT_DAYS = 3650

_CACHE_LIMIT = 200_000


@lru_cache(maxsize=65536)  # the same study, series and patient come back for every image
def _b32(digest: bytes, n: int) -> str:
    return base64.b32encode(digest).decode("ascii").rstrip("=")[:n]


class Pseudonyms:
    """Pure functions of (secret, input): patient IDs, names, accessions, UIDs, date shifts."""

    def __init__(self, secret: bytes, organization: str) -> None:
        if not isinstance(secret, (bytes, bytearray)) or len(secret) < 16:
            raise ConfigError("the pseudonym secret must be at least 16 bytes")
        org = (organization or "").upper()
        if not org or len(org) > 16 or not all(c.isalnum() or c in "-_" for c in org):
            raise ConfigError(
                "organization must be 1-16 letters, digits, '-' or '_' (it prefixes pseudonyms)"
            )
        self._secret = bytes(secret)
        self.organization = org
        self._cache: dict[tuple[str, str], bytes] = {}
        # ORG-P + 16 base32 letters: what patient_id makes (checked once per file by the verifier)
        self._patient_shape = re.compile(re.escape(org) + "-P[A-Z2-7]{16}")

    def __repr__(self) -> str:  # never show the secret
        return f"Pseudonyms(organization={self.organization!r}, key_id={self.key_id!r})"

    # --- core -------------------------------------------------------------------
    def digest(self, domain: str, value: str) -> bytes:
        """HMAC-SHA256 of ``value`` in ``domain``; cached per instance."""
        key = (domain, value)
        d = self._cache.get(key)
        if d is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            msg = domain.encode("utf-8") + b"\x00" + value.encode("utf-8", "surrogateescape")
            d = hmac.new(self._secret, msg, hashlib.sha256).digest()
            self._cache[key] = d
        return d

    @property
    def key_id(self) -> str:
        """A fingerprint of the secret (not reversible to it), recorded in manifests."""
        return "hmac-sha256:" + hashlib.sha256(b"telerad-key-id\x00" + self._secret).hexdigest()[:16]

    # --- identifiers --------------------------------------------------------------
    def patient_id(self, orig: str) -> str:
        """``ORG-P`` + 16 base32 characters (fits LO)."""
        return f"{self.organization}-P{_b32(self.digest('patient', orig.strip()), 16)}"

    def patient_name(self, orig: str) -> str:
        """The pseudonymous name of a patient key: the same text as its patient ID.

        Callers pass the patient's key (the original Patient ID where there is one), so
        a reader sees one pseudonym for the patient in both Patient's Name and ID.
        """
        return self.patient_id(orig)

    def accession(self, orig: str) -> str:
        """``A`` + 15 base32 characters: 16 characters, fits SH."""
        return "A" + _b32(self.digest("accession", orig.strip()), 15)

    def study_id(self, study_uid: str) -> str:
        """The cloud study ID: ``ORG-`` + 20 base32 characters of the Study Instance UID."""
        return f"{self.organization}-{_b32(self.digest('study', study_uid.strip()), 20)}"

    def uid(self, orig: str) -> str:
        """``2.25.<decimal>`` of a 128-bit value shaped as an RFC 9562 UUIDv8."""
        b = bytearray(self.digest("uid", orig.strip().rstrip("\x00"))[:16])
        b[6] = (b[6] & 0x0F) | 0x80  # version 8 (custom)
        b[8] = (b[8] & 0x3F) | 0x80  # RFC variant
        return "2.25." + str(int.from_bytes(b, "big"))

    def date_shift_days(self, patient_key: str) -> int:
        """Days to add to every date of this patient: between -MAX_DATE_SHIFT_DAYS and -1."""
        n = int.from_bytes(self.digest("dateshift", patient_key.strip())[:8], "big")
        return -(1 + n % MAX_DATE_SHIFT_DAYS)

    def text(self, domain: str, orig: str, length: int = 16) -> str:
        """A generic keyed token (upper-case base32) for custom-profile ``hash`` actions."""
        return _b32(self.digest(f"text:{domain}", orig), length)

    # --- recognising our own output -----------------------------------------------
    def is_patient_pseudonym(self, value: str) -> bool:
        """True when ``value`` has the shape of this organisation's patient pseudonym."""
        return self._patient_shape.fullmatch(value.strip()) is not None
