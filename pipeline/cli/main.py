"""Entry point of the `telerad` command."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

import pipeline.cli as cli_pkg
from pipeline.exceptions import TeleradError

app = typer.Typer(
    name="telerad",
    help="De-identify DICOM studies on site and send them to remote readers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_command_modules() -> None:
    for mod in sorted(pkgutil.iter_modules(cli_pkg.__path__), key=lambda m: m.name):
        if mod.name in {"main", "common"}:
            continue
        module = importlib.import_module(f"{cli_pkg.__name__}.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_command_modules()


def main() -> None:
    """Run the CLI; Telerad's own errors become one clear line and exit code 2."""
    try:
        app()
    except TeleradError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
