"""The latency benchmark's paced producer (``bench/LoadGen.java``) on the real broker.

The benchmark's latency figures start at the input records' timestamps, which this
producer sets; a producer that loses, reorders or mis-keys records would skew
every figure. It is compiled with ``javac`` on the jars ``scripts/kafka-local libs``
fetches, as ``bench_kafka.py`` does.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_kafka  # noqa: E402

N = 600
RATE = 2_000.0  # events/s: 0.3 s of paced sends


def test_paced_records_arrive_whole_keyed_in_order_and_timed_at_send(
    kafka_bootstrap: str,
) -> None:
    topic = f"loadgen-{uuid.uuid4().hex[:8]}"
    bench_kafka.create_topics(kafka_bootstrap, {topic: 3})
    records = [(f"user:{i % 7}".encode(), f'{{"n":{i}}}'.encode()) for i in range(N)]

    figures = bench_kafka._produce_paced(kafka_bootstrap, topic, records, RATE)

    assert figures["events"] == N
    # Paced, not flooded: sending 600 records at 2,000/s takes about 0.3 s.
    assert figures["send_s"] >= (N - 1) / RATE * 0.9, figures
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=5_000)
    got = [(r.partition, r.key, r.value, r.timestamp) for r in consumer]
    consumer.close()
    assert sorted((k, v) for _, k, v, _ in got) == sorted(records), "every record, once"
    by_key: dict[bytes, list[tuple[int, bytes, int]]] = {}
    for partition, key, value, ts in got:
        by_key.setdefault(key, []).append((partition, value, ts))
    for key, seen in by_key.items():
        assert len({p for p, _, _ in seen}) == 1, f"{key!r} kept to one partition"
        sent = [v for k, v in records if k == key]
        assert [v for _, v, _ in seen] == sent, f"{key!r} in send order"
        stamps = [ts for _, _, ts in seen]
        assert stamps == sorted(stamps), "CreateTime taken at each send"
    stamps = sorted(ts for _, _, _, ts in got)
    # Spread over the schedule (0.3 s), not sent in one burst.
    assert stamps[-1] - stamps[0] >= (N - 1) / RATE * 1000 * 0.8, (stamps[0], stamps[-1])
    first_half = sum(1 for ts in stamps if ts - stamps[0] < (N / 2) / RATE * 1000)
    assert first_half <= N * 0.6, f"{first_half} of {N} in the first half of the schedule"


def test_a_schedule_sends_its_segments_in_turn_from_one_producer(kafka_bootstrap: str) -> None:
    topic = f"loadgen-{uuid.uuid4().hex[:8]}"
    bench_kafka.create_topics(kafka_bootstrap, {topic: 2})
    records = [(f"user:{i % 5}".encode(), f'{{"n":{i}}}'.encode()) for i in range(N)]
    first, pause_s, slow = 200, 0.5, 1_000.0  # then 400 at 1,000/s: 0.4 s
    started: list[int] = []

    figures = bench_kafka._produce_paced(
        kafka_bootstrap, topic, records, RATE,
        schedule=[(first, RATE, pause_s), (N - first, slow, 0.0)], on_segment=started.append)

    assert started == [0, 1], "each segment announced as it starts"
    assert figures["events"] == N
    segments = figures["segments"]
    assert [s["events"] for s in segments] == [first, N - first]
    assert segments[1]["send_s"] >= (N - first - 1) / slow * 0.9, segments
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=5_000)
    stamp = {r.value: r.timestamp for r in consumer}
    consumer.close()
    assert sorted(stamp) == sorted(v for _, v in records), "every record, once"
    ts = [stamp[v] for _, v in records]
    # The second segment starts after the first one's pause, and paces at its own rate.
    assert ts[first] - ts[first - 1] >= pause_s * 1000 * 0.9, (ts[first - 1], ts[first])
    assert ts[-1] - ts[first] >= (N - first - 1) / slow * 1000 * 0.8, (ts[first], ts[-1])


def test_a_schedule_that_does_not_count_the_records_is_refused() -> None:
    records = [(b"k", b"{}")] * 3
    with pytest.raises(ValueError, match="add up"):
        bench_kafka._produce_paced("127.0.0.1:1", "t", records, RATE, schedule=[(2, RATE, 0.0)])
