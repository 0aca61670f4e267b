"""Fan-out: a large study de-identified by several workers, on any host, joined before the manifest.

With ``fanout_files`` > 0, a shared state store and an intake store, the
de-identify step of a study of at least that many files splits its files into
chunks of ``fanout_chunk_files``. It writes the plan (encrypted: file names may
hold PHI) into the intake store and has the workers enqueue one Celery task per
chunk (a group, at the batch's priority, on the shared queue), so every free
worker of every host can take one. Each chunk is **claimed** with a lease
(``BATCH_ID/fanout/N`` in the shared state, renewed by a heartbeat like a step's):
whoever claims it fetches just those originals from the intake store,
de-identifies them with the batch's profile and keys, and puts the outputs and
their results back in the intake store as one object, ``fanout/N/result.enc``
(a tar of ``INDEX.dcm`` files and ``results.json``, encrypted: the leak verifier
has not seen them yet), so the join costs one request per chunk, not one per file.
Each chunk runs its files through the study runner's ``InstanceRunner`` with the
batch's recipe (``Recipe.for_batch``), and the join is the runner's third
executor (``FanOut``): it yields the chunks' outcomes to the same placement.

The step decides to fan out from the intake index (``listed_files``), before it
fetches anything: the originals are fetched only by whoever runs a chunk, each
chunk its own files.

The join is the de-identify step itself, which keeps its own lease meanwhile: it
claims and runs any chunk nobody holds (so it never waits on an idle queue, and
several big batches at once cannot deadlock), waits for chunks others hold, and
takes over a chunk whose holder's lease lapsed. With every ``result.enc`` present
it decrypts the outputs into its scratch folder and the step goes on as for a
small study: placement, the one-patient and duplicate checks, the leak verifier,
the report and the mapping. We count finished parts in the shared stores rather
than using a chord: the app keeps ``task_ignore_result=True`` (no result backend),
and the join needs the outputs on the staging host anyway.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from pipeline.intake import IntakeError, IntakeStore
from pipeline.lease import StepLease
from pipeline.run import Done, InstanceRunner, Recipe
from pipeline.run.source import unpacked
from pipeline.settings import Settings
from pipeline.state import BatchRecord
from pipeline.statestore import BatchStateStore, open_state_store
from pipeline.storage.base import DeletesMany
from pipeline.study import StudyFile

log = logging.getLogger("telerad.fanout")

ChunkDispatcher = Callable[[Settings, str, int, str], None]
"""``(settings, batch_id, chunks, priority)``: enqueue one chunk task per chunk (workers/fanout.py)."""


def wanted(settings: Settings, states: Any, record: Any, files: int) -> bool:
    """Fan out this batch? Only with a shared state, an intake copy and a study large enough."""
    return bool(settings.fanout_files and files >= settings.fanout_files and states.shared and record.intake)


def listed_files(settings: Settings, states: Any, record: Any, dispatch: ChunkDispatcher | None) -> list[Any] | None:
    """The study's files from the intake index when this batch fans out; None to fetch and walk it as usual.

    Deciding from the index spares the step a fetch of every original it would
    not de-identify itself (77 s of a 2,000-image study on the benchmark site).
    A ZIP is one object in the intake store: its files are known only unpacked.
    """
    if dispatch is None or not wanted(settings, states, record, settings.fanout_files):
        return None
    index = _intake(settings).index(record.batch_id)
    if index["kind"] != "folder" or not wanted(settings, states, record, len(index["files"])):
        return None
    return [StudyFile(i, rel, 0) for i, rel in enumerate(index["files"], start=1)]


def _chunk_key(batch_id: str, n: int) -> str:
    return f"{batch_id}/fanout/{n}"


def _intake(settings: Settings) -> IntakeStore:
    return IntakeStore.from_settings(settings)


def plan(settings: Settings, batch_id: str, files: list[Any]) -> int:
    """Write the chunk plan (``[[index, rel], ...]`` per chunk) to the intake store; returns the count."""
    size = max(1, settings.fanout_chunk_files)
    chunks = [[[f.index, f.rel] for f in files[i:i + size]] for i in range(0, len(files), size)]
    _intake(settings).put_object(batch_id, "fanout/plan.enc", io.BytesIO(json.dumps(chunks).encode()))
    return len(chunks)


def _load_plan(intake: Any, batch_id: str, work: Path) -> list[list[list[Any]]]:
    path = work / "fanout-plan.json"
    intake.get_object(batch_id, "fanout/plan.enc", path)
    try:
        return json.loads(path.read_text())
    finally:
        path.unlink()


def run_chunk(settings: Settings, batch_id: str, n: int, runner: InstanceRunner | None = None,
              keep: Path | None = None) -> bool:
    """Claim chunk ``n`` and de-identify it, unless someone holds it or it is done; True when this ran it.

    ``keep`` (the join passes it): also leave the chunk's result there, so the join
    need not fetch back what it has just put.
    """
    states = open_state_store(settings)
    record = states.get(batch_id)
    if record.final or "deidentify" in record.steps_done:
        return False  # a late or redelivered chunk task: the join is over
    intake = _intake(settings)
    if intake.exists(batch_id, f"fanout/{n}/result.enc"):
        return False
    claim = StepLease(states, settings, _chunk_key(batch_id, n))
    if not claim.try_acquire():
        return False
    try:
        if intake.exists(batch_id, f"fanout/{n}/result.enc"):  # finished just before we claimed it
            return False
        _deidentify_chunk(settings, states, batch_id, n, runner, intake, keep)
        return True
    finally:
        claim.__exit__(None, None, None)


def _deidentify_chunk(settings: Settings, states: Any, batch_id: str, n: int, runner: InstanceRunner | None,
                      intake: Any, keep: Path | None) -> None:
    record = states.get(batch_id)
    work = states.batch_dir(batch_id) / f"fanout-{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        chunk = _load_plan(intake, batch_id, work)[n]
        root = intake.fetch_files(batch_id, work / "originals", {rel for _i, rel in chunk})
        if root.is_file():  # a ZIP submission: unpack it (the whole archive) here
            root = unpacked(root, work, settings)
        if runner is None:  # the batch's recipe, as the de-identify step's own runner
            runner = InstanceRunner(settings, Recipe.for_batch(settings, record))
        out = work / "out"
        out.mkdir()
        results = []
        packed = work / "result.tar"
        with tarfile.open(packed, "w") as tar:
            for index, rel in chunk:
                done = runner.one(root, StudyFile(int(index), rel, 0), out)  # a file's fault is its outcome
                if done.output is not None:
                    tar.add(done.output, arcname=f"{done.index}.dcm")
                    done.output.unlink()
                results.append(done.to_json(full=True))
            body = json.dumps(results).encode()
            info = tarfile.TarInfo(RESULTS)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        with open(packed, "rb") as fh:
            intake.put_object(batch_id, f"fanout/{n}/result.enc", fh)
        if keep is not None:
            shutil.move(packed, keep)
        log.info("batch %s: chunk %s de-identified on %s (%s files)", batch_id, n,
                 settings.effective_host_id, len(chunk))
    finally:
        shutil.rmtree(work, ignore_errors=True)


RESULTS = "results.json"


def _unpack(path: Path, scratch: Path, batch_id: str, n: int) -> dict[int, Done]:
    """The chunk's outcomes, its outputs moved to ``scratch/INDEX.dcm``; only the members the results name."""
    def member(tar: tarfile.TarFile, name: str) -> Any:
        try:
            found = tar.extractfile(name)
        except KeyError:
            found = None
        if found is None:
            raise IntakeError(f"chunk {n} of batch {batch_id} lacks {name}; retry the batch")
        return found

    part: dict[int, Done] = {}
    with tarfile.open(path, "r") as tar:
        with member(tar, RESULTS) as src:
            listed = json.loads(src.read())
        for data in listed:
            index = int(data["index"])
            if data["output"] is not None:
                data["output"] = f"{index}.dcm"  # the name is ours, whatever the object says
                with member(tar, f"{index}.dcm") as src, open(scratch / f"{index}.dcm", "wb") as dst:
                    shutil.copyfileobj(src, dst)
            part[index] = Done.from_json(data, scratch)
    return part


