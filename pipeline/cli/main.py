"""Entry point of the `telerad` command.

Each command module registers its commands with ``register(app)``. The
command line imports only the module of the command it runs (``COMMANDS``),
since importing all of them costs more than many commands take; anything else
(``--help``, an unknown name, ``from pipeline.cli.main import app``) gets
every command.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from functools import lru_cache

import typer

import pipeline.cli as cli_pkg
from pipeline.exceptions import TeleradError

#: First argument -> the module that registers it (tests/foundation checks it against the modules).
COMMANDS = {
    "anonymize": "anonymize",
    "audit": "audit",
    "submit": "batches", "worker": "batches", "status": "batches", "retry": "batches", "cancel": "batches", "demo": "batches",
    "verify": "deid", "profile": "deid",
    "watch": "inbox", "up": "inbox",
    "keys": "keys",
    "listen": "listen",
    "share": "reader", "reader": "reader",
    "reidentify": "reidentify",
    "serve": "serve",
    "review": "review",
}


def command_modules() -> list[str]:
    """Every module of ``pipeline.cli`` that registers commands."""
    return sorted(m.name for m in pkgutil.iter_modules(cli_pkg.__path__) if m.name not in {"main", "common"})


@lru_cache(maxsize=None)
def build_app(command: str | None = None) -> typer.Typer:
    """The Typer app with ``command``'s module registered, or every module for None."""
    app = typer.Typer(
        name="telerad",
        help="De-identify DICOM studies on site and send them to remote readers.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _group() -> None:
        """De-identify DICOM studies on site and send them to remote readers."""
        # A callback keeps `telerad CMD ...` a group even with one module's one command
        # registered (Typer would otherwise run that command without its name).

    names = [COMMANDS[command]] if command in COMMANDS else command_modules()
    for name in names:
        register = getattr(importlib.import_module(f"{cli_pkg.__name__}.{name}"), "register", None)
        if register is not None:
            register(app)
    return app


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # `from pipeline.cli.main import app`: every command
        return build_app(None)
    raise AttributeError(name)


def main() -> None:
    """Run the CLI; Telerad's own errors become one clear line and exit code 2."""
    import logging

    from pipeline.permissions import make_process_private

    make_process_private()  # before anything is created: files 0600, folders 0700
    # A command speaks through its own output; the library's log lines reach the terminal
    # only where a command sets up logging (worker, watch, up), never as stray stderr lines.
    logging.getLogger("telerad").addHandler(logging.NullHandler())
    app = build_app(sys.argv[1] if len(sys.argv) > 1 else None)
    try:
        app()
    except TeleradError as exc:
        from pipeline.cli.common import shown

        typer.secho(f"error: {shown(exc, keep_newlines=True)}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
