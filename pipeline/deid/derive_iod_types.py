"""Derive ``data/iod-attribute-types.json`` from Part 3's module tables as highdicom ships them.

    .venv/bin/python -m pipeline.deid.derive_iod_types        # rewrite the table
    .venv/bin/python -m pipeline.deid.derive_iod_types --check  # exit 1 if it differs

Build-time only: highdicom (MIT, the ``test`` extra) is never imported at run
time. Its private files ``_standard/iod_module_map.json``,
``module_attribute_map.json`` and ``sop_class_iod_map.json`` are read by path
and turned into a compact table: SOP Class UID -> IOD -> modules, and per
module a tree of tags (hex) with their Type (1, 1C, 2, 2C, 3) and, for
sequences, the Types inside their items. Equal subtrees (the macros many
modules share) are stored once, so the table loads in milliseconds. ``pipeline/deid/iodtypes.py`` reads it.
Provenance (highdicom's version, each source file's SHA-256) is recorded in it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

from pydicom._dicom_dict import RepeatersDictionary
from pydicom.datadict import tag_for_keyword

OUT = Path(__file__).parent / "data" / "iod-attribute-types.json"
SOURCES = ("sop_class_iod_map.json", "iod_module_map.json", "module_attribute_map.json")
TYPES = ("1", "1C", "2", "2C", "3")
# Repeating groups (overlays 60xx): stored under their first group, as the run time looks them up.
_REPEATERS = {entry[4]: int(mask.replace("x", "0"), 16) for mask, entry in RepeatersDictionary.items()}


def _tag(keyword: str) -> int | None:
    tag = tag_for_keyword(keyword)
    return tag if tag is not None else _REPEATERS.get(keyword)


def highdicom_standard_dir() -> tuple[Path, str]:
    """highdicom's ``_standard`` folder and version, found without importing the package."""
    spec = importlib.util.find_spec("highdicom")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("derive_iod_types: highdicom is not installed; pip install -e '.[test]'")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    version = {}
    exec((pkg / "version.py").read_text(encoding="utf-8"), version)  # a one-line __version__ file
    return pkg / "_standard", str(version["__version__"])


def derive(source: Path, version: str) -> dict:
    """The compact table, as a JSON-ready dict (deterministic: sorted keys everywhere)."""
    raw = {name: (source / name).read_bytes() for name in SOURCES}
    sop_iod = json.loads(raw["sop_class_iod_map.json"])
    iod_modules = json.loads(raw["iod_module_map.json"])
    module_attrs = json.loads(raw["module_attribute_map.json"])
    unknown: set[str] = set()
    modules: dict[str, dict] = {}
    for name, attrs in module_attrs.items():
        tree: dict = {}
        for a in attrs:
            kind = a.get("type")
            if kind not in TYPES:
                continue  # a few rows carry no Type ("None"): nothing to resolve by
            tags = [_tag(k) for k in [*a["path"], a["keyword"]]]
            if any(t is None for t in tags):
                unknown.update(k for k, t in zip([*a["path"], a["keyword"]], tags) if t is None)
                continue
            node = tree
            for t in tags[:-1]:
                entry = node.setdefault(f"{t:08X}", ["3"])
                if len(entry) == 1:
                    entry.append({})
                node = entry[1]
            key = f"{tags[-1]:08X}"
            entry = node.get(key)
            if entry is None:
                node[key] = [kind]
            elif TYPES.index(kind) < TYPES.index(entry[0]):
                entry[0] = kind  # listed twice (two macros): the stronger Type holds
        modules[name] = tree
    trees: list[dict] = []
    seen: dict[str, int] = {}
    module_roots = {name: _intern(tree, trees, seen) for name, tree in sorted(modules.items())}
    return {
        "provenance": {
            "source": "highdicom (MIT), highdicom/_standard/*.json: DICOM PS3.3 IOD module and "
                      "module attribute tables",
            "highdicom_version": version,
            "standard_edition": "not recorded by highdicom; identified by highdicom_version and the "
                                "SHA-256 of its files",
            "sha256": {name: hashlib.sha256(raw[name]).hexdigest() for name in SOURCES},
            "keywords_unknown_to_pydicom": sorted(unknown),
            "derived_by": "python -m pipeline.deid.derive_iod_types",
        },
        "sop_classes": dict(sorted(sop_iod.items())),
        "iods": {iod: sorted({m["key"] for m in mods}) for iod, mods in sorted(iod_modules.items())},
        "modules": module_roots,
        "trees": trees,
    }


def _intern(tree: dict, trees: list[dict], seen: dict[str, int]) -> int:
    """Store ``tree`` once in ``trees`` and return its index; equal subtrees (macros that many
    modules include, such as the code sequence macro) share one entry. A leaf is its Type; a
    sequence is ``[type, index of its items' tree]``."""
    out: dict = {}
    for key in sorted(tree):
        entry = tree[key]
        out[key] = [entry[0], _intern(entry[1], trees, seen)] if len(entry) > 1 and entry[1] else entry[0]
    canonical = json.dumps(out, sort_keys=True, separators=(",", ":"))
    index = seen.get(canonical)
    if index is None:
        index = seen[canonical] = len(trees)
        trees.append(out)
    return index


def render(table: dict) -> str:
    return json.dumps(table, sort_keys=True, separators=(",", ":")) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed table, write nothing")
    args = ap.parse_args(argv)
    source, version = highdicom_standard_dir()
    text = render(derive(source, version))
    if args.check:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print(f"{OUT.name}: {'up to date' if same else 'DIFFERS from a fresh derivation'}")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(text) // 1024} KiB) from highdicom {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
