"""Write-behind state (``--state-writes commit``): what a stage holds between commits.

The worker's stateful stages keep each changed state in :class:`_PendingStates`
until Faust commits offsets; the transport's consumer writes them to the
tables first. These tests pin the parts that make that safe without a broker:
the next batch reads the latest state, a failing batch cannot alter what is
pending, a flush writes each key once with its latest state in its own
partition, and the flush runs before Faust's commit and before a revocation.
The end-to-end behaviour (restarts, SIGKILL, rebalances, decisions equal to
the replay) is in ``tests/integration``.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust
import orjson
import pytest
from aiokafka.errors import LeaderNotAvailableError, TopicAuthorizationFailedError
from faust.streams import _current_event
from faust.transport.drivers import aiokafka as faust_aiokafka

from detector.context import IpContext
from detector.stream import stages, worker
from detector.stream.metrics import StreamMetrics
from detector.stream.settings import WorkerSettings
from detector.stream.transport import TRANSPORT_SCHEME, _Consumer
from detector.stream.worker import _PendingStates, _Pipeline


class _Message:
    def __init__(self, partition: int) -> None:
        self.partition = partition


class _Event:
    """The part of a Faust event that _bind and a table write use."""

    def __init__(self, partition: int) -> None:
        self.message = _Message(partition)


class _Table(dict[bytes, bytes]):
    """A table that records, for every write, the partition of the bound event."""

    name = "ip-context"

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[bytes, int]] = []

    def __setitem__(self, key: bytes, value: bytes) -> None:
        ref = _current_event.get(None)
        event = ref() if ref is not None else None
        self.writes.append((key, event.message.partition))  # type: ignore[union-attr]
        super().__setitem__(key, value)


def _ctx(n: int) -> IpContext:
    return IpContext(tuple((i, f"u{i}", False) for i in range(n)))


def test_the_next_batch_reads_the_latest_pending_state_and_a_copy_of_its_log() -> None:
    pending = _PendingStates(_Table())
    log = stages.Applied({("in", 0, 0): 7})
    pending.put("a", _ctx(1), log, _Event(3))  # type: ignore[arg-type]
    pending.put("a", _ctx(2), log, _Event(3))  # type: ignore[arg-type]
    applied: dict[str, stages.Applied] = {}
    held = pending.take(["a", "b"], applied)
    assert held == {"a": _ctx(2)}  # the latest; "b" is not pending (read from the table)
    assert applied["a"].offsets == {("in", 0, 0): 7}
    # A batch updates its logs in place; a batch that then fails must leave
    # the pending log as it was.
    applied["a"].add(stages.Source("in", 0, 9))
    assert log.offsets == {("in", 0, 0): 7}
    assert pending.take(["a"], None) == {"a": _ctx(2)}


def test_a_flush_writes_each_key_once_latest_state_own_partition_then_empties() -> None:
    table = _Table()
    pending = _PendingStates(table)
    log = stages.Applied({("in", 1, 0): 4})
    pending.put("a", _ctx(1), None, _Event(2))  # type: ignore[arg-type]
    pending.put("b", _ctx(1), log, _Event(5))  # type: ignore[arg-type]
    pending.put("a", _ctx(3), None, _Event(2))  # type: ignore[arg-type]
    assert len(pending) == 2
    assert pending.flush() == 2
    assert sorted(table.writes) == [(b"a", 2), (b"b", 5)]
    assert table[b"a"] == stages.encode_state(_ctx(3))
    assert table[b"b"] == stages.encode_state(_ctx(1), log)
    assert orjson.loads(table[b"b"])["_applied"]  # the applied log is stored with it
    assert len(pending) == 0 and pending.flush() == 0
    assert len(table.writes) == 2


def test_written_states_are_remembered_until_partitions_move_within_the_bound() -> None:
    """The next batch after a write reads the state it wrote, not the store (no decode)."""
    table = _Table()
    pending = _PendingStates(table, limit=3)
    log = stages.Applied({("in", 0, 0): 5})
    pending.put("a", _ctx(1), log, _Event(0))  # type: ignore[arg-type]
    pending.put("b", _ctx(2), None, _Event(1))  # type: ignore[arg-type]
    assert pending.flush() == 2 and len(pending) == 0
    applied: dict[str, stages.Applied] = {}
    assert pending.take(["a", "b"], applied) == {"a": _ctx(1), "b": _ctx(2)}
    assert applied["a"].offsets == {("in", 0, 0): 5} and applied["a"] is not log, "a copy"
    pending.put("a", _ctx(3), None, _Event(0))  # type: ignore[arg-type]
    assert pending.take(["a"], None) == {"a": _ctx(3)}, "held beats written"
    pending.put("c", _ctx(1), None, _Event(2))  # type: ignore[arg-type]
    pending.put("d", _ctx(1), None, _Event(3))  # type: ignore[arg-type]
    pending.flush()  # 2 remembered + 3 written > the bound of 3: only the last write's
    assert pending.take(["a", "b", "c", "d"], None) == {"a": _ctx(3), "c": _ctx(1),
                                                         "d": _ctx(1)}
    pending.forget_written()
    assert pending.take(["a", "b", "c", "d"], None) == {}


def test_pending_states_report_full_at_their_memory_bound() -> None:
    pending = _PendingStates(_Table(), limit=2)
    pending.put("a", _ctx(1), None, _Event(0))  # type: ignore[arg-type]
    assert not pending.full
    pending.put("a", _ctx(2), None, _Event(0))  # type: ignore[arg-type]
    assert not pending.full  # one key, held once
    pending.put("b", _ctx(1), None, _Event(1))  # type: ignore[arg-type]
    assert pending.full
    pending.flush()
    assert not pending.full


def test_a_stage_holding_its_bound_is_told_to_write_everything_out() -> None:
    table = _Table()
    pending = _PendingStates(table, limit=3)
    log = stages.Applied({("in", 0, 0): 1})
    events = {k: _Event(i) for i, k in enumerate("abcd")}
    assert not pending.hold({"a": _ctx(1), "b": _ctx(1)}, {"a": log}, events)  # type: ignore[arg-type]
    assert table.writes == [] and len(pending) == 2
    assert pending.hold({"b": _ctx(2), "c": _ctx(1)}, None, events)  # type: ignore[arg-type]
    assert table.writes == [], "holding never writes: the stage writes at the bound"
    assert pending.flush() == 3
    assert sorted(table.writes) == [(b"a", 0), (b"b", 1), (b"c", 2)]
    assert table[b"a"] == stages.encode_state(_ctx(1), log)
    assert table[b"b"] == stages.encode_state(_ctx(2))
    assert len(pending) == 0


def _consumer() -> Any:
    app = faust.App("t-pending", broker=f"{TRANSPORT_SCHEME}://127.0.0.1:1", autodiscover=False)
    return app, app.consumer


def test_pending_states_are_written_before_faust_commits(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    calls: list[str] = []

    async def faust_commit(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        calls.append("commit")
        return True

    monkeypatch.setattr(faust_aiokafka.Consumer, "_commit_offsets", faust_commit)

    async def flush() -> None:
        await asyncio.sleep(0)  # the writes are awaited to the end before Faust commits
        calls.append("flush")

    async def run() -> bool:
        app, consumer = _consumer()
        app.zt_write_pending_states = flush
        assert isinstance(consumer, _Consumer)
        result: bool = await consumer._commit_offsets({("in", 0): 5})
        return result

    assert asyncio.run(run()) is True
    assert calls == ["flush", "commit"]


def test_pending_states_are_written_before_the_tables_are_revoked(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    async def faust_revoke(self: Any, revoked: Any) -> None:
        calls.append("revoke")  # Faust revokes the tables first thing

    monkeypatch.setattr(faust_aiokafka.Consumer, "on_partitions_revoked", faust_revoke)

    async def flush() -> None:
        await asyncio.sleep(0)
        calls.append("flush")

    async def run() -> None:
        app, consumer = _consumer()
        app.zt_write_pending_states = flush
        await consumer.on_partitions_revoked({("in", 0)})

    asyncio.run(run())
    assert calls == ["flush", "revoke"]


# ------------------------------------------------------------ --changelog-sends partition


class _Store(dict[bytes, bytes]):
    """A table's store: values by key, and the persisted changelog offset per partition."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log
        self.persisted: dict[int, int] = {}

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.log.append(f"store {key.decode()}")
        super().__setitem__(key, value)

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[tp.partition] = offset


