"""`telerad watch` and `telerad up`: a watched inbox, alone or with its workers.

Lines printed name batches and claims by ID; a study's folder name (often a
patient's name) is shown only with ``--show-names``, for an operator at the
console, never by default, since console output is often shipped to logs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console

from pipeline.cli.common import shown
from pipeline.exceptions import ConfigError
from pipeline.locations import check_urls
from pipeline.settings import Settings, load_settings

console = Console(highlight=False, soft_wrap=True)


def make_submitter(settings: Settings) -> tuple[Callable[..., str], Callable[[str], None]]:
    """The watcher's collaborators: record a batch (``create_batch``), then queue it (``start_batch``)."""
    from pipeline.batch import create_batch

    def submit(source: Path, request: Any) -> str:
        return create_batch(
            settings,
            source,
            priority=request.priority.value if request.priority else None,
            organization=request.organization,
            overrides=request.overrides or None,
            note=request.note,
            origin="inbox",
        )

    def dispatch(batch_id: str) -> None:
        from workers.dispatch import start_batch

        start_batch(settings, batch_id)

    return submit, dispatch


class Printer:
    """A notification handler: one line per study taken and per batch finished."""

    def __init__(self, show_names: bool = False) -> None:
        self.show_names = show_names

    def __call__(self, e: Any) -> None:
        from datetime import datetime

        t = datetime.now().strftime("%H:%M:%S")
        name = f"  [dim]{shown(e.local_name, markup=True)}[/dim]" if self.show_names and e.local_name else ""
        prio = shown(f"{e.priority:<8}", markup=True) if e.priority else " " * 8
        reason = shown(e.reason, markup=True) if getattr(e, "reason", None) else ""
        if e.kind == "taken":
            console.print(f"{t} [cyan]taken[/cyan]     claim {e.claim_id[:8]}  {prio}{name}")
        elif e.kind == "submitted":
            console.print(f"{t} [blue]queued[/blue]    batch {e.batch_id}  {prio}{name}")
        elif e.kind == "refused":
            console.print(f"{t} [red]refused[/red]   claim {e.claim_id[:8]}  -> {e.where}/: {reason}{name}")
        elif e.kind == "retrying":
            console.print(f"{t} [yellow]waiting[/yellow]   claim {e.claim_id[:8]}  ({reason}; will retry)")
        elif e.kind == "finished" and e.state == "done":
            console.print(f"{t} [green]done[/green]      batch {e.batch_id}  {prio}{name}")
        elif e.kind == "finished":
            where = f"  -> {e.where}/" if e.where else ""
            console.print(f"{t} [red]failed[/red]    batch {e.batch_id}  {prio}{reason}{where}{name}")


class BatchProgress:
    """Progress bars for the batches this watcher queued, read from their state records.

    A notification handler (it only listens) plus a drawing loop; bars appear once
    a step reports progress and vanish when the batch is done or failed.
    """

    def __init__(self, settings: Settings) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from pipeline.statestore import open_state_store

        self.states = open_state_store(settings)
        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True,
        )
        self.tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, e: Any) -> None:
        with self._lock:
            if e.kind == "submitted" and e.batch_id not in self.tasks:
                self.tasks[e.batch_id] = self.bars.add_task(f"batch {e.batch_id[:8]} queued", total=None)
            elif e.kind == "finished" and e.batch_id in self.tasks:
                self.bars.remove_task(self.tasks.pop(e.batch_id))

    def refresh(self) -> None:
        with self._lock:
            for batch_id, task in list(self.tasks.items()):
                try:
                    record = self.states.get(batch_id)
                except Exception:  # a record being replaced; next refresh reads it
                    continue
                p = record.progress or {}
                if p and not record.final:
                    self.bars.update(
                        task, description=f"batch {batch_id[:8]} {p['step']}",
                        completed=p["done"], total=p["total"],
                    )

    def run(self, stop: threading.Event) -> None:
        with self.bars:
            while not stop.wait(0.5):
                self.refresh()


def _inbox_path(inbox: Optional[Path], settings: Settings) -> Path:
    configured = settings.inbox_dir
    if inbox is None and not configured:
        raise ConfigError("no inbox given: pass INBOX, or set TELERAD_INBOX_DIR")
    return (inbox or Path(configured)).expanduser().absolute()


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _watcher(inbox: Path, settings: Settings, quiet: Optional[float], polling: Optional[bool], show_names: bool):
    from pipeline.inbox.watcher import Watcher, WatcherConfig

    submit, dispatch = make_submitter(settings)
    config = WatcherConfig.from_settings(settings, quiet_seconds=quiet, polling=polling)
    bars = BatchProgress(settings)
    watcher = Watcher(inbox, settings, submit, dispatch=dispatch, config=config, notify=[Printer(show_names), bars])
    return watcher, bars


