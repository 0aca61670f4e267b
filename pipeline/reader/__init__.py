"""The reader's side: list complete batches, fetch and verify one, share it by links."""

from pipeline.reader.durations import parse_duration
from pipeline.reader.fetch import FetchError, FetchResult, fetch_batch
from pipeline.reader.listing import BatchSummary, list_batches
from pipeline.reader.share import (
    SharedBatch,
    ShareExpiredError,
    ShareSignatureError,
    create_share,
    open_share,
    sign_share,
    verify_share,
)

__all__ = [
    "BatchSummary",
    "FetchError",
    "FetchResult",
    "ShareExpiredError",
    "ShareSignatureError",
    "SharedBatch",
    "create_share",
    "fetch_batch",
    "list_batches",
    "open_share",
    "parse_duration",
    "sign_share",
    "verify_share",
]
