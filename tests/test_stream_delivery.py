"""The worker's delivery loop (``_Outbox.delivered``) against a scripted producer.

No broker: a fake producer fails chosen sends with chosen errors, so the
back-pressure rules are checked exactly: retriable failures are resent (with
every later record of the same partition or key) until delivered and
counted; a non-retriable one is raised (the worker fail-stops); a stopping
agent gives up instead of waiting out the outage. The real-broker proof is
tests/integration/test_stream_backpressure.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
)
from faust.exceptions import ProducerSendError

from detector.stream import worker
from detector.stream.metrics import StreamMetrics
from detector.stream.worker import DeliveryAbandoned, _complete, _Outbox, _retriable

Sent = tuple[str, bytes | None, bytes, int | None]
#: Decides the outcome of the n-th send (0-based) of a record: None = delivered,
#: an exception = the delivery future fails with it.
Script = Callable[[Sent, int], BaseException | None]


class FakeProducer:
    """Faust's producer ``send`` signature; outcomes from a script."""

    def __init__(self, script: Script, raise_on_send: bool = False) -> None:
        self.script = script
        self.raise_on_send = raise_on_send
        self.sent: list[Sent] = []
        self.counts: dict[Sent, int] = {}

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                   timestamp: Any, headers: Any) -> asyncio.Future[Any]:
        record = (topic, key, value, partition)
        n = self.counts.get(record, 0)
        self.counts[record] = n + 1
        self.sent.append(record)
        outcome = self.script(record, n)
        if outcome is not None and self.raise_on_send:
            raise ProducerSendError(f"Error while sending: {outcome!r}") from outcome
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if outcome is None:
            fut.set_result(None)
        else:
            fut.set_exception(outcome)
        return fut


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "RETRY_BACKOFF_S", 0.001)
    monkeypatch.setattr(worker, "RETRY_BACKOFF_MAX_S", 0.004)


def _retries(metrics: StreamMetrics, topic: str) -> float:
    value = metrics.registry.get_sample_value("detector_delivery_retries_total",
                                              {"topic": topic})
    return value or 0.0


@pytest.mark.parametrize(
    ("exc", "retriable"),
    [
        (LeaderNotAvailableError(), True),
        (NotLeaderForPartitionError(), True),
        (KafkaConnectionError(), True),
        (KafkaTimeoutError(), True),  # the producer's own retries ran out
        (MessageSizeTooLargeError(), False),
        (TopicAuthorizationFailedError(), False),
        (ValueError("a bug"), False),
    ],
)
def test_retriable_classification(exc: Exception, retriable: bool) -> None:
    assert _retriable(exc) is retriable
    try:
        raise ProducerSendError("wrapped") from exc
    except ProducerSendError as wrapped:
        assert _retriable(wrapped) is retriable, "Faust's wrapper: the cause decides"


@pytest.mark.parametrize("raise_on_send", [False, True])
def test_retriable_failures_are_resent_until_delivered_and_counted(raise_on_send: bool) -> None:
    """Three attempts fail for one topic; the other topic's records are not resent."""
    def script(record: Sent, n: int) -> BaseException | None:
        return LeaderNotAvailableError() if record[0] == "resp" and n < 3 else None

    producer = FakeProducer(script, raise_on_send)
    metrics = StreamMetrics()

    async def run() -> None:
        out = _Outbox(producer, metrics)
        await out.send("resp", [("user:a", b"s1"), ("user:b", b"s2")])
        await out.send_records("internal", [(0, b"r0"), (1, b"r1")])
        await out.delivered()

    asyncio.run(run())
    assert producer.counts[("resp", b"user:a", b"s1", None)] == 4
    assert producer.counts[("resp", b"user:b", b"s2", None)] == 4
    assert producer.counts[("internal", None, b"r0", 0)] == 1
    assert producer.counts[("internal", None, b"r1", 1)] == 1
    assert _retries(metrics, "resp") == 6
    assert _retries(metrics, "internal") == 0


def test_resend_keeps_the_order_per_key_and_partition() -> None:
    """A failed record is resent with every later record of its key, in order; others not."""
    def script(record: Sent, n: int) -> BaseException | None:
        return KafkaTimeoutError() if record[2] in (b"a1", b"p0") and n == 0 else None

    producer = FakeProducer(script)

    async def run() -> None:
        out = _Outbox(producer, StreamMetrics())
        await out.send("resp", [("a", b"a0"), ("a", b"a1"), ("b", b"b0"), ("a", b"a2"),
                                ("b", b"b1")])
        await out.send_records("internal", [(0, b"p0"), (1, b"q0"), (0, b"p1")])
        await out.delivered()

    asyncio.run(run())
    first = 8
    assert [r[2] for r in producer.sent[first:]] == [b"a1", b"a2", b"p0", b"p1"]