class _Topic:
    def get_topic_name(self) -> str:
        return "app-ip-context-changelog"


class _ChangelogTable:
    """The parts of a Faust table the batched changelog write uses."""

    name = "ip-context"

    def __init__(self, log: list[str]) -> None:
        self.data = _Store(log)
        self.changelog_topic = _Topic()
        self.sensed: list[bytes] = []

    def partition_for_key(self, key: bytes) -> int:
        ref = _current_event.get(None)
        event = ref() if ref is not None else None
        return event.message.partition  # type: ignore[union-attr,no-any-return]

    def _sensor_on_set(self, table: Any, key: bytes, value: bytes) -> None:
        self.sensed.append(key)


class _Metadata:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset


class _Producer:
    """Faust's producer ``send``: offsets per partition; fails chosen values' first send."""

    def __init__(self, log: list[str], fail_once: tuple[bytes, ...] = (),
                 gate: asyncio.Event | None = None, refuse: tuple[bytes, ...] = ()) -> None:
        self.log = log
        self.fail_once = set(fail_once)
        self.refuse = set(refuse)
        self.gate = gate
        self.sent: list[tuple[str, bytes, bytes, int]] = []
        self.next_offset: dict[int, int] = {}

    async def send(self, topic: str, key: bytes, value: bytes, partition: int,
                   timestamp: Any, headers: Any) -> asyncio.Future[Any]:
        self.log.append(f"send {key.decode()}")
        self.sent.append((topic, key, value, partition))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if value in self.fail_once:
            self.fail_once.discard(value)
            fut.set_exception(LeaderNotAvailableError())
            return fut
        if value in self.refuse:
            fut.set_exception(TopicAuthorizationFailedError())
            return fut
        offset = self.next_offset.get(partition, 0)
        self.next_offset[partition] = offset + 1
        meta = _Metadata(topic, partition, offset)
        if self.gate is None:
            fut.set_result(meta)
        else:
            gate = self.gate
            asyncio.get_running_loop().create_task(_set_after(gate, fut, meta))
        return fut


