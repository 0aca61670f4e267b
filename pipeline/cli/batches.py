"""`telerad submit`, `worker`, `status`, `retry`, `cancel` and `demo`: batches on the queue.

Queue commands import ``workers`` inside the command, so ``pipeline`` never
imports Celery.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from pipeline.cli.common import parse_assignments, print_table, shown
from pipeline.settings import Settings, load_settings
from pipeline.state import BatchRecord
from pipeline.statestore import open_state_store

console = Console()


def submit(
    path: Path = typer.Argument(..., help="Study folder or .zip to send."),
    priority: Optional[str] = typer.Option(None, "--priority", "-p", help="STAT, URGENT or ROUTINE."),
    org: Optional[str] = typer.Option(None, "--org", help="Organisation prefix (default: settings)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="De-identification profile."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Extra Annex E option (repeatable)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a field: Keyword=value."),
    note: str = typer.Option("", "--note", help="A note for the reader (must hold no PHI)."),
    no_queue: bool = typer.Option(False, "--no-queue", help="Run every step here, without a worker."),
) -> None:
    """Submit a study; prints the batch ID."""
    from pipeline import batch
    from pipeline.locations import check_urls

    settings = load_settings()
    check_urls(settings, broker=not no_queue)  # before anything is recorded
    options = None if option is None else list(settings.options) + list(option)
    batch_id = batch.create_batch(
        settings,
        path,
        priority=priority,
        organization=org,
        profile=profile,
        options=options,
        overrides=parse_assignments(set_),
        note=note,
    )
    if no_queue:
        batch.run_all(settings, batch_id)
    else:
        from workers.dispatch import start_batch

        start_batch(settings, batch_id)
    typer.echo(batch_id)


def worker(
    concurrency: int = typer.Option(os.cpu_count() or 1, "--concurrency", "-c", help="Worker processes."),
    loglevel: str = typer.Option("INFO", "--loglevel", "-l"),
) -> None:
    """Run a Celery worker on the configured broker (embedded by default).

    SIGTERM stops it at once: a running step is stopped and put back on the
    queue (late acknowledgement; steps are idempotent), so another worker
    redoes it. Ctrl-C waits for the running step; Ctrl-C twice stops at once.
    """
    # Celery's SIGTERM is a warm shutdown that waits for the pool without a bound (and was
    # seen to hang in Pool.join); as a cold shutdown it stops the pool and requeues the step.
    os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")
    from workers.worker import app as celery_app

    celery_app.worker_main(
        ["worker", f"--loglevel={loglevel}", f"--concurrency={concurrency}", "--without-gossip", "--without-mingle"]
    )


def status(
    batch_id: Optional[str] = typer.Argument(None, help="One batch; omit to list recent batches."),
    limit: int = typer.Option(20, "--limit", help="How many recent batches to list."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show batches: state, counts, time in each stage, errors."""
    settings = load_settings()
    states = open_state_store(settings)
    if batch_id:
        record = states.get(batch_id)
        if as_json:
            typer.echo(json.dumps(record.to_dict(), indent=2))
        else:
            _print_one(settings, record)
        if record.state == "failed":
            raise typer.Exit(1)
        return
    records = states.all()[:limit]
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in records], indent=2))
        return
    from pipeline.batch import stale_queued_seconds

    def state(r: BatchRecord) -> str:
        stale = stale_queued_seconds(settings, r)
        return r.state if stale is None else f"{r.state} (stale {stale // 60} min)"

    print_table(
        ["priority", "state", "studies", "images", "bytes", "submitted", "stage times", "error", "batch"],
        [[r.priority, state(r), r.counts.get("studies", ""), r.counts.get("images", ""), r.counts.get("bytes", ""),
          r.submitted_at, stage_durations(r, hosts=bool(settings.state_url)),
          r.error or (f"{len(r.warned)} burned-in warning(s)" if r.warned else ""), r.batch_id] for r in records],
        no_wrap=("batch",),
    )
    from pipeline.netdicom.activity import summary_lines

    for line in summary_lines(settings):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


STEP_LABELS = {"deidentify": "deid", "write_manifest": "manifest", "upload": "upload",
               "store_mapping": "mapping", "finalize": "final"}


