"""`telerad anonymize`: de-identify a folder into a folder, on every core, without a queue.

The same engine as a batch (``pipeline.deid.Deidentifier``, the same profile,
options and keyed pseudonyms, so the same study gets the same pseudonyms here
and in a batch), run in a pool of processes. Work is handed out in chunks of
files from the same folder (in practice a series), so a process pays for its
engine once and the pool's messages stay few; each chunk is kept to a bounded
number of bytes so a multi-frame series does not leave the other cores idle.

It writes de-identified files only: no manifest, no upload, and no
re-identification mapping (submit the study with ``telerad submit`` when the
result must be re-identifiable). Files that are not DICOM are skipped; files the
burned-in policy refuses are listed; a file that cannot be de-identified is
reported by its relative path and nothing is written for it, and the command
exits 1.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

CHUNK_FILES = 64
CHUNK_BYTES = 64 * 1024 * 1024

_engine: Any = None  # one Deidentifier per process, built by _init
_verifier: Any = None


def _init(profile: str, options: list[str], secret: bytes, organization: str,
          overrides: dict[str, str], verify: bool) -> None:
    """Build this process's engine once (profile, vocabularies, guards)."""
    global _engine, _verifier
    from pipeline.deid import Deidentifier, load_profile
    from pipeline.pseudonyms import Pseudonyms

    pseudonyms = Pseudonyms(secret, organization)
    prof = load_profile(profile, options=options)
    _engine = Deidentifier(prof, pseudonyms, overrides=overrides or None)
    _verifier = None
    if verify:
        from pipeline.deid.verify import Verifier

        _verifier = Verifier(pseudonyms, prof)


def _one(src_root: str, out_root: str, rel: str) -> dict[str, Any]:
    from pipeline.exceptions import NotDicomError, RefusedFileError, TeleradError

    try:
        res = _engine.deidentify_file(Path(src_root) / rel, Path(out_root))
    except NotDicomError as exc:
        return {"rel": rel, "outcome": "skipped", "reason": str(exc)}
    except RefusedFileError as exc:
        return {"rel": rel, "outcome": "refused", "reason": str(exc)}
    except TeleradError as exc:
        return {"rel": rel, "outcome": "failed", "reason": str(exc)}
    except Exception as exc:  # a parser bug fails the file closed, without echoing values
        return {"rel": rel, "outcome": "failed", "reason": f"unexpected {type(exc).__name__}"}
    out: dict[str, Any] = {"rel": rel, "outcome": "ok", "relpath": res.relpath, "size": res.size,
                           "sha256": res.sha256, "actions": res.actions}
    if _verifier is not None:
        findings = _verifier.verify_file(Path(out_root) / res.relpath, res.relpath)
        if findings:
            (Path(out_root) / res.relpath).unlink(missing_ok=True)
            return {"rel": rel, "outcome": "failed",
                    "reason": f"verification: {len(findings)} finding(s), first: {findings[0]}"}
    return out


def _chunk(src_root: str, out_root: str, rels: list[str]) -> list[dict[str, Any]]:
    return [_one(src_root, out_root, rel) for rel in rels]


def study_files(root: Path) -> Iterator[tuple[str, int]]:
    """(relative path, size) of every regular file under ``root``, sorted; links out are not followed."""
    real_root = root.resolve()
    for path in sorted(root.rglob("*")):
        if path.is_symlink() and not path.resolve().is_relative_to(real_root):
            continue
        if path.is_file():
            yield path.relative_to(root).as_posix(), path.stat().st_size


def chunks(files: list[tuple[str, int]], *, max_files: int = CHUNK_FILES,
           max_bytes: int = CHUNK_BYTES) -> list[list[str]]:
    """Consecutive files of one folder, at most ``max_files`` and about ``max_bytes`` per chunk."""
    out: list[list[str]] = []
    current: list[str] = []
    folder, size = None, 0
    for rel, n in files:
        parent = rel.rpartition("/")[0]
        if current and (parent != folder or len(current) >= max_files or size + n > max_bytes):
            out.append(current)
            current, size = [], 0
        folder = parent
        current.append(rel)
        size += n
    if current:
        out.append(current)
    return out


