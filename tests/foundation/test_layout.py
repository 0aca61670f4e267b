"""The library stays a library: `pipeline` imports no Celery; `workers` stays thin."""

from __future__ import annotations

import ast
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
        assert list(task.run.__code__.co_varnames[: task.run.__code__.co_argcount]) in (["self", "batch_id"], ["batch_id"])