async def _set_after(gate: asyncio.Event, fut: asyncio.Future[Any], meta: _Metadata) -> None:
    await gate.wait()
    fut.set_result(meta)


def _pipeline(producer: _Producer) -> Any:
    pipe = object.__new__(_Pipeline)
    pipe.settings = WorkerSettings(model_dir="m", output_sends="record")
    pipe.metrics = StreamMetrics()
    pipe.app = SimpleNamespace(producer=producer, should_stop=False)
    return pipe


def test_batched_changelog_writes_the_store_first_then_each_key_to_its_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker, "RETRY_BACKOFF_S", 0.001)
    # A flush is one chunk whatever the background writes' chunk: every key
    # is stored before anything is awaited (PendingStates.take_all).
    monkeypatch.setattr(worker, "SNAPSHOT_CHUNK", 2)
    log: list[str] = []
    table = _ChangelogTable(log)
    pending = _PendingStates(table)
    applied = stages.Applied({("in", 1, 0): 4})
    pending.put("a", _ctx(1), None, _Event(2))  # type: ignore[arg-type]
    pending.put("b", _ctx(2), applied, _Event(0))  # type: ignore[arg-type]
    pending.put("c", _ctx(3), None, _Event(2))  # type: ignore[arg-type]
    pending.put("a", _ctx(4), None, _Event(2))  # type: ignore[arg-type]
    b_value = stages.encode_state(_ctx(2), applied)
    producer = _Producer(log, fail_once=(b_value,))  # b's first delivery fails (retriable)
    pipe = _pipeline(producer)

    written = asyncio.run(pipe._write_states(pending))

    assert written == 3 and len(pending) == 0
    assert log[:3] == ["store a", "store b", "store c"], "store before any changelog send"
    assert dict(table.data) == {b"a": stages.encode_state(_ctx(4)), b"b": b_value,
                                b"c": stages.encode_state(_ctx(3))}
    first = [(key, partition) for _, key, _, partition in producer.sent[:3]]
    assert first == [(b"a", 2), (b"b", 0), (b"c", 2)]
    assert producer.sent[3] == ("app-ip-context-changelog", b"b", b_value, 0), "resent"
    assert {key: value for _, key, value, _ in producer.sent} == dict(table.data)
    # Persisted offsets: the highest delivered offset of each changelog partition.
    assert table.data.persisted == {2: 1, 0: 0}
    assert table.sensed == [b"a", b"b", b"c"]
    count = pipe.metrics.registry.get_sample_value("detector_state_writes_total",
                                                   {"table": "ip-context"})
    assert count == 3


