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
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

from detector.stream.metrics import StreamMetrics
from detector.stream.settings import WorkerSettings
from detector.stream.transport import (
    TRANSPORT_SCHEME,
    PositionLedger,
    _Consumer,
    _ConsumerThread,
    _LoopConsumerThread,
)
from detector.stream.worker import ModelHolder, build_app

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "default"

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

    committed_offset: int | None = COMMITTED  # None: a new consumer group
    position: int = COMMITTED  # where the group starts (committed, or the reset position)
    log_start: int = COMMITTED  # the first offset of the partition's log
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

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offset

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def highwater(self, tp: TopicPartition) -> int:
        return END

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position = offset
        self.seeks.append(offset)

    async def beginning_offsets(self, partitions: Any) -> dict[TopicPartition, int]:
        return {tp: self.log_start for tp in partitions}

    async def seek_to_committed(self) -> dict[TopicPartition, int | None]:  # aiokafka's
        if self.committed_offset:
            self.seek(TP, self.committed_offset)
        return {TP: self.committed_offset}


@dataclass
class Run:
    """What the streams processed, and what the consumer would commit."""

    processed: list[int]
    committable: int | None


#: Where the recovery's seek lands: while a record is being handed over, or
#: while a fetched batch crosses from the consumer thread to the main loop.
SCENARIOS = ("during a hand-over", "while a batch is in transit")
#: A hand-over waiting for flow control, which the recovery resumes after its
#: seek (Faust's on_message awaits app.flow_control.acquire() first).
BLOCKED = "during a hand-over blocked on flow control"


async def _run(
    broker_url: str,
    scenario: str,
    committed: int | None = COMMITTED,
    seek_during: int = SEEK_DURING,
    position: int = COMMITTED,
) -> Run:
    app = faust.App(f"t-{broker_url.split(':')[0]}", broker=broker_url, autodiscover=False)
    consumer = app.consumer
    app.topics._acking_topics.add(TOPIC)
    broker = _Broker(committed_offset=committed, position=position)
    thread = consumer._thread
    thread._consumer = broker
    consumer._set_active_tps({TP})  # assigned and resumed
    processed: list[int] = []
    queued: list[Any] = []  # the stream's queue while the stream is busy
    busy = False  # from the first SEEK_DURING until the recovery empties the queue
    fetches = 0

    async def recover() -> None:
        # Recovery.on_recovery_completed: seek to the committed offsets, then
        # flow_control.resume(), which empties the streams' queues.
        nonlocal busy
        await consumer.perform_seek()
        queued.clear()
        busy = False
        app.flow_control.resume()

    async def call_thread(fun: Any, *args: Any, **kwargs: Any) -> Any:
        # The consumer thread's loop is this loop. In the second scenario
        # the seek runs on the thread after the second fetch came back there
        # and before the main loop got its records.
        nonlocal fetches
        result = await fun(*args, **kwargs)
        if getattr(fun, "__name__", "") == "_fetch_records":
            fetches += 1
            if fetches == 2 and scenario == SCENARIOS[1]:
                await recover()
        return result

    thread.call_thread = call_thread

    def process(message: Any) -> None:
        message.tracked = True  # what a stream does when it takes a message in
        processed.append(message.offset)
        message.ack(consumer)

    async def deliver(message: Any) -> None:
        # The stream keeps up until it is busy from SEEK_DURING on (records
        # queue up); the recovery empties the queue. In the first scenario the
        # recovery starts while the next record's hand-over waits (as Faust's
        # on_message waits for a full producer buffer to ebb) and the record
        # reaches the stream after that wait.
        nonlocal busy
        if scenario == BLOCKED and message.offset == seek_during and fetches == 1 and not busy:
            busy = True
            app.flow_control.suspend()
            recovery = asyncio.ensure_future(recover())
            del recovery  # runs on by itself
        await app.flow_control.acquire()
        if scenario == BLOCKED:
            process(message)
            return
        if message.offset == seek_during and not queued and busy is False and fetches == 1:
            busy = True
            queued.append(message)
            return
        if busy and scenario == SCENARIOS[0] and len(queued) == 1:
            recovery = asyncio.ensure_future(recover())
            for _ in range(5):
                await asyncio.sleep(0)
            del recovery  # runs on by itself
        if busy:
            queued.append(message)
        else:
            process(message)

    consumer.callback = deliver
    app.flow_control.resume()
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


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_stock_faust_commits_past_messages_it_never_processed(scenario: str) -> None:
    """The defect, pinned: if a Faust upgrade fixes it, this fails and the patch can go.

    The messages emptied from the queue are not handed over again (their
    offsets count as read), later ones are processed, and the commit goes
    past them: through the jump it takes for a hole in the log, or through
    the one-offset hole its commit check allows.
    """
    run = asyncio.run(_run("kafka://127.0.0.1:9", scenario))
    assert SEEK_DURING not in run.processed
    assert run.committable == END
    assert SEEK_DURING in _unprocessed_below_commit(run)


