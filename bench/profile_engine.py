"""Where the de-identification engine spends its time, with numbers, on one process.

    .venv/bin/python -m bench.profile_engine [--corpus DIR | --size-mb 100] [--repeat 3]

Not a speed test of the engine alone but evidence for whoever works on it: the
same files, in the same process, one after another (best of ``--repeat`` runs):

- ``pydicom loop``: ``dcmread`` + ``save_as``, no changes (the issue's baseline)
- ``streaming floor``: what the engine's design costs with no de-identification at
  all: header read with ``stop_before_pixels``, header written by ``dcmwrite``,
  pixel bytes copied through
- ``streaming floor + every element converted``: the same, with every element
  turned from raw bytes into a Python value first (``ds[tag]``, at every depth),
  as the engine's walk does, so ``dcmwrite`` has to encode every value again
- ``engine, SHA-256 while writing``: ``Deidentifier.deidentify_file`` as a batch
  runs it (the manifest needs each file's SHA-256)
- ``engine, no digest``: as ``telerad anonymize`` runs it (no manifest, so no
  SHA-256; pixel bytes copied by the kernel)
- ``engine, no digest, header verified before writing``: exactly what
  ``telerad anonymize --jobs 1`` does per file

and a breakdown of the engine's own time by stage (read, walk, encode, write,
verifier), plus cProfile's top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pydicom

from bench import corpus as corpus_mod
from bench.common import table, write_result

SECRET = b"telerad-bench-secret-0123456789abcdef"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


PROFILE = {"name": ""}  # set by main: --profile, or the default profile of config/default.toml


def default_profile() -> str:
    import tomllib

    from pipeline.settings import config_dir

    return tomllib.loads((config_dir() / "default.toml").read_text()).get("profile", "basic")


def _engine():
    from pipeline.deid import Deidentifier, load_profile
    from pipeline.pseudonyms import Pseudonyms

    return Deidentifier(load_profile(PROFILE["name"] or default_profile()), Pseudonyms(SECRET, "BENCH"))


def pydicom_loop(files: list[Path], out: Path) -> None:
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.save_as(out / f"{i:06d}.dcm")


def _floor(files: list[Path], out: Path, *, convert: bool) -> None:
    """Header read with ``stop_before_pixels`` and written by ``dcmwrite``, pixel bytes copied as they are."""
    for i, f in enumerate(files):
        with open(f, "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            stop = fh.tell()
        if convert:
            _convert_all(ds)
        header = io.BytesIO()
        pydicom.dcmwrite(header, ds, enforce_file_format=True)
        with open(out / f"{i:06d}.dcm", "wb") as dst, open(f, "rb") as src:
            dst.write(header.getbuffer())
            src.seek(stop)
            shutil.copyfileobj(src, dst, 4 * 1024 * 1024)


def _convert_all(ds) -> None:
    for tag in list(ds.keys()):
        elem = ds[tag]  # turn every RawDataElement into a value, as a converting walk would
        if elem.VR == "SQ":
            for item in elem.value:
                _convert_all(item)


def streaming_floor(files: list[Path], out: Path) -> None:
    """pydicom's own reader and writer with no de-identification: the floor of a pydicom-based engine."""
    _floor(files, out, convert=False)


def converted_floor(files: list[Path], out: Path) -> None:
    """The streaming floor, plus converting every element once: what re-encoding everything costs."""
    _floor(files, out, convert=True)


def engine_loop(files: list[Path], out: Path) -> None:
    deid = _engine()
    for f in files:
        deid.deidentify_file(f, out)


def engine_no_digest(files: list[Path], out: Path) -> None:
    deid = _engine()
    for f in files:
        deid.deidentify_file(f, out, digest=False)