def run(src: Path, out: Path, *, jobs: int, profile: str, options: list[str], secret: bytes,
        organization: str, overrides: dict[str, str], verify: bool = False) -> dict[str, Any]:
    """De-identify ``src`` into ``out`` with ``jobs`` processes; returns the summary."""
    started = time.perf_counter()
    files = list(study_files(src))
    # Enough chunks that every process stays busy to the end (about 4 per process).
    per_chunk = max(1, min(CHUNK_FILES, -(-len(files) // (4 * jobs)))) if jobs > 1 else CHUNK_FILES
    work = chunks(files, max_files=per_chunk)
    args = (profile, options, secret, organization, overrides, verify)
    results: list[dict[str, Any]] = []
    if jobs <= 1:
        _init(*args)
        for rels in work:
            results += _chunk(str(src), str(out), rels)
    else:
        with ProcessPoolExecutor(max_workers=jobs, initializer=_init, initargs=args) as pool:
            futures = [pool.submit(_chunk, str(src), str(out), rels) for rels in work]
            for fut in as_completed(futures):
                results += fut.result()
    results.sort(key=lambda r: r["rel"])
    ok = [r for r in results if r["outcome"] == "ok"]
    return {
        "files_seen": len(files),
        "bytes_in": sum(n for _rel, n in files),
        "written": len(ok),
        "bytes_out": sum(r["size"] for r in ok),
        "skipped": [{"file": r["rel"], "reason": r["reason"]} for r in results if r["outcome"] == "skipped"],
        "refused": [{"file": r["rel"], "reason": r["reason"]} for r in results if r["outcome"] == "refused"],
        "failed": [{"file": r["rel"], "reason": r["reason"]} for r in results if r["outcome"] == "failed"],
        "jobs": jobs,
        "verified": verify,
        "seconds": round(time.perf_counter() - started, 3),
    }


def anonymize(
    src: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder of DICOM files (read only)."),
    out: Path = typer.Argument(..., help="Folder to write de-identified files into."),
    jobs: int = typer.Option(0, "--jobs", "-j", help="Processes; 0 = every core."),
    profile: Optional[str] = typer.Option(None, "--profile", help="De-identification profile."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Extra Annex E option (repeatable)."),
    org: Optional[str] = typer.Option(None, "--org", help="Organisation prefix (default: settings)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a field: Keyword=value."),
    verify: bool = typer.Option(False, "--verify/--no-verify", help="Re-read each output with the leak verifier."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """De-identify every DICOM file of a folder into another folder, in parallel (no queue, no upload)."""
    from pipeline.cli.batches import parse_assignments
    from pipeline.settings import load_settings

    settings = load_settings()
    src, out = src.absolute(), out.absolute()
    if out == src or out.is_relative_to(src):
        raise typer.BadParameter("the output folder must not be inside the source folder")
    settings.ensure_dirs()
    options = list(settings.options) + list(option or [])
    summary = run(
        src, out,
        jobs=jobs if jobs > 0 else (os.cpu_count() or 1),
        profile=profile or settings.profile,
        options=options,
        secret=settings.pseudonym_secret,
        organization=(org or settings.organization).upper(),
        overrides=parse_assignments(set_),
        verify=verify,
    )
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        rate = summary["bytes_in"] / 1e6 / summary["seconds"] if summary["seconds"] else 0.0
        typer.echo(
            f"{summary['written']} de-identified, {len(summary['skipped'])} not DICOM, "
            f"{len(summary['refused'])} refused, {len(summary['failed'])} failed; "
            f"{summary['files_seen']} files, {summary['bytes_in'] / 1e6:.1f} MB in "
            f"{summary['seconds']:.1f} s ({rate:.1f} MB/s, {summary['jobs']} processes)"
        )
        for what in ("refused", "failed"):
            for item in summary[what]:
                typer.echo(f"  {what}: {item['file']}: {item['reason']}", err=True)
    if summary["failed"]:
        sys.exit(1)


def register(app: typer.Typer) -> None:
    app.command()(anonymize)
