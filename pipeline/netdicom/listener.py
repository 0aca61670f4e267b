"""A running listener: the Storage SCP, its study collector, and the loop that closes stable studies.

`telerad listen` runs one alone; `telerad up` runs one beside its watcher and
workers when ``listen_port`` is set. The caller passes the submit service
(``pipeline.ingress.SubmitService``: how a closed study is recorded and queued),
so this module needs neither the batch nor a queue.
"""

from __future__ import annotations

import threading
from pipeline.ingress.ticket import SubmitService
from pipeline.netdicom.activity import Activity, listener_path
from pipeline.netdicom.scp import StorageSCP
from pipeline.netdicom.studies import StudyCollector
from pipeline.settings import Settings


class Listener:
    """``start()`` returns once the port is open; ``stop()`` closes it and leaves open studies in the spool."""

    def __init__(self, settings: Settings, service: SubmitService, *, close_interval: float = 0.5) -> None:
        self.settings = settings
        self.activity = Activity(listener_path(settings))
        self.collector = StudyCollector(settings, service=service, activity=self.activity)
        self.scp = StorageSCP(settings, self.collector, self.activity)
        self.close_interval = close_interval
        self._stop = threading.Event()
        self._closer: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.scp.port

    def start(self) -> "Listener":
        self.collector.close_stable()  # what a previous run left closed or stable goes first
        self.scp.start()
        self.activity.set(stable_seconds=self.collector.stable_seconds, spool=str(self.collector.spool))
        self._closer = threading.Thread(target=self.collector.run, args=(self._stop, self.close_interval),
                                        name="telerad-close-stable", daemon=True)
        self._closer.start()
        return self

    def stop(self) -> None:
        self.scp.stop()
        self._stop.set()
        if self._closer is not None:
            self._closer.join(30)
        self.activity.flush(force=True)
