"""The audit chain: intact after appends; an edited, deleted or reordered line is named."""

from __future__ import annotations

import json

from pipeline.audit import AuditLog, entry_hash
from pipeline.testing import MemoryStore
from tests.audit.conftest import fill


def _lines(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines()


def _write(log: AuditLog, lines: list[str]) -> None:
    log.path.write_text("".join(line + "\n" for line in lines))


def test_appended_entries_form_an_intact_chain(log):
    """Each entry links to the one before; verify() finds nothing wrong."""
    fill(log, 5)
    entries = list(log.entries())
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0]["prev"] == "0" * 64
    assert all(b["prev"] == a["hash"] for a, b in zip(entries, entries[1:]))
    assert {"ts", "action", "batch_id", "actor", "outcome", "details"} <= set(entries[0])
    assert log.verify() == []


def test_an_empty_or_missing_log_is_intact(log):
    """No log yet is not an error."""
    assert log.verify() == []


def test_an_edited_value_is_caught_on_its_line(log):
    """Changing one count in line 3 is reported as an edit of line 3."""
    fill(log)
    lines = _lines(log)
    entry = json.loads(lines[2])
    entry["details"]["object_count"] = 999
    lines[2] = json.dumps(entry)
    _write(log, lines)
    problems = log.verify()
    assert len(problems) == 1 and problems[0].startswith("line 3:") and "edited" in problems[0]


def test_an_edit_with_a_recomputed_hash_is_caught_on_the_next_line(log):
    """Re-hashing the edited entry breaks the link from line 4."""
    fill(log)
    lines = _lines(log)
    entry = json.loads(lines[2])
    entry["outcome"] = "failed"
    entry["hash"] = entry_hash(entry)
    lines[2] = json.dumps(entry)
    _write(log, lines)
    problems = log.verify()
    assert len(problems) == 1 and problems[0].startswith("line 4:")


def test_a_deleted_entry_is_caught(log):
    """Removing line 3 shows at the line that now follows line 2, saying an entry is missing."""
    fill(log)
    lines = _lines(log)
    del lines[2]
    _write(log, lines)
    problems = log.verify()
    assert len(problems) == 1 and problems[0].startswith("line 3:") and "missing" in problems[0]


def test_reordered_entries_are_caught(log):
    """Swapping lines 2 and 3 is reported at both lines."""
    fill(log)
    lines = _lines(log)
    lines[1], lines[2] = lines[2], lines[1]
    _write(log, lines)
    problems = log.verify()
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 3", "line 4"]
    assert "out of order" in problems[1] and "reordered" in problems[2]


def test_garbage_and_blank_lines_are_caught(log):
    """A line that is not an entry, or a blanked one, is named."""
    fill(log, 3)
    lines = _lines(log)
    lines[1] = ""
    lines.insert(3, "not json at all")
    _write(log, lines)
    problems = log.verify()
    assert any(p.startswith("line 2: empty line") for p in problems)
    assert any(p.startswith("line 4: not a valid audit entry") for p in problems)


def test_a_torn_last_line_is_reported_and_appends_continue(log):
    """A crash mid-write leaves a partial line: it is flagged once, and the chain goes on after it."""
    fill(log, 3)
    with open(log.path, "ab") as fh:
        fh.write(b'{"seq": 4, "ts": "2026-')
    log.append("upload", batch_id="b9", actor="worker")
    problems = log.verify()
    assert len(problems) == 1 and problems[0].startswith("line 4:")
    assert [e["seq"] for e in log.entries()] == [1, 2, 3, 4]


def test_the_mirror_catches_a_truncated_or_rewritten_log(tmp_path):
    """Cutting the last entries, or rebuilding the whole chain, is caught against the mirror."""
    mirror = MemoryStore()
    log = AuditLog(tmp_path / "audit.jsonl", mirror=mirror)
    fill(log, 4)
    assert sorted(i.key for i in mirror.list("audit/")) == [f"audit/{n:012d}.json" for n in range(1, 5)]
    assert log.verify() == []
    lines = _lines(log)
    _write(log, lines[:3])  # drop the last entry: the chain alone still looks fine
    assert log.verify(mirror=False) == []
    problems = log.verify()
    assert len(problems) == 1 and "truncated" in problems[0]
    # Rewrite everything with fresh hashes: a self-consistent forgery.
    forged, prev = [], "0" * 64
    for line in lines:
        e = json.loads(line)
        e["actor"] = "nobody"
        e["prev"] = prev
        e["hash"] = prev = entry_hash(e)
        forged.append(json.dumps(e))
    _write(log, forged)
    assert log.verify(mirror=False) == []
    assert len([p for p in log.verify() if "differs from its mirror copy" in p]) == 4


def test_a_failing_mirror_does_not_lose_the_local_entry(tmp_path, caplog):
    """The local log is the record: a mirror outage is logged, the entry is still written."""
    from pipeline.exceptions import StorageTransientError

    class Down(MemoryStore):
        def put_bytes(self, *a, **k):
            raise StorageTransientError("mirror unreachable")

    log = AuditLog(tmp_path / "audit.jsonl", mirror=Down())
    log.append("upload", batch_id="b1", actor="worker")
    assert [e["seq"] for e in log.entries()] == [1]
    assert "not mirrored" in caplog.text


def test_mirror_from_settings_writes_beside_the_mappings(telerad_home):
    """audit_mirror on: entries land under audit/ of the mapping store, and mapping listing ignores them."""
    from pipeline.mapping import MappingStore
    from pipeline.settings import load_settings
    from tests.mapping.sample import SettingsWith, new_batch_id, sample_mapping

    settings = SettingsWith(load_settings(), audit_mirror=True)
    log = AuditLog.from_settings(settings)
    fill(log, 2)
    folder = settings.home / "mapping" / "audit"
    assert sorted(p.name for p in folder.iterdir()) == ["000000000001.json", "000000000002.json"]
    store = MappingStore.from_settings(settings)
    batch = new_batch_id()
    store.put(batch, sample_mapping(batch)[0])
    assert list(store.batch_ids()) == [batch]
    (settings.audit_log_path).write_text(settings.audit_log_path.read_text().splitlines()[0] + "\n")
    assert any("truncated" in p for p in AuditLog.from_settings(settings).verify())