@pytest.mark.parametrize("raise_on_send", [False, True])
def test_non_retriable_failure_is_raised_without_resending(raise_on_send: bool) -> None:
    def script(record: Sent, n: int) -> BaseException | None:
        if record[2] == b"big":
            return MessageSizeTooLargeError()
        return LeaderNotAvailableError() if record[2] == b"s1" else None

    producer = FakeProducer(script, raise_on_send)
    metrics = StreamMetrics()

    async def run() -> None:
        out = _Outbox(producer, metrics)
        await out.send("resp", [("a", b"s1"), ("b", b"big")])
        await out.delivered()

    with pytest.raises((MessageSizeTooLargeError, ProducerSendError)) as info:
        asyncio.run(run())
    assert not _retriable(info.value)
    assert len(producer.sent) == 2, "nothing resent"
    assert _retries(metrics, "resp") == 0


def test_a_stopping_agent_gives_up_an_undeliverable_batch_and_fail_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancelled while the topic is down: no endless wait, no ack; exit via _fail_stop."""
    monkeypatch.setattr(worker, "RETRY_BACKOFF_MAX_S", 0.05)
    producer = FakeProducer(lambda record, n: LeaderNotAvailableError())
    stopped: list[BaseException] = []

    def fake_fail_stop(exc: Exception) -> None:
        stopped.append(exc)
        raise SystemExit(70)

    monkeypatch.setattr(worker, "_fail_stop", fake_fail_stop)

    async def batch() -> None:
        out = _Outbox(producer, StreamMetrics())
        await out.send("resp", [("a", b"s1")])
        await out.delivered()

    async def run() -> None:
        agent = asyncio.ensure_future(_complete(batch()))
        while len(producer.sent) < 3:  # in back-pressure
            await asyncio.sleep(0.001)
        agent.cancel()
        await agent

    with pytest.raises(SystemExit):
        asyncio.run(run())
    assert len(stopped) == 1
    assert isinstance(stopped[0], DeliveryAbandoned)
    assert isinstance(stopped[0].__cause__, LeaderNotAvailableError)


def test_a_batch_in_back_pressure_survives_until_the_topic_returns() -> None:
    """Not cancelled: the batch keeps waiting (many attempts) and completes when delivered."""
    returned = asyncio.Event()

    def script(record: Sent, n: int) -> BaseException | None:
        return None if returned.is_set() else KafkaConnectionError()

    producer = FakeProducer(script)
    metrics = StreamMetrics()

    async def batch() -> None:
        out = _Outbox(producer, metrics)
        await out.send("resp", [("a", b"s1")])
        await out.delivered()

    async def run() -> None:
        agent = asyncio.ensure_future(_complete(batch()))
        while len(producer.sent) < 6:
            assert not agent.done()
            await asyncio.sleep(0.001)
        returned.set()
        await agent

    asyncio.run(run())
    assert _retries(metrics, "resp") == len(producer.sent) - 1


class FakeBatches:
    """KeyedBatches' ``send``: one shared future per (topic, partition) group, scripted."""

    def __init__(self, fail_batches: set[int], exc: BaseException,
                 raise_on: set[int] | None = None) -> None:
        self.fail_batches = fail_batches  # batch numbers (0-based, in send order) that fail
        self.raise_on = raise_on or set()  # batch numbers whose hand-over raises
        self.exc = exc
        self.batches: list[list[bytes]] = []

    async def send(self, topic: str, records: list[tuple[bytes, bytes]],
                   partitions: list[int] | None = None
                   ) -> list[tuple[asyncio.Future[Any] | None, BaseException | None]]:
        groups: dict[int, list[int]] = {}
        for i, (key, _) in enumerate(records):
            groups.setdefault(key[0] % 2 if partitions is None else partitions[i], []).append(i)
        outcomes: list[tuple[asyncio.Future[Any] | None, BaseException | None]] = [
            (None, None)] * len(records)
        for indexes in groups.values():
            n = len(self.batches)
            self.batches.append([records[i][1] for i in indexes])
            if n in self.raise_on:
                for i in indexes:
                    outcomes[i] = (None, self.exc)
                continue
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            if n in self.fail_batches:
                fut.set_exception(self.exc)
            else:
                fut.set_result(None)
            for i in indexes:
                outcomes[i] = (fut, None)
        return outcomes


