"""Smoke test of the real broker: kafka-python admin + producer, aiokafka consumer.

Those are the two client stacks the detector uses (faust-streaming runs on aiokafka),
so this proves that both speak to the broker the tests and CI run.
"""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

N_MESSAGES = 1_000
N_PARTITIONS = 4
CONSUME_DEADLINE_S = 60.0


def _expected() -> dict[bytes, bytes]:
    return {f"user-{i:04d}".encode(): f"event-{i}:{i * i}".encode() for i in range(N_MESSAGES)}


def _create_topic(bootstrap: str, topic: str) -> None:
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="smoke-admin", request_timeout_ms=15_000
    )
    try:
        admin.create_topics(
            [NewTopic(topic, num_partitions=N_PARTITIONS, replication_factor=1)],
            timeout_ms=15_000,
        )
        admin.wait_for_topics([topic], timeout_ms=15_000)
        (described,) = admin.describe_topics([topic])
        assert len(described["partitions"]) == N_PARTITIONS, described
    finally:
        admin.close()


def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="smoke-admin", request_timeout_ms=15_000
    )
    try:
        admin.delete_topics([topic], timeout_ms=15_000)
    finally:
        admin.close()


def _produce(bootstrap: str, topic: str, messages: dict[bytes, bytes]) -> dict[bytes, int]:
    """Send every message; return the partition the broker put each key in."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="smoke-producer",
        acks="all",
        linger_ms=5,
        request_timeout_ms=15_000,
        max_block_ms=15_000,
    )
    try:
        futures = {
            key: producer.send(topic, key=key, value=value) for key, value in messages.items()
        }
        producer.flush(timeout=30)
        return {key: future.get(timeout=30).partition for key, future in futures.items()}
    finally:
        producer.close(timeout=10)


async def _consume(bootstrap: str, topic: str, want: int) -> list[tuple[int, bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        client_id="smoke-consumer",
        group_id=f"smoke-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        request_timeout_ms=15_000,
    )
    await asyncio.wait_for(consumer.start(), timeout=30)
    received: list[tuple[int, bytes, bytes]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONSUME_DEADLINE_S
        while len(received) < want and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=1_000, max_records=500)
            for tp, records in batches.items():
                received.extend((tp.partition, r.key, r.value) for r in records)
        await asyncio.wait_for(consumer.commit(), timeout=15)
    finally:
        await asyncio.wait_for(consumer.stop(), timeout=30)
    return received


def test_kafka_python_produces_aiokafka_consumes(kafka_bootstrap: str) -> None:
    topic = f"smoke-{uuid.uuid4().hex[:12]}"
    expected = _expected()

    _create_topic(kafka_bootstrap, topic)
    try:
        partition_of = _produce(kafka_bootstrap, topic, expected)
        used = set(partition_of.values())
        assert len(used) == N_PARTITIONS, f"keys landed in partitions {sorted(used)} only"

        received = asyncio.run(
            asyncio.wait_for(
                _consume(kafka_bootstrap, topic, N_MESSAGES), timeout=CONSUME_DEADLINE_S + 60
            )
        )
    finally:
        _delete_topic(kafka_bootstrap, topic)

    assert len(received) == N_MESSAGES, f"got {len(received)} of {N_MESSAGES} messages"
    got = {key: value for _, key, value in received}
    assert len(got) == N_MESSAGES, "duplicate keys came back"
    assert got == expected
    # Same key, same partition: the keyed partitioning the detector relies on.
    assert all(partition_of[key] == partition for partition, key, _ in received)