def join(settings: Settings, batch_id: str, chunks: int, runner: InstanceRunner, scratch: Path,
         advance: Callable[[int], None]) -> dict[int, Done]:
    """Run or wait for every chunk; returns ``{index: Done}``, outputs in ``scratch``.

    The results are data (JSON), never code: nothing in a chunk object runs on load.
    """
    intake = _intake(settings)
    pending = set(range(chunks))
    results: dict[int, Done] = {}
    while pending:
        progressed = False
        for n in sorted(pending):
            path = scratch / f".chunk-{n}.tar"
            ran_here = False
            if not intake.exists(batch_id, f"fanout/{n}/result.enc"):
                if not run_chunk(settings, batch_id, n, runner, keep=path):
                    continue  # someone else holds it: look again later (a lapsed claim is taken then)
                ran_here = path.exists()
            if not ran_here:
                intake.get_object(batch_id, f"fanout/{n}/result.enc", path)
            try:
                part = _unpack(path, scratch, batch_id, n)
            finally:
                path.unlink(missing_ok=True)
            results.update(part)
            advance(len(part))
            pending.discard(n)
            progressed = True
        if pending and not progressed:
            time.sleep(0.2)
    return results


def clear(settings: Settings, batch_id: str) -> None:
    """Remove a finished fan-out's objects from the intake store (the originals stay until done)."""
    intake = _intake(settings)
    keys = [info.key for info in intake.store.list(f"{batch_id}/fanout/")]
    if isinstance(intake.store, DeletesMany):
        intake.store.delete_many(keys)
    else:
        for key in keys:
            intake.store.delete(key)


class FanOut:
    """The study runner's executor for a large study: chunks on every worker, joined here.

    It plans the chunks, has the workers enqueue them (``dispatch``), runs or
    waits for each (``join``), and yields every file's outcome in the walk's
    order, as the runner's other executors do; the chunk objects are removed
    after the join.
    """

    jobs = 1  # on this host: the step's own process runs the chunks nobody took

    def __init__(self, settings: Settings, record: BatchRecord, dispatch: ChunkDispatcher) -> None:
        self.settings, self.record, self.dispatch = settings, record, dispatch

    def execute(self, runner: InstanceRunner, root: Path, files: list[StudyFile],
                scratch: Path) -> Iterator[list[Done]]:
        batch_id = self.record.batch_id
        chunks = plan(self.settings, batch_id, files)
        self.dispatch(self.settings, batch_id, chunks, self.record.priority)
        log.info("batch %s: %s files fanned out in %s chunks", batch_id, len(files), chunks)
        joined = join(self.settings, batch_id, chunks, runner, scratch, lambda k: None)
        clear(self.settings, batch_id)
        yield [joined[f.index] for f in files]


def executor(settings: Settings, states: BatchStateStore, record: BatchRecord, dispatch: ChunkDispatcher | None,
             files: int) -> FanOut | None:
    """The fan-out executor when this batch fans out; None to run it in this process."""
    if dispatch is None or not wanted(settings, states, record, files):
        return None
    return FanOut(settings, record, dispatch)