def engine_verified(files: list[Path], out: Path) -> None:
    """As ``telerad anonymize`` per file: no digest, each header verified before it is written."""
    from pipeline.deid.verify import SourceVerifiers, forget_caches

    forget_caches()  # each repeat is a first pass, as in a new `telerad anonymize` process
    deid = _engine()
    verifiers = SourceVerifiers(deid.pseudonyms, deid.profile)  # as anonymize: one per source's identifiers

    def gate(header: bytes, relpath: str, original: Any) -> None:
        started, cpu = time.perf_counter(), time.process_time()
        if verifiers.for_original(original).verify_header(header, relpath):
            raise RuntimeError("the verifier found something in a benchmark file")
        VERIFIER_TIME["s"] += time.perf_counter() - started
        VERIFIER_TIME["cpu_s"] += time.process_time() - cpu

    started, cpu = time.perf_counter(), time.process_time()
    VERIFIER_TIME["s"] = VERIFIER_TIME["cpu_s"] = 0.0
    for f in files:
        deid.deidentify_file(f, out, gate, digest=False)
    VERIFIER_TIME["share"] = VERIFIER_TIME["s"] / (time.perf_counter() - started)
    VERIFIER_TIME["cpu_share"] = VERIFIER_TIME["cpu_s"] / (time.process_time() - cpu)
    VERIFIER_SHARES.append((VERIFIER_TIME["share"], VERIFIER_TIME["cpu_share"]))


# The gate's own time in the last engine_verified run (wall and CPU), and its share of the run.
VERIFIER_TIME = {"s": 0.0, "cpu_s": 0.0, "share": 0.0, "cpu_share": 0.0}
VERIFIER_SHARES: list[tuple[float, float]] = []  # (wall share, CPU share) of every run


def _best(fn: Callable[[list[Path], Path], None], files: list[Path], work: Path,
          repeat: int) -> tuple[float, float]:
    """Best wall seconds and best CPU seconds of ``repeat`` runs."""
    times, cpu = [], []
    for _ in range(repeat):
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        t, c = time.perf_counter(), time.process_time()
        fn(files, out)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    shutil.rmtree(work / "out", ignore_errors=True)
    return min(times), min(cpu)


def stage_breakdown(files: list[Path], work: Path) -> dict[str, float]:
    """Seconds per stage of the engine as a batch runs it (SHA-256 on), by wrapping its functions (one run)."""
    from pipeline import dicomio
    from pipeline.deid import engine as engine_mod

    spent: dict[str, float] = {}
    originals: dict[Any, Any] = {}

    def timed(owner: Any, name: str, label: str) -> None:
        fn = getattr(owner, name)
        originals[(id(owner), name)] = (owner, name, fn)

        depth = [0]  # the walk recurses through the same method: count the outermost call only

        def wrapper(*a: Any, **k: Any) -> Any:
            depth[0] += 1
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[label] = spent.get(label, 0.0) + time.perf_counter() - t

        setattr(owner, name, wrapper)

    deid = _engine()
    read, walk, write, encode = ("read (cut the header into raw elements)", "walk (plans and handlers)",
                                 "write (encode, SHA-256, pixel copy, rename)", "  of which encode (header)")
    timed(engine_mod.dicomio, "read", read)
    timed(deid, "_walk", walk)
    timed(engine_mod.dicomio, "write", write)
    timed(dicomio.dicomraw, "encode", encode)
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t = time.perf_counter()
    try:
        for f in files:
            deid.deidentify_file(f, out)
    finally:
        total = time.perf_counter() - t
        for owner, name, fn in originals.values():
            setattr(owner, name, fn)
        shutil.rmtree(out, ignore_errors=True)
    ordered = {k: spent.get(k, 0.0) for k in (read, walk, write, encode)}
    ordered["other (guards, originals, updaters, result records)"] = total - sum(
        v for k, v in ordered.items() if not k.startswith("  "))
    ordered["total"] = total
    return ordered


