"""The audit log: append-only JSON lines, hash-chained, free of PHI.

Each line is one entry::

    {"seq": 7, "ts": "2026-11-21T10:00:00.123456Z", "action": "reidentify",
     "batch_id": "...", "actor": "alice", "outcome": "ok",
     "os_user": "radiology", "uid": 1001, "host": "...", "pid": 123,
     "details": {"cloud_study_id": "ACME-...", "reason_length": 42, "reason_hmac": "..."},
     "prev": "<hash of entry 6>", "hash": "<SHA-256 of this entry without 'hash'>"}

``verify()`` recomputes every hash and link, so an edited, deleted, inserted or
reordered line is reported with its line number. Deleting the *last* lines, or
rewriting the whole file with fresh hashes, leaves a chain that is valid on its
own: the optional mirror (one immutable object per entry in the mapping store)
is what catches those, and ``verify()`` compares against it when configured.

Appends from several processes are serialised with an exclusive ``flock`` on the
log file itself, held while the last entry is read and the new one written.

Details never hold PHI: only keys from ``SAFE_DETAILS`` are kept, and only with
values of a safe shape (numbers, booleans, short identifiers, lists and dicts of
those). Anything else is redacted (its key is listed under ``redacted``) or, with
``strict=True``, refused with ``AuditError``. Free text, such as an operator's
reason, never goes in: record its length and a keyed digest (``reason_digest``).

Who did it: ``os_user`` (from the process's effective UID, not from ``$USER``,
which anyone can set), ``uid`` and ``host`` are recorded for every entry by the
log itself. ``actor`` is only what the caller *claims* (``--actor``, or the login
name by default): useful to name a person behind a shared account, never proof.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import pwd
import re
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from pipeline.exceptions import AuditError, TeleradError
from pipeline.locking import flocked
from pipeline.settings import Settings

log = logging.getLogger(__name__)

GENESIS = "0" * 64
MIRROR_PREFIX = "audit/"

#: Detail keys whose value must be a whole number (counts, sizes, lengths).
COUNT_DETAILS = frozenset(
    {
        "study_count", "series_count", "image_count", "file_count", "skipped_count",
        "quarantined_count", "refused_count", "object_count", "byte_count",
        "studies", "series", "images", "files", "skipped", "refused", "bytes",
        "rewrapped", "already_current", "failed", "mismatched", "missing",
        "reason_length", "studies_returned", "attempt", "findings",
        # DICOM network (listener associations, deliveries)
        "instances", "stored", "already_sent", "out_of_resources", "sent", "attempts",
        "pixel_warnings", "pixels_masked", "frames",
    }
)
#: Other detail keys that may appear in an entry (their values are shape-checked too).
SAFE_DETAILS = COUNT_DETAILS | frozenset(
    {
        "cloud_study_id", "cloud_study_ids", "counts", "profile", "options", "cid7050_codes",
        "priority", "organization", "origin", "reason_code", "reason_hmac", "reason_sha256", "error_type",
        "error_code", "duration_s", "step", "state", "store", "store_scheme", "key_provider",
        "key_id", "key_version", "retired_versions", "manifest_sha256", "share_expires_at",
        "destination_scheme", "verified", "worker", "task_id", "pseudonym_key_id",
        # DICOM network: AE titles only, never anything read from a dataset
        "calling_ae", "calling_ae_titles", "called_ae", "priorities", "follow_up",
        # HTTP gateway: what an API key may do
        "scopes",
        "review_id", "boxes", "decision",
    }
)
_SAFE_STR = re.compile(r"^[A-Za-z0-9._:@+=/-]{0,128}$")
_ACTION = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_ACTOR = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")
_OUTCOME = re.compile(r"^[a-z][a-z_-]{0,31}$")
REDACTED = "[redacted]"


def _safe_value(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, str):
        return bool(_SAFE_STR.match(value))
    if depth < 2 and isinstance(value, (list, tuple)):
        return len(value) <= 256 and all(_safe_value(v, depth + 1) for v in value)
    if depth < 2 and isinstance(value, dict):
        return len(value) <= 64 and all(
            isinstance(k, str) and _SAFE_STR.match(k) and _safe_value(v, depth + 1)
            for k, v in value.items()
        )
    return False


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of an entry without its own ``hash``."""
    return hashlib.sha256(_canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def reason_digest(secret: bytes, text: str) -> str:
    """A keyed digest of free text (which may hold PHI): lets an auditor match a reason, not read it."""
    return hmac.new(secret, b"telerad audit reason\0" + text.strip().encode(), "sha256").hexdigest()[:32]


def os_user() -> str:
    """The account this process runs as, from the OS (``$USER`` and ``$LOGNAME`` can say anything)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a UID with no passwd entry (containers)
        return f"uid-{os.geteuid()}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Problem:
    """One break in the chain, with the 1-based line number where it shows."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class AuditLog:
    """A hash-chained JSON-lines audit log; ``mirror`` is an optional ObjectStore copy."""

    def __init__(self, path: Path | str, *, mirror: Any = None, strict: bool = False) -> None:
        self.path = Path(path)
        self.mirror = mirror
        self.strict = strict

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    @classmethod
    def from_settings(cls, settings: Settings, *, strict: bool = False) -> "AuditLog":
        """The log at ``settings.audit_log_path``; mirrored when ``audit_mirror`` is on."""
        mirror = None
        if settings.audit_mirror:
            from pipeline.storage import open_store

            mirror = open_store(settings.effective_mapping_url, settings)
        return cls(settings.audit_log_path, mirror=mirror, strict=strict)

    # --- writing -----------------------------------------------------------------
    def _clean(self, field: str, value: Any, pattern: re.Pattern, redacted: list[str]) -> Any:
        if value is None or (isinstance(value, str) and pattern.match(value)):
            return value
        if self.strict:
            raise AuditError(f"audit field {field!r} has a value that could hold PHI; refusing it")
        redacted.append(field)
        return REDACTED

    def _details(self, details: dict[str, Any], redacted: list[str]) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        for key, value in sorted(details.items()):
            if key in COUNT_DETAILS:
                ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
            else:
                ok = key in SAFE_DETAILS and _safe_value(value)
            if ok:
                clean[key] = list(value) if isinstance(value, tuple) else value
                continue
            if self.strict:
                why = "is not an allowed audit detail" if key not in SAFE_DETAILS else (
                    "has a value that could hold PHI")
                raise AuditError(f"audit detail {key!r} {why}; refusing it")
            redacted.append(key)
        return clean

    def append(
        self,
        action: str,
        *,
        batch_id: str | None = None,
        actor: str | None = None,
        outcome: str = "ok",
        **details: Any,
    ) -> dict[str, Any]:
        """Append one entry (under an exclusive lock) and return it."""
        if not isinstance(action, str) or not _ACTION.match(action):
            raise AuditError(f"invalid audit action {action!r}: use lower-case words like 'reidentify'")
        redacted: list[str] = []
        entry: dict[str, Any] = {
            "ts": _now(),
            "action": action,
            "batch_id": self._clean("batch_id", batch_id, _ID, redacted),
            "actor": self._clean("actor", actor, _ACTOR, redacted),
            "outcome": self._clean("outcome", outcome, _OUTCOME, redacted),
            "os_user": self._clean("os_user", os_user(), _ACTOR, redacted),
            "uid": os.geteuid(),
            "host": self._clean("host", socket.gethostname()[:64], _ACTOR, redacted),
            "pid": os.getpid(),
            "details": self._details(details, redacted),
        }
        if redacted:
            entry["redacted"] = sorted(set(redacted))
            log.warning("audit entry %r: redacted fields %s", action, ", ".join(entry["redacted"]))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with flocked(self.path, flags=os.O_RDWR | os.O_CREAT | os.O_APPEND) as fd:
                seq, prev, ends_clean = self._tail(fd)
                entry = {"seq": seq + 1, **entry, "prev": prev}
                entry["hash"] = entry_hash(entry)
                line = _canonical(entry) + b"\n"
                if not ends_clean:
                    line = b"\n" + line  # never glue an entry onto a torn last line
                _write_all(fd, line)
                os.fsync(fd)
        except OSError as exc:
            raise AuditError(
                f"cannot write the audit log {self.path} ({exc.strerror}); check its folder's "
                "permissions and free space"
            ) from None
        self._mirror(entry)
        return entry

    def _tail(self, fd: int) -> tuple[int, str, bool]:
        """(seq, hash) of the last complete entry, and whether the file ends with a newline."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, GENESIS, True
        chunk = 64 * 1024
        start = size
        data = b""
        ends_clean = os.pread(fd, 1, size - 1) == b"\n"
        while start > 0:
            start = max(0, start - chunk)
            data = os.pread(fd, size - start, start)
            lines = data.split(b"\n")
            candidates = lines if start == 0 else lines[1:]  # the first may be cut
            for raw in reversed(candidates):
                # Chain from the last entry as written, even an edited one: verify()
                # then reports the edit once instead of a cascade after it.
                entry = _parse(raw, check_hash=False)
                if entry is not None:
                    return entry["seq"], entry["hash"], ends_clean
            chunk *= 4
        return 0, GENESIS, ends_clean

    def _mirror(self, entry: dict[str, Any]) -> None:
        if self.mirror is None:
            return
        try:
            self.mirror.put_bytes(
                mirror_key(entry["seq"]),
                _canonical(entry),
                content_type="application/json",
                metadata={"audit_seq": str(entry["seq"]), "uploaded_at": entry["ts"]},
            )
        except TeleradError as exc:
            # The local log is the record; a missed mirror copy shows in `audit verify`.
            log.warning("audit entry %d not mirrored: %s", entry["seq"], type(exc).__name__)

    # --- reading -------------------------------------------------------------------
    def lines(self) -> Iterator[tuple[int, bytes]]:
        try:
            with open(self.path, "rb") as fh:
                for n, raw in enumerate(fh, start=1):
                    yield n, raw.rstrip(b"\n")
        except FileNotFoundError:
            return

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every well-formed entry, in file order (use verify() to trust them)."""
        for _n, raw in self.lines():
            entry = _parse(raw)
            if entry is not None:
                yield entry

    def verify(self, *, mirror: bool = True) -> list[str]:
        """Problems found in the chain (empty when intact), each naming its line."""
        return [str(p) for p in self.problems(mirror=mirror)]

    def problems(self, *, mirror: bool = True) -> list[Problem]:
        problems: list[Problem] = []
        prev_hash, prev_seq, count = GENESIS, 0, 0
        by_seq: dict[int, dict[str, Any]] = {}
        seen: dict[str, int] = {}  # hash -> line
        for n, raw in self.lines():
            count = n
            if not raw.strip():
                problems.append(Problem(n, "empty line (an entry was blanked out)"))
                continue
            entry = _parse(raw, check_hash=False)
            if entry is None:
                problems.append(Problem(n, "not a valid audit entry (edited or torn)"))
                continue
            if entry_hash(entry) != entry["hash"]:
                problems.append(Problem(n, f"entry seq {entry['seq']} was edited (its hash does not match)"))
            elif entry["prev"] != prev_hash:
                if entry["prev"] in seen and entry["seq"] > prev_seq:
                    m = seen[entry["prev"]]
                    problems.append(Problem(
                        n, f"entry seq {entry['seq']} belongs right after line {m}, not after seq "
                           f"{prev_seq}: entries were reordered"))
                elif entry["seq"] == prev_seq + 1:
                    problems.append(Problem(
                        n, f"entry seq {entry['seq']} does not follow the entry before it: "
                           "the line before was edited or replaced"))
                elif entry["seq"] > prev_seq + 1:
                    missing = entry["seq"] - prev_seq - 1
                    problems.append(Problem(
                        n, f"entry seq {entry['seq']} follows seq {prev_seq}: {missing} "
                           f"entr{'y is' if missing == 1 else 'ies are'} missing here (deleted or moved)"))
                else:
                    problems.append(Problem(
                        n, f"entry seq {entry['seq']} is out of order (after seq {prev_seq}): "
                           "entries were reordered or inserted"))
            prev_hash, prev_seq = entry["hash"], entry["seq"]
            seen.setdefault(entry["hash"], n)
            by_seq.setdefault(entry["seq"], entry)
        if mirror and self.mirror is not None:
            problems += self._check_mirror(by_seq, count)
        return problems

    def _check_mirror(self, local: dict[int, dict[str, Any]], lines: int) -> list[Problem]:
        problems: list[Problem] = []
        last_local = max(local, default=0)
        try:
            infos = list(self.mirror.list(MIRROR_PREFIX))
        except TeleradError as exc:
            return [Problem(lines, f"cannot read the audit mirror ({type(exc).__name__})")]
        for info in sorted(infos, key=lambda i: i.key):
            try:
                mirrored = json.loads(self.mirror.get_bytes(info.key))
                seq = int(mirrored["seq"])
            except (TeleradError, ValueError, KeyError, TypeError):
                problems.append(Problem(lines, f"mirror object {info.key} is unreadable"))
                continue
            if seq > last_local:
                problems.append(Problem(
                    lines, f"entry seq {seq} is in the mirror but not in the log: "
                           "the log was truncated after line " + str(lines)))
            elif seq in local and local[seq]["hash"] != mirrored.get("hash"):
                problems.append(Problem(
                    lines, f"entry seq {seq} differs from its mirror copy: the log was rewritten"))
            elif seq not in local:
                problems.append(Problem(lines, f"entry seq {seq} is in the mirror but not in the log"))
        return problems


def mirror_key(seq: int) -> str:
    return f"{MIRROR_PREFIX}{seq:012d}.json"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _parse(raw: bytes, *, check_hash: bool = True) -> dict[str, Any] | None:
    """An entry if ``raw`` is one (with a valid own hash when ``check_hash``), else None."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("seq"), int)
        or not isinstance(entry.get("hash"), str)
        or not isinstance(entry.get("prev"), str)
    ):
        return None
    if check_hash and entry_hash(entry) != entry["hash"]:
        return None
    return entry
