"""The study runner: received instances in, placed de-identified files and a ``StudyRun`` out.

Every door ends here (``telerad anonymize``, the batch's de-identify step and
its fan-out chunks, anonymize-stream and review), as Orthanc's doors all end
in one store: the door says which files and which recipe, the runner owns the
rest. ``StudyRunner`` builds the engine and gate once (``InstanceRunner``);
``run`` hands the files to an executor (``Serial`` by default), places each
output through ``study.Placement`` as it arrives (so duplicates are decided
in one place and nothing overwrites another), and returns the outcomes.
Ctrl-C stops the executor; the run then says ``interrupted`` and which files
were not processed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from pipeline.deid import DeidentifiedFile, Deidentifier, Finding, OriginalIds
from pipeline.run.executors import Executor, Serial
from pipeline.run.instance import Done, InstanceRunner
from pipeline.run.outcomes import StudyRun
from pipeline.run.recipe import Recipe, Verify
from pipeline.run.verifying import verify_staged
from pipeline.settings import Settings
from pipeline.study import FileOutcome, Outcome, Placement, StudyFile, Walk, walk


class StudyRunner:
    """One recipe's engine in this process, and the loop over a study's instances."""

    def __init__(self, settings: Settings, recipe: Recipe) -> None:
        self.instances = InstanceRunner(settings, recipe)  # a bad profile, option or override fails here

    @property
    def recipe(self) -> Recipe:
        return self.instances.recipe

    @property
    def engine(self) -> Deidentifier:
        return self.instances.engine

    def run(self, study: Path | Walk, *, dest: Path | None, scratch: Path, executor: Executor | None = None,
            advance: Callable[[int], None] | None = None) -> StudyRun:
        """Run every file of ``study`` (a folder, or its walk) and place the outputs under ``dest``.

        ``scratch`` (on the same disk as ``dest``, so outputs move by rename)
        receives each output first; with a plan or no ``dest`` nothing is kept.
        ``advance(n)`` is called as files are done.
        """
        started = time.perf_counter()
        walked = study if isinstance(study, Walk) else walk(study)
        placement = Placement(None if self.recipe.plan else dest)
        outcomes: list[FileOutcome] = list(walked.passed_over)
        results: dict[int, DeidentifiedFile] = {}
        interrupted = False
        executor = executor or Serial()
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            with closing(executor.execute(self.instances, walked.root, walked.files, scratch)) as dones:
                for done in dones:
                    for d in done:
                        self._take(d, placement, results, outcomes)
                    if advance:
                        advance(len(done))
        except KeyboardInterrupt:
            interrupted = True
            if placement.dest is not None:  # stopped between the outcome and its move: not processed
                outcomes = [o for o in outcomes
                            if o.outcome is not Outcome.WRITTEN or (placement.dest / o.relpath).is_file()]
        outcomes.sort(key=lambda o: o.index)
        return StudyRun(walked, outcomes, results, interrupted=interrupted,
                        seconds=time.perf_counter() - started, jobs=executor.jobs,
                        verified=self.recipe.verify is not Verify.OFF, plan=self.recipe.plan)

    @staticmethod
    def _take(d: Done, placement: Placement, results: dict[int, DeidentifiedFile],
              outcomes: list[FileOutcome]) -> None:
        """Record ``d``, then place its output (so an interruption never leaves a placed file uncounted)."""
        item = FileOutcome(d.index, d.rel, d.outcome, d.reason)
        if d.result is not None:
            results[d.index] = d.result
            item.relpath, item.size, item.sha256 = d.result.relpath, d.result.size, d.result.sha256
        outcomes.append(item)
        if item.outcome is Outcome.WRITTEN:
            placement.place(item, d.output)

    def one(self, src: Path, dest: Path, scratch: Path) -> Done:
        """One file (anonymize-stream, review): run and placed under ``dest``; the ``Done`` says how it went."""
        f = StudyFile(1, src.name, src.stat().st_size)
        done = self.instances.one(src.parent, f, scratch)
        if done.outcome is Outcome.WRITTEN:
            item = FileOutcome(1, f.rel, done.outcome, relpath=done.result.relpath if done.result else "")
            Placement(dest).place(item, done.output)
        return done

    def verify_staged(self, staging: Path, originals: list[OriginalIds],
                      texts: dict[str, str] | None = None) -> list[Finding]:
        """The batch's look at its placed study and outgoing texts (``Verify.STAGED``)."""
        return verify_staged(self.engine, staging, originals, texts)