def _in_pipeline_order(stage_times: dict[str, dict[str, str]]) -> list[tuple[str, dict[str, str]]]:
    """Stage times in the order the steps run (records keep them sorted by name)."""
    from pipeline.batch import STEPS

    rank = {s: i for i, s in enumerate(STEPS)}
    return sorted(stage_times.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


def stage_durations(r: BatchRecord, hosts: bool = False) -> str:
    """Seconds spent in each finished step, e.g. ``deid 4s upload 2s`` (``deid 4s@b`` with ``hosts``)."""
    from datetime import datetime

    parts = []
    for step, times in _in_pipeline_order(r.stage_times):
        if "started" in times and "finished" in times:
            start, end = (datetime.fromisoformat(times[k].replace("Z", "+00:00")) for k in ("started", "finished"))
            where = f"@{r.hosts[step]}" if hosts and step in r.hosts else ""  # several hosts: who ran it
            parts.append(f"{STEP_LABELS.get(step, step)} {int((end - start).total_seconds())}s{where}")
    return " ".join(parts)


def _print_one(settings: Settings, r: BatchRecord) -> None:
    def m(value: object) -> str:
        return shown(value, markup=True)

    console.print(f"[bold]batch[/bold]     {m(r.batch_id)}")
    console.print(f"state     {m(r.state)}")
    console.print(f"priority  {m(r.priority)}   organization {m(r.organization)}")
    console.print(f"profile   {m(r.profile)}  options {m(', '.join(r.options) or '-')}")
    console.print(f"submitted {m(r.submitted_at)}" + (f" on {m(r.received_on)}" if r.received_on else ""))
    from pipeline.batch import stale_queued_seconds

    stale = stale_queued_seconds(settings, r)
    if stale is not None:
        console.print(f"[yellow]waiting[/yellow]   queued {stale // 60} min {stale % 60} s with no worker taking it: "
                      "check that a worker runs on the same TELERAD_BROKER_URL and state, then "
                      f"`telerad retry {m(r.batch_id)}`", highlight=False, soft_wrap=True)
    if r.progress and not r.final:
        p = r.progress
        console.print(f"progress  {m(p['step'])} {p['done']}/{p['total']} files")
    if r.counts:
        console.print("counts    " + ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())))
    for step, times in _in_pipeline_order(r.stage_times):
        where = f" on {r.hosts[step]}" if step in r.hosts else ""  # several hosts: who holds or held it
        console.print(m(f"  {step:15} {times.get('started', '')} -> {times.get('finished', '…')}{where}"))
    if r.takeovers:
        console.print(f"taken over {r.takeovers} time(s) from a host that stopped (see `telerad audit show`)")
    for label, items in (("skipped", r.skipped), ("refused", r.refused), ("warning", r.warned),
                         ("error in", r.errors)):
        for e in items:
            console.print(f"{label} file {e.index}: {shown(e.relpath)}: {shown(e.reason)}", markup=False, soft_wrap=True)
    if r.error:
        console.print(f"[red]error[/red]     {m(r.error)}", highlight=False)
    if r.cancelled:
        c = r.cancelled
        console.print(f"cancelled {m(c.get('at', ''))} by {m(c.get('by', '?'))} "
                      f"(the reason's SHA-256 {m(c.get('reason_sha256', '')[:16])}… is in the audit log)",
                      highlight=False, soft_wrap=True)
    if not r.final or r.state == "failed":
        from pipeline.batch import missing_objects
        from pipeline.exceptions import TeleradError

        try:
            missing = missing_objects(settings, r.batch_id)
        except TeleradError as exc:
            console.print(f"missing   cannot compare with the store now: {m(exc)}", highlight=False)
            missing = None
        if missing:
            console.print(f"missing   {len(missing)} object(s) not in the store yet (no manifest: readers do not see this batch)")
            for key in missing[:20]:
                console.print(f"  {m(key)}", highlight=False, soft_wrap=True)
            if len(missing) > 20:
                console.print(f"  … and {len(missing) - 20} more")


