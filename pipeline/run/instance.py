"""One received instance through the engine and its gates: the only per-file loop body there is.

``InstanceRunner`` holds one recipe's engine and verifier gate in this
process (built once: building reads the profile and vocabularies) and turns
a study file into a ``Done``: written to ``scratch/INDEX.dcm`` (placed later,
in one place), or skipped, refused or failed with a reason that quotes no
value. The engine itself runs the burned-in guard and the completeness gate;
the leak verifier runs as the recipe says. A ``Done`` crosses processes and
hosts as JSON (``to_json``/``from_json``); the exception it came from stays in
the process that raised it, for the doors that answer with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.deid import DeidentifiedFile, Deidentifier
from pipeline.deid.dryrun import plan_file
from pipeline.run import wire
from pipeline.run.engine import build_engine
from pipeline.run.recipe import Recipe, Verify
from pipeline.run.verifying import FileGate, Unverified
from pipeline.settings import Settings
from pipeline.study import Outcome, StudyFile, classify


@dataclass
class Done:
    """What became of one instance; ``output`` is its scratch file when written."""

    index: int
    rel: str
    outcome: Outcome
    reason: str = ""
    result: DeidentifiedFile | None = None
    output: Path | None = None
    error: BaseException | None = field(default=None, compare=False, repr=False)  # this process only

    def to_json(self, *, full: bool) -> wire.JSON:
        return {"index": self.index, "rel": self.rel, "outcome": self.outcome.value, "reason": self.reason,
                "result": None if self.result is None else wire.encode_result(self.result, full=full),
                "output": None if self.output is None else self.output.name}

    @classmethod
    def from_json(cls, data: wire.JSON, outputs: Path | None) -> Done:
        """The ``Done`` that ``to_json`` wrote; its output is looked for under ``outputs``."""
        result = data["result"]
        name = data["output"]
        return cls(int(data["index"]), str(data["rel"]), Outcome(data["outcome"]), str(data["reason"]),  # type: ignore[call-overload]
                   result=None if result is None else wire.decode_result(result),  # type: ignore[arg-type]
                   output=None if name is None or outputs is None else outputs / str(name))


class InstanceRunner:
    """One recipe's engine and gate in this process, and ``one(root, file, scratch)`` for each instance."""

    def __init__(self, settings: Settings, recipe: Recipe, engine: Deidentifier | None = None) -> None:
        self.settings = settings
        self.recipe = recipe
        self.engine = engine if engine is not None else build_engine(settings, recipe)
        self.gate = FileGate(self.engine) if recipe.verify is Verify.GATE else None

    def submitted(self, f: StudyFile) -> str | None:
        """The file's path as submitted (the study folder's name first): the verifier searches for its names."""
        if self.recipe.submitted_as is None:
            return None
        return str(Path(self.recipe.submitted_as) / f.rel)

    def one(self, root: Path, f: StudyFile, scratch: Path) -> Done:
        """De-identify ``root/f.rel`` into ``scratch``; never raises for the file's own faults."""
        try:
            if self.recipe.plan:
                res, findings = plan_file(self.engine, root / f.rel, scratch / f"p{os.getpid()}",
                                          self.gate.written if self.gate is not None else None,
                                          submitted=self.submitted(f))
                out = None
            else:
                out = scratch / f"{f.index}.dcm"  # one name per source file: nothing overwrites another
                res = self.engine.deidentify_file(root / f.rel, scratch,
                                                  self.gate.header if self.gate is not None else None,
                                                  digest=self.recipe.digest, out_path=out,
                                                  submitted=self.submitted(f))
                findings = []
        except Unverified as exc:
            return Done(f.index, f.rel, Outcome.FAILED, str(exc), error=exc)
        except Exception as exc:  # classified: skipped (not DICOM), refused (policy) or failed
            outcome, reason = classify(exc)
            return Done(f.index, f.rel, outcome, reason, error=exc)
        if findings:  # a plan's output failed: findings name the output's path, the check and the tag
            return Done(f.index, f.rel, Outcome.FAILED,
                        f"verification: {len(findings)} finding(s), first: {findings[0]}", result=res)
        return Done(f.index, f.rel, Outcome.WRITTEN, result=res, output=out)
