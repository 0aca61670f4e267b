"""Clean Descriptors by vocabulary: only known clinical words survive.

A description such as ``CT CHEST W/ CONTRAST 5MM`` is useful to a reader; one
such as ``CT CHEST SMITH JOHN 12/03/1970`` must lose the name and the date.
Rather than guess what a name looks like, we keep only words from a clinical
word list (anatomy, modality, technique, contrast, laterality, views, units)
and short numbers, optionally with units. Names, IDs and dates are not on the
list, so they never survive.
"""

from __future__ import annotations

import re
from pathlib import Path

_SPLIT = re.compile(r"[-/+_]")
_STRIP = ".,;:()[]{}\"'!?*#=<>"
_NUMBER = re.compile(r"^\d{1,3}(?:[.,]\d{1,2})?$")
_NUMBER_UNIT = re.compile(r"^(\d{1,4}(?:[.,]\d{1,2})?)([a-z%°]+)$")
_CACHE_LIMIT = 4096


class Vocabulary:
    """A set of clinical words and units, loaded from plain text files (one word a line)."""

    def __init__(self, words: set[str], units: set[str]) -> None:
        self.words = {w.lower() for w in words}
        self.units = {u.lower() for u in units}
        self._cleaned: dict[str, str] = {}  # descriptions repeat for every image of a series

    @classmethod
    def from_files(cls, paths: list[Path]) -> "Vocabulary":
        words: set[str] = set()
        units: set[str] = set()
        for p in paths:
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                if line.lower().startswith("unit:"):
                    units.add(line[5:].strip())
                else:
                    words.update(line.split())
        return cls(words, units)

    def _piece_ok(self, piece: str) -> tuple[bool, bool]:
        """(allowed, is_number) for one piece of a word."""
        p = piece.lower()
        if not p:
            return True, False
        if p in self.words or p in self.units:
            return True, False
        if _NUMBER.match(p):
            return True, True
        m = _NUMBER_UNIT.match(p)
        if m and m.group(2) in self.units:
            return True, True
        return False, False

    def word_ok(self, word: str) -> bool:
        """A word survives when every piece is known and at most one piece is a number."""
        w = word.strip(_STRIP)
        if not w:
            return False
        numbers = 0
        for piece in _SPLIT.split(w):
            ok, is_num = self._piece_ok(piece.strip(_STRIP))
            if not ok:
                return False
            numbers += is_num
        return numbers <= 1

    def clean(self, text: str) -> str:
        """Keep the known words of ``text``, in order, separated by single spaces."""
        done = self._cleaned.get(text)
        if done is None:
            if len(self._cleaned) >= _CACHE_LIMIT:
                self._cleaned.clear()
            kept = [w.strip(_STRIP) for w in text.split() if self.word_ok(w)]
            done = self._cleaned[text] = " ".join(k for k in kept if k)
        return done
