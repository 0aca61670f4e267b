"""Each attribute's Type (1, 1C, 2, 2C, 3) in each IOD, at every depth of sequences.

PS3.15 resolves its compound actions by the IOD: X/Z/D is X for a Type 3
attribute, Z for Type 2 and D for Type 1. The engine therefore needs the Type
of an attribute where it stands: in this SOP Class, inside these sequences.
``data/iod-attribute-types.json`` (derived from Part 3 by
``derive_iod_types.py``) holds the module tables; here an IOD's modules are
read as a tree of ``TypeNode``s, one per sequence path, built lazily and kept
for the engine's life (an attribute listed by two modules takes the stronger
Type), so the engine can cache its per-tag plans on the node.

An attribute the IOD does not list has Type ``None``; a file of a SOP Class
the table does not know gets the ``untyped`` node at every depth, which is
what the engine did before it knew Types.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

TABLE = Path(__file__).parent / "data" / "iod-attribute-types.json"
_ORDER = {"1": 0, "1C": 1, "2": 2, "2C": 3, "3": 4}


@lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads(TABLE.read_text(encoding="utf-8"))


def provenance() -> dict:
    return dict(_table()["provenance"])


def iod_for(sop_class_uid: str) -> str | None:
    return _table()["sop_classes"].get(sop_class_uid)


def lookup_tag(tag: int) -> int:
    """The tag the table lists: repeating overlay groups (60xx) under 6000."""
    group = tag >> 16
    if 0x6000 <= group <= 0x601E and not group & 1:
        return 0x60000000 | (tag & 0xFFFF)
    return tag


class TypeNode:
    """The Types of the attributes of one dataset level (the top, or a sequence's items).

    A level is described by every module (or macro) tree that reaches it; the
    trees are merged only where asked (an attribute listed twice takes the
    stronger Type), so a node costs nothing until the engine plans a tag on it.
    ``plans`` is the engine's cache of per-tag plans at this level (for one profile).
    """

    __slots__ = ("tag", "parent", "_trees", "_children", "_types", "plans", "iod")

    def __init__(self, trees: list[dict] | None, *, tag: int = 0, parent: "TypeNode | None" = None,
                 iod: str | None = None) -> None:
        self.tag = tag
        self.parent = parent
        self._trees = trees
        self._children: dict[int, TypeNode] = {}
        self._types: dict[int, str | None] = {}
        self.plans: dict = {}
        self.iod = iod

    @property
    def typed(self) -> bool:
        return self._trees is not None

    def _ancestor(self, tag: int) -> "TypeNode | None":
        node = self
        while node is not None and node.parent is not None:
            if node.tag == tag:
                return node
            node = node.parent
        return None

    def _entries(self, tag: int) -> list:
        key = f"{lookup_tag(tag):08X}"
        return [e for tree in self._trees or () if (e := tree.get(key)) is not None]

    def type_of(self, tag: int) -> str | None:
        """The Type of ``tag`` at this level, or None when the IOD does not list it here."""
        try:
            return self._types[tag]
        except KeyError:
            found = self._types[tag] = self._type_of(tag)
            return found

    def _type_of(self, tag: int) -> str | None:
        if self._trees is None:
            return None
        types = [e if isinstance(e, str) else e[0] for e in self._entries(tag)]
        if types:
            return min(types, key=_ORDER.__getitem__)
        same = self._ancestor(tag)  # a recursive macro (SR content items in content items)
        if same is not None and same.parent is not None:
            return same.parent.type_of(tag)
        return None

    def child(self, tag: int) -> "TypeNode":
        """The node for the items of sequence ``tag`` at this level."""
        node = self._children.get(tag)
        if node is None:
            if self._trees is None:
                node = self  # untyped all the way down
            else:
                trees = _table()["trees"]
                ids = sorted({e[1] for e in self._entries(tag) if not isinstance(e, str)})
                if ids:
                    node = TypeNode([trees[i] for i in ids], tag=tag, parent=self, iod=self.iod)
                else:
                    node = self._ancestor(tag) or TypeNode([], tag=tag, parent=self, iod=self.iod)
            self._children[tag] = node
        return node


class IodTypes:
    """Root nodes per SOP Class for one engine: nodes (and the plans cached on them) live as long as it."""

    def __init__(self) -> None:
        self.untyped = TypeNode(None)
        self._roots: dict[str, TypeNode] = {}

    def root(self, sop_class_uid: str) -> TypeNode:
        node = self._roots.get(sop_class_uid)
        if node is None:
            iod = iod_for(sop_class_uid)
            if iod:
                table = _table()
                trees = [table["trees"][table["modules"][m]] for m in table["iods"].get(iod, ())
                         if m in table["modules"]]
                node = TypeNode(trees, iod=iod)
            else:
                node = self.untyped
            self._roots[sop_class_uid] = node
        return node
