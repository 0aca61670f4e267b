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
(a tar of ``INDEX.dcm`` files and ``results.pickle``, encrypted: the leak verifier
has not seen them yet), so the join costs one request per chunk, not one per file.

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
import pickle
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any, Callable

from pipeline.lease import StepLease
from pipeline.settings import Settings

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
    from pipeline.study import StudyFile

    if dispatch is None or not wanted(settings, states, record, settings.fanout_files):
        return None
    index = _intake(settings).index(record.batch_id)
    if index["kind"] != "folder" or not wanted(settings, states, record, len(index["files"])):
        return None
    return [StudyFile(i, rel, 0) for i, rel in enumerate(index["files"], start=1)]


def _chunk_key(batch_id: str, n: int) -> str:
    return f"{batch_id}/fanout/{n}"


def _intake(settings: Settings) -> Any:
    from pipeline.intake import IntakeStore

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


def run_chunk(settings: Settings, batch_id: str, n: int, deid: Any = None, keep: Path | None = None) -> bool:
    """Claim chunk ``n`` and de-identify it, unless someone holds it or it is done; True when this ran it.

    ``keep`` (the join passes it): also leave the chunk's result there, so the join
    need not fetch back what it has just put.
    """
    from pipeline.statestore import open_state_store

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
        _deidentify_chunk(settings, states, batch_id, n, deid, intake, keep)
        return True
    finally:
        claim.__exit__(None, None, None)


def _deidentify_chunk(settings: Settings, states: Any, batch_id: str, n: int, deid: Any, intake: Any,
                      keep: Path | None) -> None:
    from pipeline import batch as steps
    from pipeline.deid import Deidentifier
    from pipeline.study import classify

    record = states.get(batch_id)
    work = states.batch_dir(batch_id) / f"fanout-{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        chunk = _load_plan(intake, batch_id, work)[n]
        root = intake.fetch_files(batch_id, work / "originals", {rel for _i, rel in chunk})
        if root.is_file():  # a ZIP submission: unpack it (the whole archive) here
            root = steps._unpacked_source(root, work)
        if deid is None:
            deid = Deidentifier(
                steps._load_profile(record.profile, record.options),
                steps._pseudonyms(settings, record.organization),
                overrides=record.overrides or None,
                inflate_limits=settings.inflate_limits,
                review_dir=settings.review_dir,  # as the de-identify step's own engine
            )
        out = work / "out"
        out.mkdir()
        results: dict[int, Any] = {}
        packed = work / "result.tar"
        with tarfile.open(packed, "w") as tar:
            for index, rel in chunk:
                target = out / f"{index}.dcm"
                try:
                    results[index] = deid.deidentify_file(root / rel, out, out_path=target,
                                                          submitted=_submitted(record, rel))
                except Exception as exc:  # classified here as the one-worker loop does; raised again at the join
                    outcome, reason = classify(exc)
                    results[index] = (outcome.value, reason)
                    continue
                tar.add(target, arcname=f"{index}.dcm")
                target.unlink()
            body = pickle.dumps(results)
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


RESULTS = "results.pickle"


def _unpack(path: Path, scratch: Path, batch_id: str, n: int) -> dict[int, Any]:
    """The chunk's results, its outputs moved to ``scratch/INDEX.dcm``; only the members the results name."""
    from pipeline.intake import IntakeError

    def member(tar: tarfile.TarFile, name: str) -> Any:
        try:
            found = tar.extractfile(name)
        except KeyError:
            found = None
        if found is None:
            raise IntakeError(f"chunk {n} of batch {batch_id} lacks {name}; retry the batch")
        return found

    with tarfile.open(path, "r") as tar:
        with member(tar, RESULTS) as src:
            part: dict[int, Any] = pickle.loads(src.read())
        for index, res in part.items():
            if isinstance(res, tuple):
                continue
            with member(tar, f"{int(index)}.dcm") as src, open(scratch / f"{int(index)}.dcm", "wb") as dst:
                shutil.copyfileobj(src, dst)
    return part


def join(settings: Settings, batch_id: str, chunks: int, deid: Any, scratch: Path,
         advance: Callable[[int], None]) -> dict[int, Any]:
    """Run or wait for every chunk; returns ``{index: DeidentifiedFile or (outcome, reason)}``, outputs in ``scratch``.

    ``pickle`` reads only objects this batch's own workers wrote: they are encrypted and
    authenticated with the batch's data key, so nothing else can be slipped in.
    """
    intake = _intake(settings)
    pending = set(range(chunks))
    results: dict[int, Any] = {}
    while pending:
        progressed = False
        for n in sorted(pending):
            path = scratch / f".chunk-{n}.tar"
            ran_here = False
            if not intake.exists(batch_id, f"fanout/{n}/result.enc"):
                if not run_chunk(settings, batch_id, n, deid, keep=path):
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
    from pipeline.storage.base import DeletesMany

    intake = _intake(settings)
    keys = [info.key for info in intake.store.list(f"{batch_id}/fanout/")]
    if isinstance(intake.store, DeletesMany):
        intake.store.delete_many(keys)
    else:
        for key in keys:
            intake.store.delete(key)


def file_deidentifier(settings: Settings, states: Any, record: Any, deid: Any, files: list[Any],
                      source_root: Path, scratch: Path, dispatch: ChunkDispatcher | None,
                      advance: Callable[[int], None] | None = None) -> Callable[[Any], Any]:
    """What the de-identify loop calls per file: in this process, or from the joined chunks.

    Returns ``one(f) -> DeidentifiedFile`` (raising the file's own error), writing the
    output to ``scratch/INDEX.dcm`` either way.
    """
    if dispatch is None or not wanted(settings, states, record, len(files)):
        return lambda f: deid.deidentify_file(source_root / f.rel, scratch, out_path=scratch / f"{f.index}.dcm",
                                              submitted=_submitted(record, f.rel))
    chunks = plan(settings, record.batch_id, files)
    dispatch(settings, record.batch_id, chunks, record.priority)
    log.info("batch %s: %s files fanned out in %s chunks", record.batch_id, len(files), chunks)
    joined = join(settings, record.batch_id, chunks, deid, scratch, advance or (lambda k: None))
    clear(settings, record.batch_id)

    def one(f: Any) -> Any:
        res = joined[f.index]
        if isinstance(res, tuple):  # (outcome, reason) of a file the chunk could not de-identify
            raise _as_error(*res)
        return res

    return one


def _as_error(outcome: str, reason: str) -> Exception:
    """The error that ``study.classify`` maps back to the same outcome and reason."""
    from pipeline.exceptions import NotDicomError, RefusedFileError, TeleradError
    from pipeline.study import Outcome

    kind = {Outcome.SKIPPED.value: NotDicomError, Outcome.REFUSED.value: RefusedFileError}.get(outcome, TeleradError)
    return kind(reason)


def _submitted(record: Any, rel: str) -> str:
    """The file's path as submitted (study folder's name first): the verifier looks for it in outputs."""
    from pipeline.batch import _submitted_name

    return str(Path(_submitted_name(record)) / rel)
