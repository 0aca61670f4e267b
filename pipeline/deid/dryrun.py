"""What de-identification would do to a file, without keeping any output.

The engine counts, per file, what each handler did to each attribute
(``DeidentifiedFile.actions``: keyword or tag -> action -> count). A plan is
those counts from a real run of the engine into a scratch folder whose output
is deleted at once, so the plan is exactly what a real run would do (including
the burned-in guard and the verifier), not what the profile intends.

Plans hold attribute keywords or tags and action names only, never element
values, so they can be printed and logged.

    from pipeline.deid.dryrun import plan_file, file_lines
    result, findings = plan_file(deid, src, scratch)
    print("\\n".join(file_lines(result.actions)))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

#: The order actions are shown in: what changes first, what is kept last.
ACTION_ORDER = (
    "pseudonymised", "remapped", "replaced", "overridden", "shifted", "cleaned", "hashed",
    "emptied", "removed", "kept", "kept empty",
)


def _action_key(action: str) -> tuple[int, str]:
    return (ACTION_ORDER.index(action) if action in ACTION_ORDER else len(ACTION_ORDER), action)


def plan_file(deid, src: Path, scratch: Path,
              verify: Callable[[Path, object], list] | None = None, *, submitted: str | None = None):
    """De-identify ``src`` into ``scratch``, optionally verify it, delete the output.

    Returns ``(DeidentifiedFile, findings)``; the engine's errors
    (``NotDicomError``, ``RefusedFileError``, ``DeidentificationError``...) pass
    through, as they would in a real run. ``verify(path, result)`` returns the
    verifier's findings for the written file; ``submitted`` as for ``deidentify_file``.
    """
    result = deid.deidentify_file(Path(src), Path(scratch), submitted=submitted)
    written = Path(scratch) / result.relpath
    try:
        findings = list(verify(written, result)) if verify is not None else []
    finally:
        written.unlink(missing_ok=True)
    return result, findings


def by_action(actions: dict[str, dict[str, int]]) -> list[tuple[str, list[tuple[str, int]]]]:
    """Per-attribute counts regrouped per action, in ``ACTION_ORDER``: [(action, [(attribute, n)])]."""
    grouped: dict[str, list[tuple[str, int]]] = {}
    for attr, counts in actions.items():
        for action, n in counts.items():
            grouped.setdefault(action, []).append((attr, n))
    return [(a, sorted(grouped[a], key=lambda x: x[0].lower())) for a in sorted(grouped, key=_action_key)]


def file_lines(actions: dict[str, dict[str, int]], indent: str = "    ") -> list[str]:
    """One line per action: ``removed (12): InstitutionName, OperatorsName x2, ...``."""
    out = []
    for action, attrs in by_action(actions):
        total = sum(n for _a, n in attrs)
        names = ", ".join(a if n == 1 else f"{a} x{n}" for a, n in attrs)
        out.append(f"{indent}{action} ({total}): {names}")
    return out


def totals_lines(totals: dict[str, dict[str, int]]) -> list[str]:
    """A table of every attribute and what was done to it over all files (``action_totals``)."""
    if not totals:
        return []
    width = max(len("attribute"), *(len(a) for a in totals))
    out = [f"{'attribute'.ljust(width)}  actions (elements)"]
    for attr in sorted(totals, key=str.lower):
        acts = sorted(totals[attr].items(), key=lambda kv: _action_key(kv[0]))
        out.append(f"{attr.ljust(width)}  " + ", ".join(f"{a} {n}" for a, n in acts))
    return out


def action_counts(totals: dict[str, dict[str, int]]) -> dict[str, int]:
    """Elements per action over all attributes, in ``ACTION_ORDER``."""
    c: Counter = Counter()
    for counts in totals.values():
        c.update(counts)
    return {a: c[a] for a in sorted(c, key=_action_key)}
