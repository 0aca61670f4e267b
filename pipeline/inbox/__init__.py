"""The watched inbox: take complete studies once, submit them, archive or quarantine them.

```python
from pipeline.inbox import Watcher
watcher = Watcher(inbox, settings, submit=my_submit, dispatch=my_dispatch)
watcher.run(stop_event)          # or watcher.recover(); watcher.scan_once() in tests
```
"""

from pipeline.inbox.claim import Claim, InboxLayout, Spool
from pipeline.inbox.disposal import archive_original, dispose_final, quarantine_original
from pipeline.inbox.retention import purge_archive
from pipeline.inbox.sidecar import SidecarError, Submission, load_sidecar, parse_sidecar
from pipeline.inbox.watcher import InboxEvent, SubmissionRequest, Watcher, WatcherConfig

__all__ = [
    "Claim",
    "InboxEvent",
    "InboxLayout",
    "SidecarError",
    "Spool",
    "Submission",
    "SubmissionRequest",
    "Watcher",
    "WatcherConfig",
    "archive_original",
    "dispose_final",
    "load_sidecar",
    "parse_sidecar",
    "purge_archive",
    "quarantine_original",
]
