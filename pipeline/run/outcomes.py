"""What a study run produced: every file's outcome, the written files' results, and the summary.

Every count is taken from these outcomes, whatever door or executor ran the
study, so ``files_seen = written + skipped + refused + failed`` holds
everywhere, and the reasons name checks and tags, never values.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.deid import DeidentifiedFile
from pipeline.study import FileOutcome, Outcome, Walk, counts


@dataclass
class StudyRun:
    """The outcome of one study (sorted by file), with the written files' results by index."""

    walked: Walk
    outcomes: list[FileOutcome]
    results: dict[int, DeidentifiedFile]  # written and planned files (and a plan's failed ones)
    interrupted: bool = False
    seconds: float = 0.0
    jobs: int = 1
    verified: bool = True
    plan: bool = False

    def of(self, kind: Outcome) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.outcome is kind]

    @property
    def written(self) -> list[FileOutcome]:
        return self.of(Outcome.WRITTEN)

    def produced(self) -> list[tuple[str, DeidentifiedFile]]:
        """``(source rel, result)`` of every written file, in the walk's order."""
        return [(o.rel, self.results[o.index]) for o in self.written]

    def warnings(self) -> list[tuple[FileOutcome, str]]:
        """Burned-in policy "warn": files written unmasked, with the warning."""
        out = []
        for o in self.written:
            pixels = self.results[o.index].pixels
            if pixels is not None and pixels.warning:
                out.append((o, pixels.warning))
        return out

    def counts(self) -> dict[str, int]:
        return counts(self.outcomes)

    @property
    def not_processed(self) -> list[str]:
        done = {o.index for o in self.outcomes}
        return [f.rel for f in self.walked.files if f.index not in done]

    def summary(self) -> dict[str, object]:
        """The summary ``telerad anonymize`` prints (and ``--json`` writes), with a ``results`` list."""
        written = self.written

        def listed(kind: Outcome) -> list[dict[str, str]]:
            return [{"file": o.rel, "reason": o.reason} for o in self.outcomes if o.outcome is kind]

        def extra(o: FileOutcome) -> dict[str, object]:
            res = self.results.get(o.index)
            if res is None:
                return {}
            out: dict[str, object] = {"study": res.cloud_study_id, "masked": res.pixels_cleaned}
            if res.pixels is not None and res.pixels.warning:
                out["warning"] = res.pixels.warning
            if self.plan:  # action counts only for a plan
                out = {"actions": res.actions, **out}
            return out

        return {
            "files_seen": self.walked.seen,
            "bytes_in": sum(f.size for f in self.walked.files),
            "studies": len({self.results[o.index].cloud_study_id for o in written}),
            "written": 0 if self.plan else len(written),
            "bytes_out": 0 if self.plan else sum(o.size for o in written),
            "skipped": listed(Outcome.SKIPPED),
            "refused": listed(Outcome.REFUSED),
            "failed": listed(Outcome.FAILED),
            "masked": sum(1 for o in written if self.results[o.index].pixels_cleaned),
            "warned": [{"file": o.rel, "reason": w} for o, w in self.warnings()],
            "not_processed": self.not_processed,
            "interrupted": self.interrupted,
            "jobs": self.jobs,
            "verified": self.verified,
            "seconds": round(self.seconds, 3),
            "results": [{"rel": o.rel, "outcome": o.outcome.value, "relpath": o.relpath,
                         **({"reason": o.reason} if o.reason else {}), **extra(o)}
                        for o in self.outcomes],
        }
