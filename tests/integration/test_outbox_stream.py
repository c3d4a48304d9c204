"""edges.outbox_stream.Publisher on a real redis-server: once per dedup key, order keys."""

from __future__ import annotations

import redis

from m10jobs.edges.outbox_stream import Entry, Publisher, Trim


def test_publish_once_per_dedup_key_and_hold_back_by_order_key(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("bad", "not a stream")
    pub = Publisher(client, dedup_ttl_s=3600, max_per_call=2)
    batch = [
        Entry("s", "d:1", [("n", "1")], "A"),
        Entry("bad", "d:2", [("n", "2")], "B"),
        Entry("s", "d:3", [("n", "3")], ""),
        Entry("s", "d:4", [("n", "4")], "B"),  # next call: still held back behind d:2
        Entry("s", "d:5", [("n", "5")], "A"),
    ]
    first = pub.publish(batch)
    assert [o.status for o in first] == ["ok", "err", "ok", "blocked", "ok"]
    assert "WRONGTYPE" in first[1].value
    again = pub.publish([batch[0], batch[2]])
    assert [(o.status, o.value) for o in again] == [
        ("dup", first[0].value),
        ("dup", first[2].value),
    ]
    assert client.xlen("s") == 3
    assert 3000 < client.ttl("d:1") <= 3600


def test_maxlen_trim(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    pub = Publisher(client, dedup_ttl_s=3600, trim=Trim("MAXLEN", 10))
    pub.publish([Entry("t", f"k{i}", [("i", str(i))]) for i in range(2000)])
    assert 10 <= client.xlen("t") < 500


def test_large_batches_are_split_by_bytes_and_order_keys_still_hold(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("bad", "x")
    pub = Publisher(client, dedup_ttl_s=3600, max_bytes_per_call=1000)
    batch = [
        Entry("bad", "e:0", [("p", "y" * 600)], "A"),
        *[Entry("s", f"e:{i}", [("p", "y" * 600)], "A" if i % 2 else "") for i in range(1, 6)],
    ]
    statuses = [o.status for o in pub.publish(batch)]
    assert statuses == ["err", "blocked", "ok", "blocked", "ok", "blocked"]
    assert pub._chunks(batch) and len(pub._chunks(batch)) == 6
