"""Where a study's instances run: here one by one, in a pool of processes, or (fan-out) on several workers.

An executor takes the study's files and yields lists of ``Done`` as they
finish; the runner places them and counts outcomes, whoever did the work.
``Serial`` runs them in this process with the runner's own engine.
``ProcessPool`` is ``telerad anonymize``'s pool: work handed out in chunks of
files from the same folder (in practice a series), so a process builds its
engine once and the messages stay few, each chunk kept to a bounded number of
bytes so a multi-frame series does not leave the other cores idle, the
costliest first. The third kind, chunks on several workers of several hosts,
needs the shared state and intake stores and lives beside them
(``pipeline/fanout.py``'s ``FanOut``), implementing the same protocol.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from pipeline.run.instance import Done, InstanceRunner
from pipeline.run.wire import JSON
from pipeline.run.recipe import Recipe
from pipeline.settings import Settings
from pipeline.study import StudyFile

CHUNK_FILES = 64
CHUNK_BYTES = 64 * 1024 * 1024


class Executor(Protocol):
    """Runs ``files`` (under ``root``) with ``runner``'s recipe; yields outcomes as they are done."""

    jobs: int  # processes of this host it keeps busy (the summary says it)

    def execute(self, runner: InstanceRunner, root: Path, files: list[StudyFile],
                scratch: Path) -> Iterator[list[Done]]: ...


class Serial:
    """Every instance in this process, in the walk's order."""

    jobs = 1

    def execute(self, runner: InstanceRunner, root: Path, files: list[StudyFile],
                scratch: Path) -> Iterator[list[Done]]:
        for f in files:
            yield [runner.one(root, f, scratch)]


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


# --- the pool's processes ---------------------------------------------------------------------------
_runner: InstanceRunner | None = None  # one per pool process, built by _start


def _start(settings: Settings, recipe: Recipe) -> None:
    """A pool process: leave Ctrl-C to the parent (it stops the pool), build the engine once."""
    global _runner
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _runner = InstanceRunner(settings, recipe)


def _chunk(job: tuple[str, str, list[StudyFile]]) -> list[JSON]:
    root, scratch, files = job
    assert _runner is not None
    full = _runner.recipe.full_results or _runner.recipe.plan
    return [_runner.one(Path(root), f, Path(scratch)).to_json(full=full) for f in files]


class ProcessPool:
    """``jobs`` processes, each with its own engine; about four chunks per process so none idles at the end."""

    def __init__(self, jobs: int) -> None:
        self.jobs = max(1, jobs)

    def pieces(self, files: list[StudyFile]) -> list[list[StudyFile]]:
        """The chunks handed out, the costliest first."""
        sizes = [(f.rel, f.size) for f in files]
        by_rel = {f.rel: f for f in files}
        per_chunk = max(1, min(CHUNK_FILES, -(-len(files) // (4 * self.jobs)))) if self.jobs > 1 else CHUNK_FILES
        out = chunks(sizes, max_files=per_chunk)
        if self.jobs > 1:
            size_of = dict(sizes)
            out.sort(key=lambda rels: len(rels) + sum(size_of[r] for r in rels) / 1e6, reverse=True)
        return [[by_rel[r] for r in rels] for rels in out]

    def execute(self, runner: InstanceRunner, root: Path, files: list[StudyFile],
                scratch: Path) -> Iterator[list[Done]]:
        pieces = self.pieces(files)
        if self.jobs <= 1:
            for piece in pieces:
                for f in piece:
                    yield [runner.one(root, f, scratch)]
            return
        pool = multiprocessing.Pool(self.jobs, initializer=_start, initargs=(runner.settings, runner.recipe))
        try:
            for done in pool.imap_unordered(_chunk, [(str(root), str(scratch), piece) for piece in pieces]):
                yield [Done.from_json(d, scratch) for d in done]
            pool.close()
        except BaseException:
            pool.terminate()  # our own processes; their unplaced outputs are in scratch, removed by the caller
            raise
        finally:
            pool.join()