def retry(batch_id: str = typer.Argument(..., help="A failed batch, or one stuck in the queue.")) -> None:
    """Put a failed (or stale queued) batch back on the queue; finished steps are not redone."""
    from pipeline import batch
    from workers.dispatch import start_batch

    settings = load_settings()
    batch.reset_for_retry(settings, batch_id)
    start_batch(settings, batch_id)
    typer.echo(f"{shown(batch_id)} queued again")


def cancel(
    batch_id: str = typer.Argument(..., help="A queued (or stuck queued) or failed batch."),
    reason: str = typer.Option(..., "--reason", help="Why; only its SHA-256 is audited (it may name the patient)."),
) -> None:
    """End a queued or failed batch for good: it never runs or retries, its staged files are removed.

    A running or done batch is refused. An inbox original goes to the inbox's archive
    (or stays in quarantine); the audit log records who cancelled it and the reason's digest.
    """
    import getpass

    from pipeline import batch

    settings = load_settings()
    batch.cancel(settings, batch_id, reason, actor=getpass.getuser())
    typer.echo(f"{shown(batch_id)} cancelled")


def demo(
    timeout: float = typer.Option(120, help="Seconds to wait for the batch."),
) -> None:
    """Make a small synthetic study, run it through a real worker, show the bucket."""
    from pipeline.storage import open_store
    from pipeline.testing import make_study

    settings = load_settings()
    settings.ensure_dirs()
    study = make_study(settings.home / "demo" / f"study-{int(time.time())}", series=2, images=3)
    console.print(f"made a synthetic study of {len(study.files)} images (planted fake identifiers)")
    log_path = settings.home / "demo" / "worker.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli.main", "worker", "--concurrency", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            from pipeline import batch
            from workers.dispatch import start_batch

            batch_id = batch.create_batch(settings, study.root, priority="STAT")
            start_batch(settings, batch_id)
            console.print(f"submitted batch {batch_id}; a worker (pid {proc.pid}) is processing it",
                          soft_wrap=True)
            record = open_state_store(settings).wait_final(batch_id, timeout)
        finally:
            proc.terminate()
            proc.wait(30)
    if record.state != "done":
        console.print(f"[red]batch {record.state}[/red]: {shown(record.error, markup=True)} (worker log: {log_path})")
        raise typer.Exit(1)
    store = open_store(settings.effective_store_url, settings)
    objects = sorted(store.list(f"{batch_id}/"), key=lambda i: i.key)
    images = [o for o in objects if o.key.endswith(".dcm")]
    console.print(f"\n[bold]bucket[/bold] {shown(store.url, markup=True)}  ({len(images)} de-identified images, "
                  f"{sum(o.size for o in images) / 1e6:.1f} MB)")
    for info in objects:
        if not info.key.endswith(".dcm"):
            console.print(f"  {info.size:>8}  {info.key}", highlight=False)
    console.print(f"  {'':>8}  {batch_id}/<cloud study>/<series>/<instance>.dcm  x {len(images)}",
                  highlight=False, soft_wrap=True)
    console.print("\n[bold]Where everything went[/bold]")
    for label, where in (
        ("TELERAD_HOME", f"{settings.home}  (state, secrets, staging; nothing here leaves the site)"),
        ("bucket", f"{store.url}  (what the remote reader sees: images, deid-report.json, signed manifest)"),
        ("mapping store", f"{settings.effective_mapping_url}  (the encrypted re-identification mapping; "
                          "never the bucket)"),
        ("audit log", f"{settings.audit_log_path}  (every act, hash-chained, no PHI)"),
        ("the study", f"{study.root}  (the original, untouched)"),
    ):
        console.print(f"  {label:<14} {shown(where, markup=True)}", highlight=False, soft_wrap=True)
    console.print("\n[bold]Try next[/bold]")
    for cmd, why in (
        (f"telerad status {batch_id}", "counts, stage times, what was skipped and why"),
        (f"telerad reader fetch {batch_id} --dest ./reading", "download and verify it as a reader would"),
        (f"telerad reidentify {batch_id} --reason \"demo\"", "the authorised, audited way back to the patient"),
    ):
        console.print(f"  {cmd}\n      {why}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(submit)
    app.command()(worker)
    app.command()(status)
    app.command()(retry)
    app.command()(cancel)
    app.command()(demo)