@pytest.mark.parametrize("scenario", [*SCENARIOS, BLOCKED])
def test_our_consumer_processes_every_message_before_committing_it(scenario: str) -> None:
    run = asyncio.run(_run(f"{TRANSPORT_SCHEME}://127.0.0.1:9", scenario))
    assert set(run.processed) == set(range(COMMITTED, END)), "every message processed"
    assert run.committable == END
    assert _unprocessed_below_commit(run) == []
    # After the seek, records come from the committed offset again, in order;
    # no record of the batch fetched before the seek is handed over.
    restart = len(run.processed) - run.processed[::-1].index(COMMITTED) - 1
    assert run.processed[restart:] == list(range(COMMITTED, END)), "the seek's position, in order"
    assert _out_of_order(run) == [], "no message processed before an earlier one"


def _out_of_order(run: Run) -> list[int]:
    """Return the offsets processed before every earlier offset was.

    The stages take an event at or below the highest applied offset of its
    origin for a redelivery (``stages.Applied``), so a message processed
    ahead of an earlier one turns the earlier one into a loss.
    """
    seen: set[int] = set()
    early = []
    for o in run.processed:
        if not set(range(COMMITTED, o)) <= seen:
            early.append(o)
        seen.add(o)
    return early


@pytest.mark.parametrize("scenario", [*SCENARIOS, BLOCKED])
def test_a_new_consumer_group_goes_back_to_its_first_record(scenario: str) -> None:
    """Without a committed offset aiokafka does not move the position: ours goes back anyway."""
    run = asyncio.run(_run(f"{TRANSPORT_SCHEME}://127.0.0.1:9", scenario, committed=None))
    assert set(run.processed) == set(range(COMMITTED, END)), "every message processed"
    assert run.committable == END
    assert _out_of_order(run) == []


def test_a_new_consumer_group_refetches_a_first_record_whose_hand_over_was_cancelled() -> None:
    run = asyncio.run(_run(f"{TRANSPORT_SCHEME}://127.0.0.1:9", BLOCKED, committed=None,
                           seek_during=COMMITTED))
    assert run.processed == list(range(COMMITTED, END))


AHEAD = COMMITTED + 4  # where aiokafka's position of a new group's partition already is


def test_a_new_consumer_group_goes_back_to_the_start_of_the_log() -> None:
    """Records a new group's partition holds before its position are not skipped.

    aiokafka's position is past records nobody handed over (fetched while the
    partition was paused for the table recovery, and dropped), and the
    recovery's seek comes before anything of the partition was processed;
    seen with two fused workers (docs/streaming.md, "Fused stages"). Stock
    Faust has no committed offset to seek to, starts from there and commits
    past them; ours seeks back to the start of the log.
    """
    stock = asyncio.run(_run("kafka://127.0.0.1:9", BLOCKED, committed=None,
                             seek_during=AHEAD, position=AHEAD))
    assert not set(range(COMMITTED, AHEAD)) & set(stock.processed)
    assert stock.committable == END, "stock Faust commits past what it never processed"
    ours = asyncio.run(_run(f"{TRANSPORT_SCHEME}://127.0.0.1:9", BLOCKED, committed=None,
                            seek_during=AHEAD, position=AHEAD))
    assert ours.processed == list(range(COMMITTED, END)), "every message, in order"
    assert ours.committable == END


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


def _app(in_loop: bool | None) -> Any:
    app = faust.App("t-loop", broker=f"{TRANSPORT_SCHEME}://127.0.0.1:1", autodiscover=False)
    if in_loop is not None:
        app.zt_consumer_in_loop = in_loop  # what build_app sets from faust_consumer
    return app


@pytest.mark.parametrize(("in_loop", "cls"), [
    (True, _LoopConsumerThread), (False, _ConsumerThread), (None, _ConsumerThread),
])
def test_the_worker_setting_chooses_where_faust_consumer_runs(
    in_loop: bool | None, cls: type[Any]
) -> None:
    async def build() -> Any:
        return _app(in_loop).consumer._thread
    assert type(asyncio.run(build())) is cls


