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


def print_table(headers: list[str], rows: list[list[object]], *, empty: str | None = None,
                styles: list[str | None] | None = None, no_wrap: tuple[str, ...] = ()) -> None:
    """A table: rich's on a terminal; plain columns at full width when stdout is a pipe or file.

    Piped output is for scripts and for `less`: nothing is cut or folded, columns are
    padded with spaces, one row per line, the header first.
    """
    import sys

    import typer

    if not rows:
        if empty is not None:
            typer.echo(empty)
        return
    cells = [["" if c is None else str(c) for c in row] for row in rows]
    if not sys.stdout.isatty():
        widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
        for line in [headers, *cells]:
            typer.echo("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for h in headers:
        table.add_column(h, no_wrap=h in no_wrap, overflow="fold")
    for i, row in enumerate(cells):
        table.add_row(*row, style=(styles[i] if styles else None))
    Console().print(table)
