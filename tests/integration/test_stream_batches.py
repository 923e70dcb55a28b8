"""Keyed outputs as one producer batch per partition (detector.stream.batches), real broker.

The batched path must put every record where the producer's own ``send``
puts it (same partitioner over the same key), in the same order per
partition, with keys and values intact: oversized records go through
``send`` between the batches, and a partition's records beyond one batch's
bytes continue in the next batch.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from detector.stream.batches import KeyedBatches
from detector.stream.stages import KeyPartitioner

PARTITIONS = 4
DEADLINE_S = 60.0


async def _topic(bootstrap: str) -> str:
    topic = f"batches-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    return topic


async def _read(bootstrap: str, topic: str, want: int) -> list[tuple[int, bytes, bytes, int]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"batches-{uuid.uuid4().hex}", enable_auto_commit=False)
    await consumer.start()
    got: list[tuple[int, bytes, bytes, int]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while len(got) < want and loop.time() < deadline:
            fetched = await consumer.getmany(timeout_ms=500)
            for tp in sorted(fetched, key=lambda tp: tp.partition):
                got.extend((m.partition, m.key, m.value, m.offset) for m in fetched[tp])
    finally:
        await consumer.stop()
    return got


def _records() -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(600):
        key = f"user:{i % 37}".encode()
        size = 70_000 if i in (5, 300, 301) else 200 + i % 50  # three above SINGLE_BYTES
        out.append((key, f"{i:05d}".encode() + b"x" * size))
    return out


def test_batched_records_land_where_send_puts_them_in_order(kafka_bootstrap: str) -> None:
    records = _records()

    async def run() -> tuple[list[tuple[int, bytes, bytes, int]], dict[bytes, int], int,
                             list[Any]]:
        batched, per_record = await _topic(kafka_bootstrap), await _topic(kafka_bootstrap)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks=-1,
                                    partitioner=KeyPartitioner(), max_request_size=1_048_576)
        await producer.start()
        try:
            # Small batches: the 600 records need several per partition.
            sender = KeyedBatches(producer, batch_bytes=16 * 1024)
            outcomes = await sender.send(batched, records)
            assert all(error is None for _, error in outcomes)
            results = await asyncio.gather(*(fut for fut, _ in outcomes if fut is not None))
            assert len(results) == len(records)  # one result per record (shared per batch)
            batches = len({id(fut) for fut, _ in outcomes})
            expected = {}
            for key, value in records[:37]:
                meta = await (await producer.send(per_record, value, key=key))
                expected[key] = meta.partition
        finally:
            await producer.stop()
        return (await _read(kafka_bootstrap, batched, len(records)), expected, batches,
                results)

    got, partition_of, batches, results = asyncio.run(run())
    assert len(got) == len(records)
    # The producer's own send puts each key in the same partition.
    assert {key: p for p, key, _, _ in got} == partition_of
    by_partition: dict[int, list[bytes]] = defaultdict(list)
    offset_of: dict[bytes, int] = {}
    for partition, _key, value, offset in got:
        by_partition[partition].append(value)
        offset_of[value] = offset
    # A batch's delivery result holds the offset of its first record (what the
    # changelog writer's persisted offsets are computed from).
    first: dict[int, int] = {}
    for (key, value), meta in zip(records, results, strict=True):
        first.setdefault(id(meta), offset_of[value])
        assert meta.partition == partition_of[key]
        assert meta.offset == first[id(meta)]
    want: dict[int, list[bytes]] = defaultdict(list)
    for key, value in records:
        want[partition_of[key]].append(value)
    assert dict(by_partition) == dict(want), "same records, same order per partition"
    # Fewer futures than records (shared per batch), more than one batch per
    # partition (16 KiB cap) and each oversized record on its own.
    assert PARTITIONS < batches < len(records) // 4


def test_of_returns_none_for_a_producer_it_cannot_batch_on() -> None:
    class NotStarted:
        _producer = None

    assert KeyedBatches.of(NotStarted()) is None
    assert KeyedBatches.of(object()) is None
