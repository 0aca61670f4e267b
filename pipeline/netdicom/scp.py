"""The Storage SCP behind `telerad listen`: pynetdicom, one handler per event, the collector behind it.

* C-STORE: the instance is received to disk as it arrives (pynetdicom's chunked
  receive, ``STORE_RECV_CHUNKED_DATASET``: a large instance never sits in
  memory), with file meta, and that file goes to ``StudyCollector.receive``,
  which checks it at the door (``pipeline.ingress.admit``) and returns once it
  is fsynced and renamed into the spool; only then is 0x0000 answered. A full or
  unwritable spool answers 0xA700 (out of resources: the sender keeps the
  instance and may send it again); an instance refused at the door answers
  0xA900 (its content does not match what it claims: a binary VR of the wrong
  length or multiplicity, a changed duplicate, meta naming another instance) or
  0xC210 (cannot understand: truncated, a giant length, a deflate bomb, a wrong
  or unknown transfer syntax, no UIDs), with the reason in the log; the rest of
  the association and of the study goes on.
* C-ECHO: answered (the handler only counts it).
* Association: calling AE titles outside ``listen_allow`` are rejected by
  pynetdicom itself ("calling AE title not recognised"); accepted, released,
  aborted and rejected associations are counted and audited with AE titles and
  counts only.
* TLS: with ``listen_tls_cert_file`` and ``listen_tls_key_file``; with
  ``listen_tls_ca_file`` as well, a caller without a certificate signed by that
  CA is refused during the handshake.

Log lines name AE titles, addresses and counts, never anything read from a dataset.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, _config as pynetdicom_config, evt
from pynetdicom.sop_class import Verification

from pipeline.exceptions import ConfigError
from pipeline.netdicom.activity import Activity
from pipeline.ingress.admit import InstanceRefused
from pipeline.netdicom.studies import SpoolFullError, StudyCollector
from pipeline.settings import Settings

log = logging.getLogger("telerad.listen")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC210
PROCESSING_FAILURE = 0xC211


def refusal_status(exc: InstanceRefused) -> int:
    """The C-STORE failure status for an instance refused at the door."""
    return DATASET_MISMATCH if exc.mismatch else CANNOT_UNDERSTAND

#: C-STORE Priority (0000,0700) -> a priority hint for the collector (MEDIUM says nothing).
CSTORE_PRIORITY_HINT = {1: "STAT", 2: "ROUTINE"}


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen_settings(settings: Settings) -> None:
    """Refuse an open listener that would take studies from anyone."""
    if not _is_loopback(settings.listen_host) and not settings.listen_allow:
        raise ConfigError(
            f"the listener would accept studies from any AE on {settings.listen_host}: set TELERAD_LISTEN_ALLOW "
            "to the calling AE titles of your modalities and PACS (or bind to 127.0.0.1)"
        )
    if bool(settings.listen_tls_cert_file) != bool(settings.listen_tls_key_file):
        raise ConfigError("TLS needs both TELERAD_LISTEN_TLS_CERT_FILE and TELERAD_LISTEN_TLS_KEY_FILE")
    if settings.listen_tls_ca_file and not settings.listen_tls_cert_file:
        raise ConfigError("TELERAD_LISTEN_TLS_CA_FILE requires TLS: set the certificate and key files as well")


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context, or None when TLS is not configured."""
    if not settings.listen_tls_cert_file:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(settings.listen_tls_cert_file, settings.listen_tls_key_file)
        if settings.listen_tls_ca_file:
            ctx.load_verify_locations(settings.listen_tls_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the listener's TLS files: {exc}") from None
    return ctx


@dataclass
class _AssocCounts:
    calling: str
    stored: int = 0
    failed: int = 0
    out_of_resources: int = 0
    echoes: int = 0
    already_sent: int = 0
    priorities: set[str] = field(default_factory=set)


class StorageSCP:
    """A running Storage SCP feeding a ``StudyCollector``; ``start()`` returns at once."""

    def __init__(self, settings: Settings, collector: StudyCollector, activity: Activity | None = None) -> None:
        check_listen_settings(settings)
        # Receive each C-STORE data set into a file as it arrives, not into memory (process-wide).
        pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
        self.settings, self.collector = settings, collector
        self.activity = activity or collector.activity
        self.ae = AE(ae_title=settings.listen_ae_title)
        for cx in AllStoragePresentationContexts:
            self.ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        self.ae.require_calling_aet = list(settings.listen_allow)
        self.ae.maximum_associations = 32
        self.ae.maximum_pdu_size = 0  # take whatever PDU size the sender offers
        self._server: Any = None
        self._assocs: dict[int, _AssocCounts] = {}
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.settings.listen_port

    def start(self) -> None:
        handlers = [
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_REJECTED, self.on_rejected),
            (evt.EVT_RELEASED, self.on_closed),
            (evt.EVT_ABORTED, self.on_closed),
        ]
        address = (self.settings.listen_host, self.settings.listen_port)
        try:
            self._server = self.ae.start_server(address, block=False, evt_handlers=handlers,
                                                ssl_context=tls_context(self.settings))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {address[0]}:{address[1]} ({exc.strerror or type(exc).__name__}): "
                "choose another --port (TELERAD_LISTEN_PORT) or stop what uses it"
            ) from None
        self.activity.set(listening=f"{self.settings.listen_ae_title}@{self.settings.listen_host}:{self.port}",
                          tls=bool(self.settings.listen_tls_cert_file))
        log.info("listening as %s on %s:%d", self.settings.listen_ae_title, self.settings.listen_host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.activity.set(listening="")
        self.activity.flush(force=True)

    # --- event handlers ----------------------------------------------------------------
    def _counts(self, event: Any) -> _AssocCounts:
        with self._lock:
            return self._assocs.setdefault(id(event.assoc), _AssocCounts(event.assoc.requestor.ae_title.strip()))

    def on_store(self, event: Any) -> int:
        """Acknowledge only what is on disk; refuse what cannot be stored, naming no value."""
        counts = self._counts(event)
        hint = CSTORE_PRIORITY_HINT.get(int(getattr(event.request, "Priority", 0) or 0))
        try:
            try:
                data, move = event.dataset_path, True  # chunked receive: the file pynetdicom wrote
            except AttributeError:
                data, move = event.encoded_dataset(), False
            received = self.collector.receive(data, calling=counts.calling, priority=hint, move=move)
        except SpoolFullError as exc:
            counts.out_of_resources += 1
            log.warning("instance from %s not stored: %s", counts.calling, exc)
            return OUT_OF_RESOURCES
        except InstanceRefused as exc:  # counted and logged (reason only) by the collector
            counts.failed += 1
            status = refusal_status(exc)
            log.warning("instance from %s answered 0x%04X (%s)", counts.calling, status, exc.code)
            return status
        except Exception as exc:  # never echo a value; the sender may retry
            counts.failed += 1
            self.activity.add("instances_refused", ae=counts.calling)
            log.error("instance from %s not stored: unexpected %s", counts.calling, type(exc).__name__)
            return PROCESSING_FAILURE
        if received.duplicate:
            counts.already_sent += 1
        else:
            counts.stored += 1
        if received.priority:
            counts.priorities.add(received.priority)
        return SUCCESS

    def on_echo(self, event: Any) -> int:
        self._counts(event).echoes += 1
        self.activity.add("echoes", ae=event.assoc.requestor.ae_title.strip())
        return SUCCESS

    def on_accepted(self, event: Any) -> None:
        counts = self._counts(event)
        self.activity.add("associations_accepted", ae=counts.calling)

    def on_rejected(self, event: Any) -> None:
        calling = event.assoc.requestor.ae_title.strip()
        self.activity.add("associations_rejected", ae=calling)
        log.warning("association from %s (%s) rejected: calling AE title not allowed", calling,
                    event.assoc.requestor.address)
        _audit(self.settings, "listen.association", outcome="rejected", calling_ae=calling,
               reason_code="calling_ae_not_allowed")

    def on_closed(self, event: Any) -> None:
        with self._lock:
            counts = self._assocs.pop(id(event.assoc), None)
        if counts is None:  # rejected or never accepted
            return
        aborted = event.event is evt.EVT_ABORTED
        self.activity.add("associations_aborted" if aborted else "associations_released", ae=counts.calling)
        log.info("association from %s %s: %d stored, %d already sent, %d refused, %d out of resources",
                 counts.calling, "aborted" if aborted else "released", counts.stored, counts.already_sent,
                 counts.failed, counts.out_of_resources)
        if counts.stored or counts.failed or counts.out_of_resources or counts.already_sent or aborted:
            _audit(self.settings, "listen.association", outcome="aborted" if aborted else "ok",
                   calling_ae=counts.calling, stored=counts.stored, already_sent=counts.already_sent,
                   refused=counts.failed, out_of_resources=counts.out_of_resources,
                   priorities=sorted(counts.priorities))


def _audit(settings: Settings, action: str, **details: Any) -> None:
    from pipeline.audit import AuditLog

    outcome = str(details.pop("outcome", "ok"))
    try:
        AuditLog.from_settings(settings).append(action, actor="telerad-listen", outcome=outcome, **details)
    except Exception as exc:  # a notification: it must not stop the listener answering
        log.error("audit entry %s not written (%s)", action, type(exc).__name__)
