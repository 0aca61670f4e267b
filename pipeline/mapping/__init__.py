"""The encrypted re-identification mapping: envelope AES-256-GCM records, keys, re-identification.

```python
from pipeline.mapping import MappingStore, reidentify
store = MappingStore.from_settings(settings)
store.put(batch_id, mapping)          # ciphertext only, object key BATCH_ID.map
store.get(batch_id)                   # KeyError_ when the key is missing or wrong
reidentify(settings, batch_id, cloud_study_id, reason="...", actor="alice")  # audited
```
"""

from pipeline.mapping.keys import Kek, KeyRef, Keyring, KmsKek, LocalKek, LocalKeyringFile
from pipeline.mapping.reidentify import (
    REASON_CODES,
    ReidentificationRefused,
    ReidentifiedStudy,
    reidentify,
)
from pipeline.mapping.store import MappingStore, RotationReport, check_batch_id, pending_mapping_store

__all__ = [
    "Kek",
    "KeyRef",
    "Keyring",
    "KmsKek",
    "LocalKek",
    "LocalKeyringFile",
    "MappingStore",
    "REASON_CODES",
    "ReidentificationRefused",
    "ReidentifiedStudy",
    "RotationReport",
    "check_batch_id",
    "pending_mapping_store",
    "reidentify",
]
