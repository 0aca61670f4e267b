"""The loops the de-identification benchmark compares against, each run as its own process.

    python -m bench.tools pydicom SRC OUT            # dcmread + save_as, no changes
    python -m bench.tools dicom-anonymizer SRC OUT   # dicom-anonymizer's default rules, per file

dicom-anonymizer's own command reads one flat folder (no subfolders), so its
per-file function, the one its command calls with its defaults, is driven here
over every file of the tree. dicognito is run through its own command, which
walks folders itself (see ``bench/deid.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def pydicom_loop(src: Path, out: Path) -> int:
    import pydicom

    n = 0
    for i, f in enumerate(_files(src)):
        ds = pydicom.dcmread(f)
        ds.save_as(out / f"{i:06d}.dcm")
        n += 1
    return n


def dicom_anonymizer_loop(src: Path, out: Path) -> int:
    from dicomanonymizer import anonymize_dicom_file

    n = 0
    for i, f in enumerate(_files(src)):
        anonymize_dicom_file(str(f), str(out / f"{i:06d}.dcm"))
        n += 1
    return n


LOOPS = {"pydicom": pydicom_loop, "dicom-anonymizer": dicom_anonymizer_loop}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in LOOPS:
        print(f"usage: python -m bench.tools {{{','.join(LOOPS)}}} SRC OUT", file=sys.stderr)
        return 2
    src, out = Path(args[1]), Path(args[2])
    out.mkdir(parents=True, exist_ok=True)
    n = LOOPS[args[0]](src, out)
    print(f"{n} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
