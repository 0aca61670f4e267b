"""`reader list`: only complete batches, STAT first then longest waiting, with counts and sizes."""

from __future__ import annotations

from datetime import timedelta

from pipeline.reader import list_batches
from pipeline.settings import load_settings
from tests.reader.builders import publish_batch


def test_complete_batches_stat_first_then_oldest(store, telerad_home):
    """STAT comes first even when newest; then URGENT, then ROUTINE oldest first; unfinished is hidden."""
    s = load_settings()
    old_routine = publish_batch(store, s, priority="ROUTINE", age=timedelta(hours=5))
    new_routine = publish_batch(store, s, priority="ROUTINE", age=timedelta(hours=1))
    stat = publish_batch(store, s, priority="STAT", age=timedelta(minutes=2), studies=2, images=2)
    urgent = publish_batch(store, s, priority="URGENT", age=timedelta(hours=3))
    publish_batch(store, s, priority="STAT", complete=False)  # still uploading: no manifest

    batches = list_batches(store)
    assert [b.batch_id for b in batches] == [
        stat.batch_id, urgent.batch_id, old_routine.batch_id, new_routine.batch_id,
    ]
    top = batches[0]
    assert (top.priority, top.studies, top.images) == ("STAT", 2, 4)
    assert top.size == sum(len(d) for d in stat.files.values())


def test_filters_by_priority_and_age(store, telerad_home):
    """--priority and --since narrow the list."""
    s = load_settings()
    publish_batch(store, s, priority="ROUTINE", age=timedelta(hours=5))
    recent = publish_batch(store, s, priority="ROUTINE", age=timedelta(minutes=30))
    stat = publish_batch(store, s, priority="STAT", age=timedelta(hours=4))
    assert [b.batch_id for b in list_batches(store, priority="STAT")] == [stat.batch_id]
    assert [b.batch_id for b in list_batches(store, since=timedelta(hours=2))] == [recent.batch_id]


def test_key_prefix_and_unusable_manifests(store, telerad_home):
    """Batches under the key prefix are found; a corrupt manifest is skipped, not fatal."""
    s = load_settings()
    good = publish_batch(store, s, prefix="site-7")
    bad = publish_batch(store, s, prefix="site-7")
    store.put_bytes(f"site-7/{bad.batch_id}/manifest.json", b"{not json", content_type="application/json",
                    metadata={})
    assert [b.batch_id for b in list_batches(store, prefix="site-7")] == [good.batch_id]
    assert list_batches(store) == []


class ObjectsOnly:
    """A store offering only the base protocol (no folder listing)."""

    def __init__(self, store):
        self.store, self.url = store, store.url

    def list(self, prefix=""):
        return self.store.list(prefix)

    def get_bytes(self, key):
        return self.store.get_bytes(key)


def test_stores_without_folder_listing_give_the_same_answer(store, telerad_home):
    """A minimal store (list + get_bytes) is listed object by object with the same result."""
    s = load_settings()
    a = publish_batch(store, s, priority="URGENT", prefix="p")
    b = publish_batch(store, s, priority="STAT", prefix="p")
    publish_batch(store, s, prefix="p", complete=False)
    expected = [b.batch_id, a.batch_id]
    assert [x.batch_id for x in list_batches(store, prefix="p")] == expected
    assert [x.batch_id for x in list_batches(ObjectsOnly(store), prefix="p")] == expected