def test_the_loop_consumer_runs_on_the_worker_loop_and_leaves_its_tasks_alone() -> None:
    async def run() -> tuple[set[int], bool, bool, Any, Any]:
        thread = _app(True).consumer._thread

        async def no_broker() -> None:  # on_start would connect aiokafka's consumer
            return None

        thread.on_start = no_broker
        bystander = asyncio.ensure_future(asyncio.sleep(30))  # one of the worker's own tasks
        await thread.start()
        idents = {threading.get_ident()}

        async def coro(x: int) -> int:
            idents.add(threading.get_ident())
            return x + 1

        def plain(x: int) -> int:  # Faust passes aiokafka's plain methods too
            idents.add(threading.get_ident())
            return x * 2

        results = (await thread.call_thread(coro, 1), await thread.call_thread(plain, 4))
        await thread.stop()
        await asyncio.sleep(0)
        alive = not bystander.done()
        bystander.cancel()
        return idents, alive, thread._serving.done(), results, thread.thread_loop

    idents, alive, served, results, loop = asyncio.run(run())
    assert idents == {threading.get_ident()}  # no second thread
    assert results == (2, 8)
    assert alive, "stopping the consumer service cancelled a task of the worker's loop"
    assert served
    assert loop is not None


#: How Faust's ``getmany`` cuts a fetched batch short with no seek to follow
#: (``faust/transport/consumer.py:745-756``); aiokafka's position is already
#: past the records it never yields. Seen on the real broker when two workers
#: start together: a new group's first records on an internal topic lost.
CUT_SHORT = (
    "flow stops as a new group's first batch comes back",
    "the consumer generation changes mid-batch",
)


