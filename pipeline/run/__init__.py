"""The study runner: every door's received instances through one engine, one verifier, one placement.

    from pipeline.run import Recipe, StudyRunner, Verify
    runner = StudyRunner(settings, Recipe.of(settings, verify=Verify.GATE))
    result = runner.run(study_folder, dest=out, scratch=out.parent / ".incoming")

Modules, one idea each: ``recipe`` (what a run is asked to do), ``engine``
(the only place a ``Deidentifier`` is built, with the site's read limits),
``verifying`` (the leak verifier, always with the captured values),
``instance`` (one instance through engine and gates), ``executors`` (serial,
a process pool; fan-out's chunks implement the same protocol), ``runner``
(placement and outcomes), ``outcomes`` (the summary), ``wire`` (results as
JSON), ``source`` (a submitted ZIP unpacked, the submitted name).
"""

from pipeline.run.executors import Executor, ProcessPool, Serial, chunks
from pipeline.run.instance import Done, InstanceRunner
from pipeline.run.outcomes import StudyRun
from pipeline.run.recipe import Recipe, Verify
from pipeline.run.runner import StudyRunner
from pipeline.run.verifying import Unverified, tree_verifier

__all__ = [
    "Done",
    "Executor",
    "InstanceRunner",
    "ProcessPool",
    "Recipe",
    "Serial",
    "StudyRun",
    "StudyRunner",
    "Unverified",
    "Verify",
    "chunks",
    "tree_verifier",
]