def _start_listener(settings: Settings) -> Any:
    """The DICOM listener of `telerad up` (TELERAD_LISTEN_PORT set), queuing as `telerad listen` does."""
    from pipeline.cli.listen import queue_batch
    from pipeline.netdicom.listener import Listener

    return Listener(settings, queue_batch(settings)).start()


def _run_watcher(watcher: Any, bars: BatchProgress, stop: threading.Event) -> None:
    """The watcher in this thread, its progress bars in another, until ``stop``."""
    drawer = threading.Thread(target=bars.run, args=(stop,), daemon=True)
    drawer.start()
    try:
        watcher.run(stop)
    finally:
        stop.set()
        drawer.join(5)


INBOX_ARG = typer.Argument(None, help="Folder to watch (default: the inbox_dir setting).")
QUIET_OPT = typer.Option(None, "--quiet-seconds", help="Take a study after this long without changes.")
POLL_OPT = typer.Option(None, "--polling/--inotify", help="Poll (network shares) instead of inotify.")
NAMES_OPT = typer.Option(False, "--show-names", help="Also print each study's folder name (may hold PHI).")


def watch(
    inbox: Optional[Path] = INBOX_ARG,
    quiet_seconds: Optional[float] = QUIET_OPT,
    polling: Optional[bool] = POLL_OPT,
    show_names: bool = NAMES_OPT,
) -> None:
    """Watch INBOX; submit each complete study once (stat/, urgent/, routine/ set the priority)."""
    settings = load_settings()
    check_urls(settings)  # a bad store, mapping or broker URL stops us here, not in a worker
    path = _inbox_path(inbox, settings)
    watcher, bars = _watcher(path, settings, quiet_seconds, polling, show_names)
    stop = threading.Event()
    _stop_on_signals(stop)
    console.print(f"watching {shown(path, markup=True)} (Ctrl-C to stop)")
    _run_watcher(watcher, bars, stop)
    console.print("watcher stopped")


def worker_command(concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "workers.worker", "worker",
        "--loglevel=INFO", "--concurrency", str(concurrency), "--without-gossip", "--without-mingle",
    ]


def stop_worker(proc: subprocess.Popen, timeout: float) -> int:
    """Warm shutdown (one SIGTERM to the main process: running tasks finish), then SIGKILL."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            console.print("[yellow]worker did not stop in time; killing it (its tasks will be redelivered)[/yellow]")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
    return proc.wait()


def up(
    inbox: Optional[Path] = INBOX_ARG,
    concurrency: int = typer.Option(
        max(1, (os.cpu_count() or 2) - 1), "--concurrency", "-c", help="Worker processes."
    ),
    quiet_seconds: Optional[float] = QUIET_OPT,
    polling: Optional[bool] = POLL_OPT,
    show_names: bool = NAMES_OPT,
    stop_timeout: float = typer.Option(120.0, "--stop-timeout", help="Seconds to let running tasks finish."),
) -> None:
    """Start a watcher and a worker pool together on the current settings; Ctrl-C stops both.

    With ``TELERAD_LISTEN_PORT`` set, a DICOM listener (`telerad listen`) runs too; the
    inbox is then optional.
    """
    settings = load_settings()
    check_urls(settings)  # a bad store, mapping or broker URL stops us here, not in a worker
    listening = bool(settings.listen_port)
    path = _inbox_path(inbox, settings) if (inbox or settings.inbox_dir or not listening) else None
    watcher, bars = _watcher(path, settings, quiet_seconds, polling, show_names) if path else (None, None)
    stop = threading.Event()
    _stop_on_signals(stop)
    listener = _start_listener(settings) if listening else None
    # Its own session: a terminal's Ctrl-C reaches only us, and we send the worker exactly
    # one SIGTERM (a second signal would make Celery abandon running tasks).
    proc = subprocess.Popen(worker_command(concurrency), start_new_session=True)
    broker = "embedded broker" if settings.embedded_broker else "Redis broker"
    what = [f"watching {shown(path, markup=True)}"] if path else []
    if listener is not None:
        what.append(f"listening for DICOM as {shown(settings.listen_ae_title, markup=True)} on "
                    f"{settings.listen_host}:{listener.port}")
    console.print(f"worker pool started (pid {proc.pid}, {concurrency} processes, {broker}); {'; '.join(what)} (Ctrl-C to stop)")

    def worker_died() -> None:
        proc.wait()
        stop.set()

    threading.Thread(target=worker_died, daemon=True).start()
    try:
        if watcher is not None:
            _run_watcher(watcher, bars, stop)
        else:
            stop.wait()
    finally:
        if listener is not None:
            listener.stop()
        died = proc.poll() is not None
        code = stop_worker(proc, stop_timeout)
    if died:
        console.print(f"[red]the worker pool exited (code {code}); watcher stopped[/red]")
        raise typer.Exit(1)
    console.print(("watcher" if watcher is not None else "listener") + " and workers stopped")


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)
    app.command("up")(up)