async def _run_cut_short(broker_url: str, how: str) -> Run:
    app = faust.App(f"t-cut-{broker_url.split(':')[0]}", broker=broker_url, autodiscover=False)
    consumer = app.consumer
    app.topics._acking_topics.add(TOPIC)
    new_group = how == CUT_SHORT[0]
    broker = _Broker(committed_offset=None if new_group else COMMITTED)
    thread = consumer._thread
    thread._consumer = broker
    consumer._set_active_tps({TP})
    processed: list[int] = []
    fetches = 0

    async def call_thread(fun: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal fetches
        result = await fun(*args, **kwargs)
        if getattr(fun, "__name__", "") == "_fetch_records":
            fetches += 1
            if fetches == 1 and new_group:
                # A rebalance starts as the batch comes back (Faust's
                # on_partitions_revoked stops the flow) and ends with the
                # partition still assigned here: flow resumes.
                consumer.stop_flow()
                asyncio.get_running_loop().call_later(0.05, consumer.resume_flow)
        return result

    thread.call_thread = call_thread

    async def deliver(message: Any) -> None:
        await app.flow_control.acquire()
        message.tracked = True
        processed.append(message.offset)
        message.ack(consumer)
        if not new_group and message.offset == SEEK_DURING:
            # A rebalance completed meanwhile that left the partition here.
            app.consumer_generation_id += 1

    consumer.callback = deliver
    app.flow_control.resume()
    fetch_loop = faust.Service()
    fetch_loop._stopped = broker.done  # type: ignore[assignment]
    await asyncio.wait_for(consumer._drain_messages(fetch_loop), timeout=10)
    return Run(processed, _commit(consumer))


@pytest.mark.parametrize("how", CUT_SHORT)
def test_stock_faust_loses_the_rest_of_a_batch_it_cut_short(how: str) -> None:
    """The defect, pinned: the records ``getmany`` never yielded are committed past."""
    run = asyncio.run(_run_cut_short("kafka://127.0.0.1:9", how))
    lost = set(range(COMMITTED, END)) - set(run.processed)
    assert lost, "stock Faust processed every record"
    assert run.committable == END


@pytest.mark.parametrize("how", CUT_SHORT)
def test_our_consumer_fetches_again_the_rest_of_a_batch_cut_short(how: str) -> None:
    run = asyncio.run(_run_cut_short(f"{TRANSPORT_SCHEME}://127.0.0.1:9", how))
    assert set(run.processed) == set(range(COMMITTED, END)), "every message processed"
    assert run.committable == END
    assert _out_of_order(run) == []


@pytest.mark.parametrize(("setting", "cls"), [("loop", _LoopConsumerThread),
                                              ("thread", _ConsumerThread)])
def test_the_worker_app_runs_faust_consumer_where_its_settings_say(
    setting: str, cls: type[Any], tmp_path: Path
) -> None:
    async def build() -> Any:
        settings = WorkerSettings(model_dir=MODEL_DIR, state_dir=tmp_path,
                                  store="memory://", faust_consumer=setting)
        metrics = StreamMetrics()
        app = build_app(settings, ModelHolder(settings.model_dir, metrics), metrics)
        return app.consumer._thread

    assert type(asyncio.run(build())) is cls


def test_the_worker_app_partitions_keyed_outputs_like_aiokafka_with_the_compiled_murmur2(
    tmp_path: Path,
) -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from detector import native
    from detector.stream.stages import KeyPartitioner

    async def build() -> Any:
        settings = WorkerSettings(model_dir=MODEL_DIR, state_dir=tmp_path, store="memory://")
        metrics = StreamMetrics()
        app = build_app(settings, ModelHolder(settings.model_dir, metrics), metrics)
        return app.producer._settings_default()["partitioner"]

    partitioner = asyncio.run(build())
    assert isinstance(partitioner, KeyPartitioner)
    module = native.load()
    if module is not None:
        assert partitioner._murmur2 is module.murmur2
    keys = [f"user:{i}".encode() for i in range(500)] + ["用户:é".encode(), b"", b"\xff\xfe"]
    for n in (1, 3, 8):
        parts = list(range(n))
        assert [partitioner(k, parts, parts) for k in keys] == [
            DefaultPartitioner()(k, parts, parts) for k in keys]
        # place(): the same partition, without the availability list.
        assert [partitioner.place(k, parts) for k in keys] == [
            DefaultPartitioner()(k, parts, parts[:1]) for k in keys]
    assert partitioner(None, [0, 1, 2], [2]) == 2  # unkeyed: an available partition


class _Metadata:
    def __init__(self, partitions: set[int], available: set[int]) -> None:
        self.partitions, self.available = partitions, available

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.available


class _PartitioningProducer:
    """aiokafka's ``_partition`` over scripted metadata, counting its calls."""

    def __init__(self, partitioner: Any) -> None:
        self._partitioner = partitioner
        self._metadata = _Metadata({0, 1, 2, 3, 4}, {1, 3})
        self.calls = 0

    def _partition(self, topic: str, partition: Any, key: Any, value: Any,
                   serialized_key: bytes | None, serialized_value: bytes | None) -> int:
        self.calls += 1
        all_partitions = list(self._metadata.partitions_for_topic(topic))
        available = list(self._metadata.available_partitions_for_topic(topic))
        chosen: int = self._partitioner(serialized_key, all_partitions, available)
        return chosen


@pytest.mark.parametrize("kind", ["ours", "aiokafka's"])
def test_keyed_batches_place_records_as_the_producers_partition_does(kind: str) -> None:
    """Each record's partition is the one ``_partition`` picks, per record or per call."""
    from aiokafka.partitioner import DefaultPartitioner

    from detector.stream.batches import KeyedBatches
    from detector.stream.stages import KeyPartitioner

    partitioner = KeyPartitioner() if kind == "ours" else DefaultPartitioner()
    producer = _PartitioningProducer(partitioner)
    keys: list[bytes | None] = [f"user:{i}".encode() for i in range(300)]
    keys[7] = None  # an unkeyed record: a random available partition
    records = [(k, b"v") for k in keys]
    got = KeyedBatches(producer)._partitions("t", records)  # type: ignore[arg-type]
    reference = _PartitioningProducer(partitioner)
    want = [reference._partition("t", None, None, None, k, v) for k, v in records]
    assert [p for i, p in enumerate(got) if i != 7] == [p for i, p in enumerate(want) if i != 7]
    assert got[7] in {1, 3}
    # Ours reads the metadata once and asks _partition only for the unkeyed record.
    assert producer.calls == (1 if kind == "ours" else len(records))


@pytest.mark.parametrize(
    ("flags", "write_mb", "cache_mb"),
    [
        ({"rocksdb_memory_mb": 0}, 64, 2048),  # faust's store and sizes
        ({"rocksdb_write_buffer_mb": 4, "rocksdb_block_cache_mb": 32, "rocksdb_memory_mb": 0},
         4, 32),
        # Under the default budget (tests/test_stream_store.py) the buffer size still applies.
        ({"rocksdb_write_buffer_mb": 4}, 4, 2048),
    ],
)
def test_the_worker_tables_open_rocksdb_with_the_configured_memory(
    flags: dict[str, int], write_mb: int, cache_mb: int, tmp_path: Path
) -> None:
    async def build() -> list[Any]:
        settings = WorkerSettings(model_dir=MODEL_DIR, state_dir=tmp_path, store="rocksdb://",
                                  **flags)
        metrics = StreamMetrics()
        app = build_app(settings, ModelHolder(settings.model_dir, metrics), metrics)
        return [app.tables[name].data.rocksdb_options
                for name in ("ip-context", "session-context", "baselines")]

    for options in asyncio.run(build()):
        assert options.write_buffer_size == write_mb * 1024 * 1024
        assert options.block_cache_size == cache_mb * 1024 * 1024
