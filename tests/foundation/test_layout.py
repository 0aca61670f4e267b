"""The library stays a library: `pipeline` imports no Celery; `workers` stays thin."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_importing_every_pipeline_module_loads_no_celery():
    """Import each module under pipeline/ in a fresh interpreter; celery and kombu stay unloaded."""
    modules = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts)
        for p in (REPO / "pipeline").rglob("*.py")
    )
    modules = [m.removesuffix(".__init__") for m in modules]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('celery', 'kombu', 'workers'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"pipeline pulled in: {out.stdout.strip()}"


def test_no_module_level_celery_import_in_pipeline_sources():
    """No `import celery`/`workers` at module level anywhere in pipeline/ (lazy imports in CLI commands only)."""
    for path in (REPO / "pipeline").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for n in names:
                    assert n.split(".")[0] not in ("celery", "kombu", "workers"), f"{path}: {n}"


def test_tasks_take_only_a_batch_id():
    """Celery tasks carry no paths, PHI or credentials: their only argument is the batch ID."""
    from workers.tasks import WORKFLOW

    for task in WORKFLOW:
        sig = task.si("3f2a0c1e-0000-4000-8000-000000000000")
        assert sig.args == ("3f2a0c1e-0000-4000-8000-000000000000",)
        run = inspect.unwrap(task.run)  # autoretry_for wraps run in a (*args, **kwargs) function
        assert list(run.__code__.co_varnames[: run.__code__.co_argcount]) in (["self", "batch_id"], ["batch_id"])


def _names(app) -> set[str]:
    return ({c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
            | {g.name for g in app.registered_groups})


def test_the_command_table_names_every_command_of_every_module():
    """`telerad CMD` imports only CMD's module, found in COMMANDS: the table must match what each
    module registers, or a command would be missing from the command line."""
    import typer

    from pipeline.cli import main

    registered: dict[str, str] = {}
    for name in main.command_modules():
        app = typer.Typer()
        module = __import__(f"pipeline.cli.{name}", fromlist=["register"])
        module.register(app)
        registered.update({command: name for command in _names(app)})
    assert registered == main.COMMANDS
    for command in main.COMMANDS:
        assert command in _names(main.build_app(command))


def test_a_command_runs_with_only_its_module_imported(tmp_path):
    """The command runs (by its name, with its arguments) with no other command module imported."""
    (tmp_path / "src").mkdir()
    code = (f"import sys; sys.argv = ['telerad', 'anonymize', {str(tmp_path / 'src')!r}, "
            f"{str(tmp_path / 'out')!r}, '--jobs', '1']\n"
            "from pipeline.cli import main\n"
            "try:\n    main.main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('pipeline.cli.')))\n")
    env = {**os.environ, "TELERAD_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert "0 files" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "['pipeline.cli.anonymize', 'pipeline.cli.common', 'pipeline.cli.main']"