@pytest.mark.parametrize("raised", [False, True])
def test_a_failed_batch_resends_its_records_and_every_later_one_of_their_keys(
    raised: bool,
) -> None:
    """Records of a batch share its outcome: all of them are resent, in order, and counted."""
    batches = FakeBatches(set() if raised else {0}, LeaderNotAvailableError(),
                          {0} if raised else set())
    producer = FakeProducer(lambda record, n: None)
    metrics = StreamMetrics()

    async def run() -> None:
        out = _Outbox(producer, metrics, batches)  # type: ignore[arg-type]
        # keys "a" and "c" share group 1 (odd first byte), "b" is group 0
        await out.send("resp", [("a", b"a0"), ("b", b"b0"), ("c", b"c0"), ("a", b"a1")])
        await out.send("resp", [("a", b"a2"), ("b", b"b1")])
        await out.delivered()

    asyncio.run(run())
    assert batches.batches == [[b"a0", b"c0", b"a1"], [b"b0"], [b"a2"], [b"b1"]]
    # Batch 0 failed: its records, and the later record of key "a", resent
    # one by one in the original order; "b" was delivered and is not resent.
    assert [r[2] for r in producer.sent] == [b"a0", b"c0", b"a1", b"a2"]
    assert _retries(metrics, "resp") == 4


def test_a_batch_refused_for_good_fail_stops() -> None:
    batches = FakeBatches({1}, MessageSizeTooLargeError())
    producer = FakeProducer(lambda record, n: None)

    async def run() -> None:
        out = _Outbox(producer, StreamMetrics(), batches)  # type: ignore[arg-type]
        await out.send("resp", [("a", b"a0"), ("b", b"b0")])
        await out.delivered()

    with pytest.raises(MessageSizeTooLargeError):
        asyncio.run(run())
    assert producer.sent == [], "nothing resent"


def test_partitioned_records_batch_by_their_partition_and_resend_in_its_order() -> None:
    """Changelog records: grouped by the partition given, not by key; order kept per partition."""
    batches = FakeBatches({0}, KafkaTimeoutError())
    producer = FakeProducer(lambda record, n: None)

    async def run() -> None:
        out = _Outbox(producer, StreamMetrics(), batches)  # type: ignore[arg-type]
        await out.send_partitioned("log", [(3, b"a", b"a0"), (1, b"a", b"a1"), (3, b"b", b"b0")])
        await out.delivered()

    asyncio.run(run())
    assert batches.batches == [[b"a0", b"b0"], [b"a1"]]
    # Batch 0 (partition 3) failed: both its records resent, each to partition 3.
    assert producer.sent == [("log", b"a", b"a0", 3), ("log", b"b", b"b0", 3)]



class _Meta:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset


class OffsetBatches(FakeBatches):
    """Delivered batches whose results carry their first offset, as aiokafka's do."""

    def __init__(self) -> None:
        super().__init__(set(), KafkaTimeoutError())
        self.next: dict[int, int] = {}

    async def send(self, topic: str, records: list[tuple[bytes, bytes]],
                   partitions: list[int] | None = None
                   ) -> list[tuple[asyncio.Future[Any] | None, BaseException | None]]:
        assert partitions is not None
        outcomes: list[tuple[asyncio.Future[Any] | None, BaseException | None]] = []
        futures: dict[int, asyncio.Future[Any]] = {}
        for partition in partitions:
            if partition not in futures:
                first = self.next.get(partition, 100)
                futures[partition] = asyncio.get_running_loop().create_future()
                futures[partition].set_result(_Meta(topic, partition, first))
                self.next[partition] = first + partitions.count(partition)
            outcomes.append((futures[partition], None))
        return outcomes


def test_delivered_offsets_are_each_partitions_last_record() -> None:
    """A batch's result holds its first offset; the last record's is first + records - 1."""
    producer = FakeProducer(lambda record, n: None)

    async def run() -> dict[tuple[str, int], int]:
        out = _Outbox(producer, StreamMetrics(), OffsetBatches())  # type: ignore[arg-type]
        await out.send_partitioned("log", [(0, b"a", b"1"), (1, b"b", b"2"), (0, b"c", b"3"),
                                           (0, b"d", b"4")])
        await out.delivered()
        return out.offsets

    assert asyncio.run(run()) == {("log", 0): 102, ("log", 1): 100}