def top_functions(files: list[Path], work: Path, n: int = 15) -> list[dict[str, Any]]:
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    deid = _engine()
    prof = cProfile.Profile()
    prof.enable()
    for f in files:
        deid.deidentify_file(f, out)
    prof.disable()
    shutil.rmtree(out, ignore_errors=True)
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(file).name}:{line}({func})", "calls": nc,
                     "own_s": round(tt, 3), "cumulative_s": round(ct, 3)})
    rows.sort(key=lambda r: r["own_s"], reverse=True)
    return rows[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, help="an existing corpus (default: generate one)")
    ap.add_argument("--size-mb", type=float, default=100)
    ap.add_argument("--mix", default=corpus_mod.DEFAULT_MIX)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", default="", help="de-identification profile (default: config/default.toml's)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--results-dir", type=Path, default=None)
    args = ap.parse_args(argv)

    PROFILE["name"] = args.profile or default_profile()
    work = Path(tempfile.mkdtemp(prefix="telerad-bench-prof-", dir=args.workdir))
    try:
        root = args.corpus
        corpus_info = None
        if root is None:
            c = corpus_mod.generate(work / "corpus", size_mb=args.size_mb, mix=args.mix, seed=args.seed, quiet=True)
            root, corpus_info = c.root, c.summary()
        files = _files(root)
        nbytes = sum(f.stat().st_size for f in files)
        variants = [
            ("pydicom loop (baseline)", pydicom_loop),
            ("streaming floor (no de-id)", streaming_floor),
            ("streaming floor + every element converted", converted_floor),
            ("engine, SHA-256 while writing (a batch)", engine_loop),
            ("engine, no digest", engine_no_digest),
            ("engine, no digest, header verified before writing (anonymize)", engine_verified),
        ]
        rows, results = [], []
        base = base_cpu = None
        for name, fn in variants:
            s, cpu = _best(fn, files, work, args.repeat)
            base, base_cpu = base or s, base_cpu or cpu
            results.append({"name": name, "seconds": s, "cpu_seconds": cpu, "files_per_s": len(files) / s,
                            "mb_per_s": nbytes / 1e6 / s, "ratio_to_pydicom_loop": base / s,
                            "cpu_ratio_to_pydicom_loop": base_cpu / cpu})
            rows.append([name, s, len(files) / s, nbytes / 1e6 / s, f"{base / s:.2f}x", cpu,
                         f"{base_cpu / cpu:.2f}x"])
        # Time inside the gate / the whole anonymize loop, each run a first pass (caches dropped);
        # the median of the runs, in CPU time (what the verifier costs, not how busy the machine was).
        cpu_shares = sorted(c for _, c in VERIFIER_SHARES)
        verifier_share = cpu_shares[len(cpu_shares) // 2]
        wall_shares = sorted(w for w, _ in VERIFIER_SHARES)
        print(f"\nEngine ablation: {len(files)} files, {nbytes / 1e6:.1f} MB, profile {PROFILE['name']}, "
              f"one process, best of {args.repeat}")
        print(table(["variant", "wall s", "files/s", "MB/s", "speed vs pydicom loop", "CPU s",
                     "CPU vs pydicom loop"], rows))

        print(f"verifier's cost: {100 * verifier_share:.1f}% of anonymize's CPU time, median of {len(cpu_shares)} "
              f"first passes (wall: {100 * wall_shares[len(wall_shares) // 2]:.1f}%; goal: under 10%)")

        stages = stage_breakdown(files, work)
        total = stages["total"]
        print(f"\nEngine time by stage (one run, {total:.2f} s)")
        print(table(["stage", "s", "share"], [[k, v, f"{100 * v / total:.0f}%"] for k, v in stages.items()]))

        top = top_functions(files, work)
        print("\ncProfile, top functions by own time (profiler overhead inflates small calls)")
        print(table(["function", "calls", "own s", "cum s"],
                    [[r["function"], r["calls"], r["own_s"], r["cumulative_s"]] for r in top]))
        write_result("profile_engine", {
            "corpus": corpus_info or {"root": str(root), "files": len(files), "bytes": nbytes},
            "repeat": args.repeat, "profile": PROFILE["name"], "variants": results, "stages": stages, "top_functions": top,
            "verifier_share_of_anonymize": verifier_share,
            "verifier_shares_wall_cpu": VERIFIER_SHARES,
        }, args.results_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
