"""Producer and revocation consumer logic with fake Kafka clients (no broker)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from detector.stream.producer import EventProducer
from detector.stream.responses import (
    HandlerFailed,
    PermanentError,
    PrintHandler,
    ResponseConsumer,
    TransientError,
)
from detector.stream.settings import KafkaConnection


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, key: bytes, value: bytes) -> FakeProducer:
        self.sent.append((topic, key, value))
        return self

    def add_errback(self, fn: Any) -> FakeProducer:
        return self

    def flush(self, timeout: float | None = None) -> None:
        pass


def test_producer_validates_routes_by_kind_and_keys_by_entity() -> None:
    fake = FakeProducer()
    p = EventProducer(KafkaConnection(), "auth", "net", producer=fake)
    lines = [
        b'{"kind":"auth","ts":1,"user":"ana"}',
        b"not json",
        b'{"kind":"network","ts":2,"device":"cam-1"}',
        b'{"kind":"auth","ts":3}',
    ]
    stats = p.publish(lines)
    assert [(t, k) for t, k, _ in fake.sent] == [("auth", b"user:ana"), ("net", b"device:cam-1")]
    assert fake.sent[0][2] == lines[0], "the validated bytes are sent unchanged"
    assert (stats.read, stats.sent, stats.rejected) == (4, 2, 2)
    assert dict(stats.reject_reasons) == {"not_json": 1, "missing_entity": 1}


def test_producer_paces_by_schedule() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    p = EventProducer(KafkaConnection(), "auth", producer=FakeProducer())
    lines = [b'{"kind":"auth","ts":%d,"user":"a"}' % i for i in range(5)]
    stats = p.publish(lines, rate=10.0, clock=lambda: now[0], sleep=sleep)
    assert stats.sent == 5
    assert now[0] == pytest.approx(0.4)  # event i is due at i / rate


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes


class FakeConsumer:
    def __init__(self, values: list[bytes]) -> None:
        self.records = [Record("r", 0, i, v) for i, v in enumerate(values)]
        self.committed: list[int] = []
        self.polled = False

    def poll(self, timeout_ms: int, max_records: int) -> dict[str, list[Record]]:
        if self.polled:
            return {}
        self.polled = True
        return {"tp": self.records}

    def commit(self, offsets: dict[Any, Any]) -> None:
        (meta,) = offsets.values()
        self.committed.append(meta.offset)


def _sig(i: int) -> bytes:
    return orjson.dumps({"signal_id": f"s{i}", "action": "revoke"})


def _consumer(values: list[bytes], handler: Any, **kw: Any) -> tuple[ResponseConsumer, Any]:
    fake = FakeConsumer(values)
    c = ResponseConsumer(KafkaConnection(), "r", "g", handler, consumer=fake,
                         sleep=lambda s: None, **kw)
    return c, fake


def test_duplicates_are_handled_once_and_every_offset_committed_after_success() -> None:
    calls: list[str] = []
    c, fake = _consumer([_sig(1), _sig(2), _sig(1), b"garbage", _sig(3)],
                        lambda s: calls.append(s["signal_id"]))
    stats = c.run(idle_timeout_s=0)
    assert calls == ["s1", "s2", "s3"]
    assert fake.committed == [1, 2, 3, 4, 5]
    assert (stats.handled, stats.duplicates, stats.malformed) == (3, 1, 1)


def test_transient_failures_are_retried_with_backoff() -> None:
    failures = [2]

    def flaky(signal: dict[str, Any]) -> None:
        if failures[0]:
            failures[0] -= 1
            raise TransientError("503")

    delays: list[float] = []
    c, fake = _consumer([_sig(1)], flaky, backoff_s=0.5, backoff_max_s=0.8)
    c._sleep = delays.append
    c.run(idle_timeout_s=0)
    assert delays == [0.5, 0.8] and fake.committed == [1]


@pytest.mark.parametrize(
    ("error", "attempts"), [(PermanentError("400"), 0), (TransientError("503"), 3)]
)
def test_giving_up_commits_nothing_for_the_failed_signal(
    error: Exception, attempts: int
) -> None:
    def handler(signal: dict[str, Any]) -> None:
        if signal["signal_id"] == "s2":
            raise error

    c, fake = _consumer([_sig(1), _sig(2), _sig(3)], handler, max_attempts=attempts)
    with pytest.raises(HandlerFailed, match="s2"):
        c.run(idle_timeout_s=0)
    assert fake.committed == [1], "only the signal before the failure is committed"


def test_print_handler_writes_json_lines() -> None:
    out = io.StringIO()
    PrintHandler(out)({"signal_id": "x"})
    assert orjson.loads(out.getvalue()) == {"signal_id": "x"}
