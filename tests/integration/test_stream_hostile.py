"""The hostile corpus through the real worker on the real broker.

Every message of ``tests/hostile_corpus.py`` (10 MB messages and 10,000-deep
nesting included) is sent with a raw kafka-python producer, in order, to a
one-partition input topic whose ``max.message.bytes`` is raised to 16 MiB, so
the worker itself sees the 10 MB messages. A second phase sends ordinary
events afterwards. Then, from the dead-letter topic and ``/metrics``:

* in = accepted + rejected (messages read = decisions + parse rejects);
* every reject carries the expected reason code, its source offset and the
  digest and size of the original bytes;
* the worker never hit an engine error and kept deciding good events.

A separate test documents what happens with the broker's default limit: the
broker refuses a 10 MB message before any worker could see it.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError

from tests.hostile_corpus import ACCEPT, HOUR_MS, T0, Case, all_cases
from tests.integration._stream import WorkerProcess, read_topic, running, unique, wait_for

BIG_LIMIT = 16 * 1024 * 1024
N_GOOD_AFTER = 20


@dataclass
class HostileRun:
    cases: list[Case]
    good_ids: list[str]
    dead: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    metrics: dict[str, float]
    input_topic: str
    alive_at_end: bool
    exit_code: int


def _create(bootstrap: str, topics: dict[str, dict[str, str]]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    try:
        admin.create_topics(
            [
                NewTopic(t, num_partitions=1, replication_factor=1, topic_configs=cfg)
                for t, cfg in topics.items()
            ],
            timeout_ms=15_000,
        )
        admin.wait_for_topics(list(topics), timeout_ms=15_000)
    finally:
        admin.close()


def _send(bootstrap: str, topic: str, values: list[bytes], max_request: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=max_request)
    try:
        futures = [producer.send(topic, value=v) for v in values]
        producer.flush(60)
        for f in futures:
            f.get(timeout=60)  # raise if the broker refused one
    finally:
        producer.close(10)


def _good(i: int) -> bytes:
    return orjson.dumps(
        {
            "kind": "auth",
            "id": f"after-{i}",
            "ts": T0 + (40 + i) * HOUR_MS,
            "user": f"late-{i % 4}",
            "ok": True,
            "ip": "198.51.100.9",
            "country": "US",
        }
    )


def _for_the_worker(case: Case, sent_ms: int) -> Case:
    """The worker's outcome: the parser's, except that events timed more than the
    worker's ``--max-future-skew-s`` (300 s) after their record are ``bad_time``."""
    if case.expect != ACCEPT:
        return case
    from detector.events import parse_event

    if parse_event(case.raw).ts_ms > sent_ms + 300_000:
        return replace(case, expect="bad_time")
    return case


@pytest.fixture(scope="module")
def hostile(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> HostileRun:
    tmp = tmp_path_factory.mktemp("hostile")
    # Record timestamps are set when sending (now); far-future events are refused.
    cases = [_for_the_worker(c, int(time.time() * 1000)) for c in all_cases()]
    assert any(c not in all_cases() for c in cases), "the corpus has far-future events"
    n_accept = sum(c.expect == ACCEPT for c in cases)
    inp, resp, dlq, dec = (unique(p) for p in ("hin", "hresp", "hdlq", "hdec"))
    big = {"max.message.bytes": str(BIG_LIMIT)}
    _create(kafka_bootstrap, {inp: big, resp: {}, dlq: {}, dec: {}})
    _send(kafka_bootstrap, inp, [c.raw for c in cases], BIG_LIMIT + 1024)

    worker = WorkerProcess(kafka_bootstrap, unique("happ"), tmp, [inp], resp, dlq, dec, 1)
    good_ids = [f"after-{i}" for i in range(N_GOOD_AFTER)]
    with running(worker):
        worker.wait_ready()
        worker.wait_decided(n_accept)
        # the worker is past the whole corpus: now ordinary traffic must still flow
        _send(kafka_bootstrap, inp, [_good(i) for i in range(N_GOOD_AFTER)], 1024 * 1024)
        worker.wait_decided(n_accept + N_GOOD_AFTER)
        n_rejects = len(cases) - n_accept

        def all_rejects_counted() -> bool:
            return worker.metric("detector_rejects_total") >= n_rejects

        wait_for(all_rejects_counted, 60, f"{n_rejects} rejects counted", worker.log_tail)
        metrics = worker.metrics()
        alive = worker.alive()
        code = worker.stop()
    dead = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, dlq, want=n_rejects)]
    decisions = [
        orjson.loads(r.value)
        for r in read_topic(kafka_bootstrap, dec, want=n_accept + N_GOOD_AFTER)
    ]
    return HostileRun(cases, good_ids, dead, decisions, metrics, inp, alive, code)


