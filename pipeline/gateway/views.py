"""Batch records as the API and the console show them: ages, targets, stage times, no source path.

A record's ``source`` may name a local folder (often after the patient), so it is
never shown; everything else ``telerad status`` shows is.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pipeline.batch import STEPS
from pipeline.gateway.models import BatchDetail, BatchSummary, FileIssue, StageTime
from pipeline.settings import Priority, Settings
from pipeline.state import BatchRecord, BatchState



def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def manifest_key(settings: Settings, batch_id: str) -> str:
    prefix = settings.key_prefix.strip("/")
    return f"{prefix}/{batch_id}/manifest.json" if prefix else f"{batch_id}/manifest.json"


def _stages(record: BatchRecord) -> dict[str, StageTime]:
    out = {}
    order = {step: i for i, step in enumerate(STEPS)}  # records store them sorted by name
    for step, times in sorted(record.stage_times.items(), key=lambda kv: order.get(kv[0], len(order))):
        start, end = _when(times.get("started")), _when(times.get("finished"))
        out[step] = StageTime(started=times.get("started"), finished=times.get("finished"),
                              seconds=round((end - start).total_seconds(), 3) if start and end else None)
    return out


def summary(settings: Settings, record: BatchRecord, now: datetime | None = None) -> BatchSummary:
    now = now or datetime.now(timezone.utc)
    submitted = _when(record.submitted_at) or now
    end = now
    if record.state == BatchState.DONE.value:
        end = _when(record.stage_times.get("finalize", {}).get("finished")) or _when(record.updated_at) or now
    elif record.state in (BatchState.FAILED.value, BatchState.CANCELLED.value):
        end = _when(record.updated_at) or now
    waiting = max(0.0, (end - submitted).total_seconds())
    target = int(settings.gateway_targets.get(record.priority, 0))
    return BatchSummary(
        batch_id=record.batch_id, priority=record.priority, state=record.state,
        organization=record.organization, origin=record.origin,
        submitted_at=record.submitted_at, updated_at=record.updated_at,
        age_seconds=round(max(0.0, (now - submitted).total_seconds()), 3),
        waiting_seconds=round(waiting, 3), target_seconds=target,
        over_target=bool(target) and waiting > target,
        stages=_stages(record), counts=dict(record.counts), progress=dict(record.progress),
        error=record.error,
    )


def detail(settings: Settings, record: BatchRecord, manifest_available: bool) -> BatchDetail:
    base = summary(settings, record).model_dump()

    def issues(items) -> list[FileIssue]:
        return [FileIssue(index=e.index, relpath=e.relpath, reason=e.reason) for e in items]

    return BatchDetail(
        **base, profile=record.profile, options=list(record.options), note=record.note,
        steps_done=list(record.steps_done), skipped=issues(record.skipped),
        refused=issues(record.refused), errors=issues(record.errors),
        manifest_key=manifest_key(settings, record.batch_id), manifest_available=manifest_available,
    )


def by_priority(rows: list[BatchSummary]) -> list[BatchSummary]:
    """STAT first, then URGENT, then ROUTINE; within one, the longest waiting first."""
    return sorted(rows, key=lambda r: (Priority.rank_of(r.priority), r.submitted_at))
