"""The de-identification engine's CPU time per kind of file, this tree against a git revision.

    .venv/bin/python -m bench.engine_ab --base main [--size-mb 60] [--rounds 3] [--repeat 12]

Writes a small corpus (``bench/corpus.py``, all five kinds), extracts ``pipeline/``
and ``config/`` of ``--base`` with ``git archive`` into a temporary folder, and
runs the same timing loop in a fresh process for each tree, alternating, for
``--rounds`` rounds: one engine (``teleradiology``), every file de-identified
``--repeat`` times, the best CPU time (``time.process_time``) of each kind
counting. CPU time rather than wall time: the machine is shared and disk writes
vary, while the engine's work per file does not. Prints milliseconds per kind
and the ratio of the totals (this tree / base).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_LOOP = r"""
import json, sys, time, tempfile
from collections import defaultdict
from pathlib import Path
from pipeline.deid import Deidentifier, load_profile
from pipeline.pseudonyms import Pseudonyms
corpus, repeat = Path(sys.argv[1]), int(sys.argv[2])
files = sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix != ".json")
deid = Deidentifier(load_profile("teleradiology"), Pseudonyms(b"engine-ab-secret-0123456789abcdef", "AB"))
out = Path(tempfile.mkdtemp(prefix="engine-ab-"))
best = defaultdict(lambda: float("inf"))
for _ in range(repeat):
    spent = defaultdict(float)
    for f in files:
        t = time.process_time()
        deid.deidentify_file(f, out, digest=False)
        spent[f.parent.name.split("_")[0]] += time.process_time() - t
    for kind, s in spent.items():
        best[kind] = min(best[kind], s)
print(json.dumps(best))
"""


def _time(tree: Path, corpus: Path, repeat: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    run = subprocess.run([sys.executable, "-c", _LOOP, str(corpus), str(repeat)], cwd=tree, env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    from bench.corpus import generate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="main", help="git revision to compare with (default main)")
    ap.add_argument("--size-mb", type=float, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=12)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="engine-ab-") as tmp:
        corpus, base = Path(tmp) / "corpus", Path(tmp) / "base"
        generate(corpus, size_mb=args.size_mb, quiet=True)
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base, "pipeline", "config"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        best: dict[str, dict[str, float]] = {"base": {}, "this": {}}
        for _ in range(args.rounds):
            for name, tree in (("base", base), ("this", ROOT)):
                for kind, s in _time(tree, corpus, args.repeat).items():
                    best[name][kind] = min(best[name].get(kind, float("inf")), s)
    kinds = sorted(best["this"])
    print(f"{'kind':<6} {'base ms':>9} {'this ms':>9} {'ratio':>6}")
    for k in kinds:
        b, t = best["base"][k] * 1000, best["this"][k] * 1000
        print(f"{k:<6} {b:9.1f} {t:9.1f} {t / b:6.2f}")
    total_b, total_t = sum(best["base"].values()), sum(best["this"].values())
    print(f"{'total':<6} {total_b * 1000:9.1f} {total_t * 1000:9.1f} {total_t / total_b:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
