"""`telerad anonymize`: de-identify a folder or ZIP into a folder or ZIP, on every core, without a queue.

The same study runner as a batch (``pipeline.run``: the same engine, profile,
options and keyed pseudonyms, so the same study gets the same pseudonyms here
and in a batch), with its pool of processes. Work is handed out in chunks of
files from the same folder (in practice a series), so a process pays for its
engine once and the pool's messages stay few; each chunk is kept to a bounded
number of bytes so a multi-frame series does not leave the other cores idle.

Each file is checked by the pipeline's leak verifier in the process that
de-identified it, on its encoded header before a byte of it is written
(``--no-verify`` turns that off); the pixel bytes are copied unchanged. So
DEST never holds, even for a moment, a file that failed; refused (burned-in
policy) and failed files are never written under DEST at all. ``--quarantine DIR`` copies them there, each
with a ``.reason.txt`` beside it.

A ZIP source is unpacked with ``pipeline.zipsafe.safe_extract`` into a
temporary folder that is removed afterwards; ``--zip`` writes DEST as a ZIP
(to a temporary name, then renamed). ``--dry-run`` writes nothing: each file is
de-identified into a scratch folder and deleted at once, and the engine's
per-file action counts are printed (keywords and actions only, never values).

It writes de-identified files only: no manifest, no upload, and no
re-identification mapping (submit the study with ``telerad submit`` when the
result must be re-identifiable). Exit codes: 0 done, 1 a file failed, 2 the
command could not start (bad arguments, unsafe ZIP, bad profile).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional

import typer

from pipeline import study
from pipeline.cli.common import shown
from pipeline.run import ProcessPool, Recipe, StudyRunner, Verify, chunks
from pipeline.run.source import submitted_name
from pipeline.settings import Settings

__all__ = ["anonymize", "chunks", "register", "run"]

ZIP_LEVEL = 1  # fast deflate: pixel data gains little from harder compression


def run(src: Path, out: Path | None, *, jobs: int, runner: StudyRunner, scratch: Path,
        walked: study.Walk | None = None, advance: Callable[[int], None] | None = None) -> dict[str, Any]:
    """De-identify ``src`` into ``out`` with ``jobs`` processes (the study runner's pool); returns the summary.

    Each process writes into ``scratch`` (on the same disk as ``out``); the
    runner places every file under ``out`` through ``study.Placement``, so
    duplicates are decided in one place and no file overwrites another. With
    a plan nothing is kept (``out`` is None). Ctrl-C stops the processes; the
    summary then says ``interrupted`` and lists the files not written.
    ``advance(n)`` is called as files are done.
    """
    result = runner.run(walked or study.walk(src), dest=out, scratch=scratch, executor=ProcessPool(jobs),
                        advance=advance)
    return result.summary()


# --- around the run: sources, destinations, quarantine ---------------------------------------
def _unpack(zip_path: Path, settings: Settings, stack: ExitStack) -> Path:
    """Unpack a ZIP source safely into a private temporary folder, removed when ``stack`` closes."""
    from pipeline.zipsafe import ZipLimits, safe_extract

    tmp = Path(tempfile.mkdtemp(prefix=".anonymize-unpacked-", dir=settings.home))
    stack.callback(shutil.rmtree, tmp, True)
    return safe_extract(zip_path, tmp / "source", ZipLimits.from_settings(settings))


def _work_dir(beside: Path, stack: ExitStack, what: str) -> Path:
    """A private folder beside ``beside`` (same disk, so files move by rename), removed afterwards."""
    beside.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{beside.name}.{what}-", dir=beside.parent))
    stack.callback(shutil.rmtree, tmp, True)
    return tmp


def _write_zip(tree: Path, written: list[str], dest: Path, advance: Callable[[int], None] | None) -> int:
    """Write ``written`` (paths under ``tree``) into ``dest`` atomically: a temporary name, then rename."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=ZIP_LEVEL,
                                 allowZip64=True) as zf:
                for rel in sorted(written):
                    zf.write(tree / rel, arcname=rel)
                    if advance:
                        advance(1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest.stat().st_size


def _quarantine(src_root: Path, qdir: Path, summary: dict[str, Any]) -> int:
    """Copy refused and failed files into ``qdir`` (same relative paths), each with a reason file."""
    n = 0
    for outcome in ("refused", "failed"):
        for item in summary[outcome]:
            source = src_root / item["file"]
            target = qdir / item["file"]
            if not source.is_file():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            # The engine's reasons name checks and tags, never values.
            target.with_name(target.name + ".reason.txt").write_text(
                f"outcome: {outcome}\nreason: {item['reason']}\n", encoding="utf-8")
            n += 1
    return n


def _inside(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b)


def _check_paths(src: Path, out: Path | None, *, to_zip: bool, quarantine: Path | None,
                 dry_run: bool, summary_only: bool) -> None:
    from pipeline.exceptions import SubmissionError

    if summary_only and not dry_run:
        raise typer.BadParameter("--summary goes with --dry-run", param_hint="--summary")
    if src.is_file() and not zipfile.is_zipfile(src):
        raise SubmissionError(f"{src.name} is a file but not a ZIP archive: give a folder of DICOM files or a .zip")
    if out is None:
        if not dry_run:
            raise typer.BadParameter("DEST is required (only --dry-run may leave it out)", param_hint="DEST")
        return
    if src.is_dir() and _inside(out, src):
        raise typer.BadParameter("the output folder must not be inside the source folder", param_hint="DEST")
    if out == src:
        raise typer.BadParameter("the output must not be the source", param_hint="DEST")
    if to_zip:
        if out.is_dir():
            raise typer.BadParameter(f"{out.name} is a folder; --zip writes DEST as a ZIP file", param_hint="DEST")
        if out.exists() and not zipfile.is_zipfile(out):
            raise typer.BadParameter(f"{out.name} exists and is not a ZIP archive; it was left alone",
                                     param_hint="DEST")
    elif out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out.name} is a file; give a folder, or --zip to write a ZIP",
                                 param_hint="DEST")
    if quarantine is not None:
        if _inside(quarantine, out) or _inside(out, quarantine):
            raise typer.BadParameter("the quarantine folder and DEST must be apart: DEST holds only "
                                     "de-identified output", param_hint="--quarantine")
        if src.is_dir() and _inside(quarantine, src):
            raise typer.BadParameter("the quarantine folder must not be inside the source folder",
                                     param_hint="--quarantine")


