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
from typing import Any

import faust
import orjson
import pytest
from faust.streams import _current_event
from faust.transport.drivers import aiokafka as faust_aiokafka

from detector.context import IpContext
from detector.stream import stages
from detector.stream.transport import TRANSPORT_SCHEME, _Consumer
from detector.stream.worker import _PendingStates


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


def test_a_stage_holding_its_bound_writes_everything_out_at_once() -> None:
    table = _Table()
    pending = _PendingStates(table, limit=3)
    log = stages.Applied({("in", 0, 0): 1})
    events = {k: _Event(i) for i, k in enumerate("abcd")}
    assert pending.hold({"a": _ctx(1), "b": _ctx(1)}, {"a": log}, events) == 0  # type: ignore[arg-type]
    assert table.writes == [] and len(pending) == 2
    assert pending.hold({"b": _ctx(2), "c": _ctx(1)}, None, events) == 3  # type: ignore[arg-type]
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

    async def run() -> bool:
        app, consumer = _consumer()
        app.zt_write_pending_states = lambda: calls.append("flush")
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

    async def run() -> None:
        app, consumer = _consumer()
        app.zt_write_pending_states = lambda: calls.append("flush")
        await consumer.on_partitions_revoked({("in", 0)})

    asyncio.run(run())
    assert calls == ["flush", "revoke"]
