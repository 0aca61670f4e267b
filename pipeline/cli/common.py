"""Helpers shared by command modules (not a command module itself: ``main`` skips it)."""

from __future__ import annotations

from pipeline.exceptions import SubmissionError


def parse_assignments(values: list[str] | None) -> dict[str, str]:
    """``--set Keyword=value`` pairs into a dict, with a clear error for a bad one."""
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SubmissionError(f"--set expects Keyword=value, got '{item}'")
        out[key.strip()] = value
    return out
