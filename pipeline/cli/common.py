"""Helpers shared by command modules (not a command module itself: ``main`` skips it)."""

from __future__ import annotations

import unicodedata

from pipeline.exceptions import SubmissionError

#: Unicode categories a terminal acts on instead of showing: controls (ESC, CR, BEL...),
#: format characters (bidi overrides, zero-width), line and paragraph separators.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def shown(value: object, *, keep_newlines: bool = False, markup: bool = False) -> str:
    r"""``value`` made safe to print: every control or format character as a visible escape.

    Every printer of the CLI passes file names, DICOM values, object keys and error
    messages through here, so a file named ``\x1b[2J...`` cannot clear the screen or
    print fake lines. ``keep_newlines`` keeps line breaks of our own multi-line
    messages; ``markup`` also escapes Rich markup (``[red]``) for ``console.print``.
    """
    text = str(value)
    out: list[str] = []
    for ch in text:
        if (ch == "\n" and keep_newlines) or unicodedata.category(ch) not in _UNPRINTABLE:
            out.append(ch)
            continue
        code = ord(ch)
        out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    safe = "".join(out)
    if markup:
        from rich.markup import escape

        safe = escape(safe)
    return safe


def parse_assignments(values: list[str] | None) -> dict[str, str]:
    """``--set Keyword=value`` pairs into a dict, with a clear error for a bad one."""
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SubmissionError(f"--set expects Keyword=value, got '{shown(item)}'")
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
    # Every cell through shown(): a value from a file or a manifest cannot drive the terminal.
    cells = [["" if c is None else shown(c) for c in row] for row in rows]
    if not sys.stdout.isatty():
        widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
        for line in [headers, *cells]:
            typer.echo("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table()
    for h in headers:
        table.add_column(h, no_wrap=h in no_wrap, overflow="fold")
    for i, row in enumerate(cells):
        table.add_row(*(escape(c) for c in row), style=(styles[i] if styles else None))
    Console().print(table)