# --- printing -------------------------------------------------------------------------------
class _Progress:
    """A rich progress bar (files done / total) on stderr; a no-op when ``enabled`` is false."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=False)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def task(self, description: str, total: int) -> Callable[[int], None] | None:
        if self.bar is None:
            return None
        task_id = self.bar.add_task(description, total=total)
        return lambda n: self.bar.advance(task_id, n)


def _print_plan(summary: dict[str, Any], summary_only: bool) -> None:
    from pipeline.deid.dryrun import action_counts, file_lines, totals_lines

    say = {"written": "would be written", "skipped": "would be skipped", "refused": "would be refused",
           "failed": "would fail"}
    if not summary_only:
        for r in summary["results"]:
            line = f"{r['rel']}: {say[r['outcome']]}"
            if r["outcome"] != "written":
                line += f" ({r['reason']})"
            typer.echo(shown(line))
            for text in file_lines(r.get("actions") or {}):
                typer.echo(shown(text))
    else:
        for text in totals_lines(summary["actions"]):
            typer.echo(shown(text))
    counts = action_counts(summary["actions"])
    if counts:
        typer.echo("elements: " + ", ".join(f"{n} {a}" for a, n in counts.items()))


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _print_summary(summary: dict[str, Any]) -> None:
    dry = summary["dry_run"]
    rate = summary["bytes_in"] / 1e6 / summary["seconds"] if summary["seconds"] else 0.0
    n_ok = summary["would_write"] if dry else summary["written"]
    lines = [
        ("Dry run, nothing was written. " if dry else "")
        + f"{_count(summary['files_seen'], 'file', 'files')}, "
        + f"{_count(summary['studies'], 'study', 'studies')}: "
        + f"{n_ok} {'would be written' if dry else 'written'}, "
        + f"{len(summary['skipped'])} skipped (not DICOM), {len(summary['refused'])} refused, "
        + f"{len(summary['failed'])} failed"
    ]
    if not dry and summary.get("output"):
        lines.append(f"  output: {summary['output']}")
    if not summary["verified"]:
        lines.append("  verification: off (--no-verify)")
    else:
        lines.append("  verification: every " + ("planned output" if dry else "written file")
                     + " passed the leak verifier")
    if summary.get("quarantined") is not None:
        lines.append(f"  quarantined: {summary['quarantined']} file(s) with reasons")
    if summary.get("masked"):
        lines.append(f"  burned-in text masked in {_count(summary['masked'], 'file', 'files')} (OCR)")
    for what in ("refused", "failed", "warned"):
        reasons: dict[str, int] = {}
        for item in summary[what]:
            reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
        for reason, n in sorted(reasons.items()):
            lines.append(f"  {what} ({n}): {reason}")
    lines.append(f"  {summary['bytes_in'] / 1e6:.1f} MB in {summary['seconds']:.1f} s "
                 f"({rate:.1f} MB/s, {summary['jobs']} processes)")
    for line in lines:
        typer.echo(shown(line))
    for what in ("refused", "failed", "warned"):
        for item in summary[what]:
            typer.echo(shown(f"  {what}: {item['file']}: {item['reason']}"), err=True)


# --- the command -----------------------------------------------------------------------------
def anonymize(
    src: Path = typer.Argument(..., exists=True, metavar="SRC", help="Folder of DICOM files, or a .zip of one (read only)."),
    out: Optional[Path] = typer.Argument(None, metavar="DEST", help="Folder (or with --zip, ZIP file) to write into."),
    jobs: int = typer.Option(0, "--jobs", "-j", help="Processes; 0 = every core."),
    profile: Optional[str] = typer.Option(None, "--profile", help="De-identification profile."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Extra Annex E option (repeatable)."),
    org: Optional[str] = typer.Option(None, "--org", help="Organisation prefix (default: settings)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a field: Keyword=value."),
    verify: bool = typer.Option(True, "--verify/--no-verify",
                                help="Check each output with the leak verifier (default on)."),
    to_zip: bool = typer.Option(False, "--zip", help="Write DEST as a ZIP file instead of a folder."),
    quarantine: Optional[Path] = typer.Option(None, "--quarantine",
                                              help="Copy refused and failed files here, with reasons."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write nothing; print what would be done."),
    summary_only: bool = typer.Option(False, "--summary", help="With --dry-run: totals, not per file."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (no progress bar)."),
) -> None:
    """De-identify every DICOM file of a folder or ZIP into a folder or ZIP, in parallel (no queue, no upload)."""
    from pipeline.exceptions import TeleradError

    try:
        code = _anonymize(src, out, jobs=jobs, profile=profile, option=option, org=org, set_=set_,
                          verify=verify, to_zip=to_zip, quarantine=quarantine, dry_run=dry_run,
                          summary_only=summary_only, as_json=as_json)
    except TeleradError as exc:
        typer.secho(f"error: {shown(exc, keep_newlines=True)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def _anonymize(src: Path, out: Path | None, *, jobs: int, profile: str | None, option: list[str] | None,
               org: str | None, set_: list[str] | None, verify: bool, to_zip: bool,
               quarantine: Path | None, dry_run: bool, summary_only: bool, as_json: bool) -> int:
    from pipeline.cli.common import parse_assignments
    from pipeline.deid.engine import action_totals
    from pipeline.settings import load_settings

    src = src.absolute()
    out = out.absolute() if out is not None else None
    quarantine = quarantine.absolute() if quarantine is not None else None
    _check_paths(src, out, to_zip=to_zip, quarantine=quarantine, dry_run=dry_run, summary_only=summary_only)
    settings = load_settings()
    settings.ensure_dirs()
    jobs = jobs if jobs > 0 else (os.cpu_count() or 1)
    recipe = Recipe.of(
        settings, profile=profile, options=list(settings.options) + list(option or []), organization=org,
        overrides=parse_assignments(set_), verify=Verify.GATE if verify else Verify.OFF,
        hold_for_review=not dry_run,  # a dry run holds nothing
        plan=dry_run, submitted_as=submitted_name(str(src)),  # names the verifier searches for
    )
    runner = StudyRunner(settings, recipe)  # a bad profile, option or --set fails here, once, before any work

    with ExitStack() as stack:
        src_root = _unpack(src, settings, stack) if src.is_file() else src
        walked = study.walk(src_root)
        if dry_run:
            scratch = Path(tempfile.mkdtemp(prefix="telerad-dry-run-"))
            stack.callback(shutil.rmtree, scratch, True)
            target = None
        elif to_zip:
            target = _work_dir(out, stack, "zipping")
            scratch = _work_dir(out, stack, "incoming")
        else:
            target = out  # each file is verified before it is written, then placed by rename
            scratch = _work_dir(out, stack, "incoming")
        with _Progress(enabled=not as_json) as progress:
            summary = run(src_root, target, jobs=jobs, runner=runner, scratch=scratch,
                          walked=walked,
                          advance=progress.task("planning" if dry_run else "de-identifying", len(walked.files)))
            written = [r["relpath"] for r in summary["results"] if r["outcome"] == "written"]
            if to_zip and not dry_run and not summary["interrupted"]:
                summary["bytes_out"] = _write_zip(target, written, out, progress.task("writing ZIP", len(written)))
        summary["quarantined"] = None
        if quarantine is not None and not dry_run:
            summary["quarantined"] = _quarantine(src_root, quarantine, summary)

    results = summary.pop("results")
    summary["dry_run"] = dry_run
    summary["zip"] = to_zip
    summary["output"] = None if dry_run or out is None else out.name
    if to_zip and summary["interrupted"]:
        summary["written"] = 0  # nothing reaches DEST: the ZIP is written whole or not at all
    if dry_run:
        ok = [r for r in results if r["outcome"] == "written"]
        summary["would_write"] = len(ok)
        summary["actions"] = action_totals(r.get("actions") or {} for r in ok)
        summary["files"] = [{"file": r["rel"], "outcome": r["outcome"], **({"reason": r["reason"]}
                             if "reason" in r else {}), "actions": r.get("actions") or {}} for r in results]
        summary["results"] = results
    dicom_found = summary["files_seen"] - len(summary["skipped"]) + _duplicates(summary)
    if as_json:
        summary.pop("results", None)
        typer.echo(json.dumps(summary, indent=2))
    else:
        if dry_run:
            _print_plan(summary, summary_only)
        _print_summary(summary)
    if summary["interrupted"]:
        typer.secho(shown(_interrupted_line(summary, to_zip)), fg=typer.colors.RED, err=True)
        return 130
    if dicom_found == 0:
        typer.secho(f"error: no DICOM files in {shown(src.name)} ({summary['files_seen']} files looked at); "
                    "nothing was written: give the folder or ZIP that holds the study",
                    fg=typer.colors.RED, err=True)
        return 1
    return 1 if summary["failed"] else 0


def _duplicates(summary: dict[str, Any]) -> int:
    """Skipped files that were DICOM after all (copies written once)."""
    return sum(1 for item in summary["skipped"] if "written once" in item["reason"])


def _interrupted_line(summary: dict[str, Any], to_zip: bool) -> str:
    left = len(summary["not_processed"])
    if to_zip:
        return (f"interrupted: no ZIP was written ({left} of {summary['files_seen']} files not processed); "
                "run the same command again")
    return (f"interrupted: {summary['written']} of {summary['files_seen']} files were written to "
            f"{summary['output']}, {left} were not processed; run the same command again to finish "
            "(files already written are written again, identically)")


def register(app: typer.Typer) -> None:
    app.command()(anonymize)
