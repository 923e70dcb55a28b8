"""The worker's Kafka consumer never commits past a message no stream processed.

No broker: Faust's real consumer classes (stock, and ours from
``detector.stream.transport``) run their real fetch loop
(``_drain_messages``), seek (``perform_seek``) and commit bookkeeping
(``ack``, ``_new_offset``) against a scripted aiokafka consumer. The script
is the race seen on the real broker after a restart (docs/streaming.md,
"Input messages skipped by the consumer"): table recovery resumes the input
partitions and awaits a seek to the committed offsets while records fetched
before the seek are still being handed over, then resumes flow control,
which empties the streams' queues.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import faust
import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

from detector.stream.transport import TRANSPORT_SCHEME, PositionLedger, _Consumer

TOPIC = "in"
TP = TopicPartition(TOPIC, 0)
COMMITTED = 10
END = 40
BATCH = 10
SEEK_DURING = 12  # the record whose hand-over the recovery's seek interrupts


class _Fetcher:
    """aiokafka's fetcher, as far as Faust's consumer thread uses it."""

    _closed = False

    def __init__(self, broker: _Broker) -> None:
        self.broker = broker
        self._subscriptions = self

    @contextlib.contextmanager
    def fetch_context(self) -> Iterator[None]:
        yield

    async def fetched_records(self, active: Any, timeout: float = 0, max_records: Any = None
                              ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        return self.broker.fetch()


@dataclass
class _Broker:
    """A one-partition log and an aiokafka consumer's position in it."""

    position: int = COMMITTED
    seeks: list[int] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _max_poll_records = BATCH
    _closed = False

    def __post_init__(self) -> None:
        self._fetcher = _Fetcher(self)

    def fetch(self) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        if self.position >= END:
            self.done.set()  # stops the fetch loop
            return {}
        offsets = range(self.position, min(self.position + BATCH, END))
        self.position = offsets[-1] + 1
        return {TP: [ConsumerRecord(TOPIC, 0, o, 0, 0, None, b"v", None, 1, 1, ())
                     for o in offsets]}

    async def committed(self, tp: TopicPartition) -> int:
        return COMMITTED

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def highwater(self, tp: TopicPartition) -> int:
        return END

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position = offset
        self.seeks.append(offset)

    async def seek_to_committed(self) -> dict[TopicPartition, int]:  # aiokafka's, for stock Faust
        self.seek(TP, COMMITTED)
        return {TP: COMMITTED}


@dataclass
class Run:
    """What the streams processed, and what the consumer would commit."""

    processed: list[int]
    committable: int | None


async def _run(broker_url: str) -> Run:
    app = faust.App(f"t-{broker_url.split(':')[0]}", broker=broker_url, autodiscover=False)
    consumer = app.consumer
    app.topics._acking_topics.add(TOPIC)
    broker = _Broker()
    thread = consumer._thread
    thread._consumer = broker
    consumer._set_active_tps({TP})  # assigned and resumed

    async def call_thread(fun: Any, *args: Any, **kwargs: Any) -> Any:
        return await fun(*args, **kwargs)

    thread.call_thread = call_thread  # the thread's loop is this loop
    processed: list[int] = []
    queued: list[Any] = []
    recovering = True

    def process(message: Any) -> None:
        message.tracked = True  # what a stream does when it takes a message in
        processed.append(message.offset)
        message.ack(consumer)

    async def deliver(message: Any) -> None:
        # A stream that keeps up, except for the record whose hand-over the
        # recovery's seek interrupts: it is still queued when flow control
        # resumes and the queues are emptied (Recovery.on_recovery_completed).
        nonlocal recovering
        if recovering and message.offset == SEEK_DURING:
            recovering = False
            queued.append(message)
            await consumer.perform_seek()
            queued.clear()  # app.flow_control.resume() -> FlowControlEvent.clear()
            return
        process(message)

    consumer.callback = deliver
    fetch_loop = faust.Service()
    fetch_loop._stopped = broker.done  # type: ignore[assignment]
    await asyncio.wait_for(consumer._drain_messages(fetch_loop), timeout=10)
    return Run(processed, _commit(consumer))


def _commit(consumer: Any) -> int | None:
    """Commit as the consumer's commit timer would, until nothing more; return the offset."""
    committed = None
    while offsets := consumer._filter_committable_offsets([TP]):
        committed = offsets[TP]
        consumer._committed_offset.update(offsets)  # what a successful commit records
    return committed


def _unprocessed_below_commit(run: Run) -> list[int]:
    assert run.committable is not None
    return sorted(set(range(COMMITTED, run.committable)) - set(run.processed))


def test_stock_faust_commits_past_a_message_it_never_processed() -> None:
    """The defect, pinned: if a Faust upgrade fixes it, this fails and the patch can go."""
    run = asyncio.run(_run("kafka://127.0.0.1:9"))
    assert SEEK_DURING not in run.processed
    assert run.committable == END
    assert _unprocessed_below_commit(run) == [SEEK_DURING]


def test_our_consumer_redelivers_instead_and_commits_only_what_was_processed() -> None:
    run = asyncio.run(_run(f"{TRANSPORT_SCHEME}://127.0.0.1:9"))
    assert set(run.processed) == set(range(COMMITTED, END)), "every message processed"
    assert run.committable == END
    assert _unprocessed_below_commit(run) == []
    # Records fetched before the seek are handed over again, in order, from
    # the committed offset; none is handed over after the seek from the old batch.
    after = run.processed[run.processed.index(SEEK_DURING - 1) + 1:]
    assert after == list(range(COMMITTED, END)), "the seek's position, in order"


def test_a_message_a_stream_dropped_is_never_committable() -> None:
    """Faust's stream acks a message it skips during a rebalance; ours does not count it."""

    async def acks() -> tuple[bool, bool]:
        results = []
        for url in ("kafka://127.0.0.1:9", f"{TRANSPORT_SCHEME}://127.0.0.1:9"):
            app = faust.App(f"t-ack-{len(results)}", broker=url, autodiscover=False)
            app.topics._acking_topics.add(TOPIC)
            consumer = app.consumer
            record = ConsumerRecord(TOPIC, 0, COMMITTED, 0, 0, None, b"v", None, 1, 1, ())
            message = consumer._to_message(TP, record)  # never tracked by a stream
            message.ack(consumer)
            results.append(COMMITTED in consumer._acked[TP])
        return results[0], results[1]

    stock, ours = asyncio.run(acks())
    assert stock, "stock Faust makes the dropped message committable"
    assert not ours


def test_position_ledger_counts_moves_per_partition() -> None:
    ledger = PositionLedger()
    before = ledger.snapshot()
    ledger.moved([TP])
    assert ledger.moved_since(before, ("in", 0))
    assert not ledger.moved_since(before, ("in", 1))
    assert not ledger.moved_since(ledger.snapshot(), ("in", 0))


@pytest.mark.parametrize("cls", [_Consumer])
def test_our_consumer_is_the_transport_consumer(cls: type[Any]) -> None:
    assert issubclass(cls, faust_aiokafka.Consumer)