def test_one_changelog_write_at_a_time_per_table() -> None:
    """A second write waits until the first is delivered: a key's records keep their order."""
    log: list[str] = []
    table = _ChangelogTable(log)
    pending = _PendingStates(table)
    gate = asyncio.Event()
    producer = _Producer(log, gate=gate)
    pipe = _pipeline(producer)

    async def run() -> None:
        pending.put("a", _ctx(1), None, _Event(0))  # type: ignore[arg-type]
        first = asyncio.ensure_future(pipe._write_states(pending))
        await asyncio.sleep(0.01)
        assert log == ["store a", "send a"]  # sent, not yet delivered
        pending.put("a", _ctx(2), None, _Event(0))  # type: ignore[arg-type]
        second = asyncio.ensure_future(pipe._write_states(pending))
        await asyncio.sleep(0.01)
        assert log == ["store a", "send a"], "the second write waits for the first"
        gate.set()
        await asyncio.gather(first, second)

    asyncio.run(run())
    assert log == ["store a", "send a", "store a", "send a"]
    assert table.data[b"a"] == stages.encode_state(_ctx(2))
    assert table.data.persisted == {0: 1}


def _fail_stops(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """Replace _fail_stop: record the exception, raise SystemExit; return the records."""
    stopped: list[BaseException] = []

    def fake_fail_stop(exc: Exception) -> None:
        stopped.append(exc)
        raise SystemExit(70)

    monkeypatch.setattr(worker, "_fail_stop", fake_fail_stop)
    return stopped


def _one_pending_key(**producer: Any) -> tuple[_ChangelogTable, Any, list[str]]:
    """A pipeline whose one table holds one pending state ("a", partition 0): table, pipe, log."""
    log: list[str] = []
    table = _ChangelogTable(log)
    pending = _PendingStates(table)
    pending.put("a", _ctx(1), None, _Event(0))  # type: ignore[arg-type]
    pipe = _pipeline(_Producer(log, **producer))
    pipe.pending = {id(table): pending}
    return table, pipe, log


def test_a_changelog_refused_before_a_commit_stops_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """flush_states (Faust's commit hook): a refusal exits at once instead of committing."""
    stopped = _fail_stops(monkeypatch)
    table, pipe, _ = _one_pending_key(refuse=(stages.encode_state(_ctx(1)),))

    with pytest.raises(SystemExit):
        asyncio.run(pipe.flush_states())
    assert len(stopped) == 1 and isinstance(stopped[0], TopicAuthorizationFailedError)
    assert table.data.persisted == {}, "nothing recorded as persisted"


def test_a_stopping_app_gives_up_an_undeliverable_changelog_and_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """During an outage a graceful stop does not wait for the broker: exit, nothing committed."""
    monkeypatch.setattr(worker, "RETRY_BACKOFF_S", 0.001)
    stopped = _fail_stops(monkeypatch)
    table, pipe, log = _one_pending_key(fail_once=(stages.encode_state(_ctx(1)),))  # retriable

    async def run() -> None:
        pipe.app.should_stop = True
        await pipe.flush_states()

    with pytest.raises(SystemExit):
        asyncio.run(run())
    assert len(stopped) == 1 and isinstance(stopped[0], worker.DeliveryAbandoned)
    assert log.count("send a") == 1, "not resent: the app is stopping"
    assert table.data.persisted == {}


def test_a_running_app_waits_out_a_retriable_changelog_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not stopping: the same failure is resent and the write completes."""
    monkeypatch.setattr(worker, "RETRY_BACKOFF_S", 0.001)
    table, pipe, log = _one_pending_key(fail_once=(stages.encode_state(_ctx(1)),))
    asyncio.run(pipe.flush_states())
    assert log.count("send a") == 2
    assert table.data.persisted == {0: 0}


# ------------------------------------------------- background writes (fused stages)


def test_a_snapshot_is_read_until_written_and_later_batches_hold_anew() -> None:
    pending = _PendingStates(_Table())
    pending.put("a", _ctx(1), None, _Event(0))  # type: ignore[arg-type]
    pending.put("b", _ctx(1), None, _Event(1))  # type: ignore[arg-type]
    assert pending.snapshot()
    assert len(pending) == 0, "set aside: the bound counts the states held anew"
    assert pending.take(["a", "b"], None) == {"a": _ctx(1), "b": _ctx(1)}, "still read"
    pending.put("a", _ctx(2), None, _Event(0))  # type: ignore[arg-type]  # a later batch
    assert pending.take(["a"], None) == {"a": _ctx(2)}, "the later state first"
    assert [(k, v) for k, v, _, _ in pending.take_snapshot()] == [("a", _ctx(1)), ("b", _ctx(1))]
    with pytest.raises(RuntimeError):
        pending.snapshot()  # one snapshot at a time
    pending.written()
    assert pending.take(["a", "b"], None) == {"a": _ctx(2), "b": _ctx(1)}, "b: as written"
    pending.forget_written()
    assert pending.take(["a", "b"], None) == {"a": _ctx(2)}, "b is read from its table now"
    assert pending.snapshot() and len(pending) == 0, "the next snapshot: a's later state"
    assert [k for k, _, _, _ in pending.take_snapshot()] == ["a"]


def test_a_snapshot_is_written_a_chunk_at_a_time_with_batches_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker, "SNAPSHOT_CHUNK", 2)
    log: list[str] = []
    table = _ChangelogTable(log)
    pending = _PendingStates(table)
    applied = stages.Applied({("in", 1, 0): 4})
    for i, key in enumerate("abcde"):
        pending.put(key, _ctx(i + 1), applied if key == "b" else None,
                    _Event(i % 2))  # type: ignore[arg-type]
    pipe = _pipeline(_Producer(log))
    pending.snapshot()

    async def batch() -> None:
        log.append("batch")  # a batch that runs while the snapshot is written

    async def run() -> int:
        write = asyncio.ensure_future(pipe._write_snapshot(pending))
        await asyncio.sleep(0)
        await batch()
        return int(await write)

    assert asyncio.run(run()) == 5
    assert log[:4] == ["store a", "store b", "send a", "send b"]
    assert log.index("batch") < log.index("store c"), "the batch ran between two chunks"
    assert dict(table.data) == {
        k.encode(): stages.encode_state(_ctx(i + 1), applied if k == "b" else None)
        for i, k in enumerate("abcde")}
    assert table.data.persisted == {0: 2, 1: 1}, "persisted once every chunk was delivered"
    assert pending.take(["a"], None) == {"a": _ctx(1)}, "written, and remembered as written"
    count = pipe.metrics.registry.get_sample_value("detector_state_writes_total",
                                                   {"table": "ip-context"})
    assert count == 5


def test_a_background_write_refused_stops_the_worker_before_its_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stopped = _fail_stops(monkeypatch)
    table, pipe, _ = _one_pending_key(refuse=(stages.encode_state(_ctx(1)),))
    pipe.settings = WorkerSettings(model_dir="m", output_sends="record",
                                   changelog_sends="partition")
    pipe._fused_unflushed = False
    assert pipe.begin_fused_flush() is None, "no fused batch since the last write"
    pipe._fused_unflushed = True
    write = pipe.begin_fused_flush()
    assert write is not None and not pipe._fused_unflushed

    with pytest.raises(SystemExit):
        asyncio.run(write)
    assert len(stopped) == 1 and isinstance(stopped[0], TopicAuthorizationFailedError)
    assert table.data.persisted == {}


class _IngestConsumer:
    """The parts of an aiokafka consumer the direct ingest's commits use."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def assignment(self) -> set[Any]:
        return {_TP}

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.log.append(("commit", dict(offsets)))


_TP = ("in", 0)


def test_the_periodic_commit_writes_in_the_background_then_commits_and_a_revoke_waits(
) -> None:
    from detector.stream.ingest import DirectIngest

    log: list[Any] = []
    gate = asyncio.Event()

    async def write() -> None:
        log.append("write")
        await gate.wait()
        log.append("written")

    def begin() -> Any:
        log.append("snapshot")
        return write()

    async def flush_all() -> None:
        log.append("flush all")

    def fail_stop(exc: Exception) -> Any:
        raise AssertionError(f"fail-stop: {exc!r}")

    async def run() -> None:
        ingest = DirectIngest(WorkerSettings(model_dir="m"), parse=None,  # type: ignore[arg-type]
                              complete=None, on_revoked=lambda: None,  # type: ignore[arg-type]
                              fail_stop=fail_stop, app_stopping=lambda: False,
                              before_commit=flush_all, begin_write=begin)
        consumer = _IngestConsumer(log)
        ingest._consumer = consumer
        ingest._due = {_TP: 10}
        async with ingest._batch_lock:
            await ingest._commit_in_background(consumer)
        await asyncio.sleep(0.01)
        assert log == ["snapshot", "write"], "offsets wait for their states"
        assert not ingest._batch_lock.locked(), "batches run meanwhile"
        ingest._due[_TP] = 20  # a batch finished meanwhile
        async with ingest._batch_lock:
            await ingest._commit_in_background(consumer)
        assert log == ["snapshot", "write"], "one background commit at a time"
        revoked = asyncio.ensure_future(ingest.on_revoked([]))
        await asyncio.sleep(0.01)
        assert log == ["snapshot", "write"], "the revocation waits for the running write"
        gate.set()
        await revoked

    asyncio.run(run())
    assert log == ["snapshot", "write", "written", ("commit", {_TP: 10}), "flush all",
                   ("commit", {_TP: 20})]