def _sum(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


def test_in_equals_accepted_plus_rejected(hostile: HostileRun) -> None:
    m = hostile.metrics
    n_in = len(hostile.cases) + N_GOOD_AFTER
    accepted = _sum(m, "detector_decisions_total")
    rejected = _sum(m, "detector_rejects_total{reason=")
    assert m[f'detector_events_in_total{{topic="{hostile.input_topic}"}}'] == n_in
    assert accepted + rejected == n_in
    assert rejected == sum(c.expect != ACCEPT for c in hostile.cases)
    assert len(hostile.decisions) == accepted
    assert len(hostile.dead) == rejected


def test_every_reject_has_its_reason_code_and_origin(hostile: HostileRun) -> None:
    expected = [(i, c) for i, c in enumerate(hostile.cases) if c.expect != ACCEPT]
    assert [d["offset"] for d in hostile.dead] == [i for i, _ in expected]
    for rec, (_, case) in zip(hostile.dead, expected, strict=True):
        assert rec["reason"] == case.expect, case.name
        assert rec["stage"] == "parse" and rec["topic"] == hostile.input_topic
        assert rec["partition"] == 0
        raw = base64.b64decode(rec["raw_b64"])
        if rec.get("raw_truncated"):
            assert rec["raw_size"] == len(case.raw) and case.raw.startswith(raw)
            assert rec["raw_sha256"] == hashlib.sha256(case.raw).hexdigest()
        else:
            assert raw == case.raw, case.name
    counts = Counter(c.expect for _, c in expected)
    for reason, n in counts.items():
        assert hostile.metrics[f'detector_rejects_total{{reason="{reason}",stage="parse"}}'] == n


def test_the_10MB_messages_reached_the_worker(hostile: HostileRun) -> None:
    big = [d for d in hostile.dead if d.get("raw_size", 0) >= 10 * 1024 * 1024]
    assert len(big) == 2 and {d["reason"] for d in big} == {"too_large"}


def test_no_engine_error_and_worker_kept_going(hostile: HostileRun) -> None:
    assert _sum(hostile.metrics, "detector_engine_errors_total") == 0
    assert hostile.alive_at_end
    decided = {d["event_id"] for d in hostile.decisions}
    assert set(hostile.good_ids) <= decided
    assert hostile.exit_code == 0


def test_accepted_cases_are_decided_in_order(hostile: HostileRun) -> None:
    from detector.events import parse_event

    want = [parse_event(c.raw).event_id for c in hostile.cases if c.expect == ACCEPT]
    got = [d["event_id"] for d in hostile.decisions[: len(want)]]
    assert got == want  # duplicates included: a repeated id is decided again


def test_broker_default_limit_refuses_10MB_before_any_worker(kafka_bootstrap: str) -> None:
    topic = unique("hdefault")
    _create(kafka_bootstrap, {topic: {}})
    ten_mb = next(c.raw for c in all_cases() if c.name == "message_10MB_valid_json")
    with pytest.raises(KafkaError) as info:
        _send(kafka_bootstrap, topic, [ten_mb], BIG_LIMIT + 1024)
    assert "MessageSizeTooLarge" in type(info.value).__name__
    assert read_topic(kafka_bootstrap, topic, want=None, timeout_s=5) == []
