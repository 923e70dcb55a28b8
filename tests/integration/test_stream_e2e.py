"""End to end on the real broker: ``detector produce`` -> worker -> response topic.

The worker signs every signal (a key from ``detector keys generate``); the
signals on the topic verify against the JWKS from ``detector keys jwks``, and
the reference consumer (``detector responses --jwks``) verifies and handles
every one of them.

One worker run serves every test in this module. The input topic has one
partition and so do the internal topics: every stage then sees each key's
events in file order, which is exactly the condition under which the engine
guarantees replay-equal decisions. Malformed messages are interleaved before
and after the valid stream: they must land in the dead-letter topic with
their reason while the worker keeps going.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from detector.sets import SetVerifier, b64url_decode, load_jwks
from tests.integration._stream import (
    AUDIENCE,
    ISSUER,
    SigningKeys,
    WorkerProcess,
    create_topics,
    read_topic,
    run_cli,
    running,
    signing_keys,
    unique,
)

MALFORMED_BEFORE: list[tuple[bytes, str]] = [
    (b"{not json", "not_json"),
    (b'{"class_uid": 9999, "time": 1}', "unknown_class"),
    (b'{"kind":"auth","ts":1}', "missing_entity"),
    (b"", "not_json"),
]
OVERSIZED = b'{"kind":"auth","ts":1,"user":"a","pad":"' + b"x" * 70_000 + b'"}'
MALFORMED_AFTER: list[tuple[bytes, str]] = [(OVERSIZED, "too_large"), (b"[1,2]", "not_object")]


@dataclass
class E2ERun:
    decisions: list[dict[str, Any]]
    signals: list[Any]
    dead: list[Any]
    metrics: dict[str, float]
    produce: dict[str, Any]
    input_topic: str
    exit_code: int
    keys: SigningKeys
    response_topic: str
    worker_log: str


def _send_raw(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for v in values:
            producer.send(topic, value=v)
        producer.flush(30)
    finally:
        producer.close(10)


@pytest.fixture(scope="module")
def e2e(
    kafka_bootstrap: str,
    stream_dataset: tuple[Path, list[dict[str, Any]]],
    tmp_path_factory: pytest.TempPathFactory,
) -> E2ERun:
    events, expected = stream_dataset
    tmp = tmp_path_factory.mktemp("e2e")
    inp, resp, dlq, dec = (unique(p) for p in ("in", "resp", "dlq", "dec"))
    create_topics(kafka_bootstrap, {inp: 1, resp: 1, dlq: 1, dec: 1})

    _send_raw(kafka_bootstrap, inp, [v for v, _ in MALFORMED_BEFORE])
    produced = run_cli(
        "produce", "--bootstrap-servers", kafka_bootstrap, "--events", str(events),
        "--auth-topic", inp, "--network-topic", inp,
    )
    assert produced.returncode == 0, produced.stderr
    _send_raw(kafka_bootstrap, inp, [v for v, _ in MALFORMED_AFTER])

    keys = signing_keys(tmp)
    worker = WorkerProcess(kafka_bootstrap, unique("app"), tmp, [inp], resp, dlq, dec, 1,
                           extra=keys.worker_flags())
    with running(worker):
        worker.wait_ready()
        worker.wait_decided(len(expected))
        n_rejects = len(MALFORMED_BEFORE) + len(MALFORMED_AFTER)
        dead = read_topic(kafka_bootstrap, dlq, want=n_rejects)
        metrics = worker.metrics()
        code = worker.stop()
    decisions = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, dec, len(expected))]
    n_signals = sum(1 for d in expected if d["signal_id"] is not None)
    signals = read_topic(kafka_bootstrap, resp, want=n_signals)
    return E2ERun(decisions, signals, dead, metrics, orjson.loads(produced.stdout), inp, code,
                  keys, resp, worker.log_path.read_text(errors="replace"))


def test_producer_sent_every_event(
    e2e: E2ERun, stream_dataset: tuple[Path, list[dict[str, Any]]]
) -> None:
    assert e2e.produce["sent"] == len(stream_dataset[1])
    assert e2e.produce["rejected"] == 0 and e2e.produce["failed"] == 0


def test_decisions_equal_replay(
    e2e: E2ERun, stream_dataset: tuple[Path, list[dict[str, Any]]]
) -> None:
    _, expected = stream_dataset
    assert len(e2e.decisions) == len(expected)
    assert e2e.decisions == expected


def test_signals_on_response_topic_match_replay(
    e2e: E2ERun, stream_dataset: tuple[Path, list[dict[str, Any]]]
) -> None:
    _, expected = stream_dataset
    want = [d for d in expected if d["signal_id"] is not None]
    assert want, "the dataset must contain attacks that raise signals"
    got = [orjson.loads(r.value) for r in e2e.signals]
    assert [(s["signal_id"], s["action"], s["event_id"]) for s in got] == [
        (d["signal_id"], d["action"], d["event_id"]) for d in want
    ]
    # keyed by entity, with the documented schema
    assert all(r.key.decode() == f"{s['entity_kind']}:{s['entity']}"
               for r, s in zip(e2e.signals, got, strict=True))
    assert {s["schema"] for s in got} == {"zt-detector.signal/1"}
    assert Counter(s["action"] for s in got) == Counter(d["action"] for d in want)


def test_malformed_messages_are_dead_lettered_with_reasons(e2e: E2ERun) -> None:
    sent = MALFORMED_BEFORE + MALFORMED_AFTER
    records = [orjson.loads(r.value) for r in e2e.dead]
    assert [r["reason"] for r in records] == [reason for _, reason in sent]
    for rec, (raw, _) in zip(records, sent, strict=True):
        assert rec["topic"] == e2e.input_topic and rec["partition"] == 0
        assert rec["stage"] == "parse"
        assert base64.b64decode(rec["raw_b64"]) == raw
    offsets = [r["offset"] for r in records]
    n_valid = e2e.produce["sent"]
    before = len(MALFORMED_BEFORE)
    assert offsets[:before] == list(range(before))
    assert offsets[before:] == [before + n_valid + i for i in range(len(MALFORMED_AFTER))]


def test_rejects_counted_and_worker_kept_going(e2e: E2ERun) -> None:
    want = Counter(reason for _, reason in MALFORMED_BEFORE + MALFORMED_AFTER)
    for reason, n in want.items():
        assert e2e.metrics[f'detector_rejects_total{{reason="{reason}",stage="parse"}}'] == n
    assert sum(v for k, v in e2e.metrics.items()
               if k.startswith("detector_engine_errors_total")) == 0
    assert e2e.exit_code == 0, "SIGTERM must stop the worker cleanly"


def test_metrics_expose_counters_and_latency(e2e: E2ERun) -> None:
    m = e2e.metrics
    assert m[f'detector_events_in_total{{topic="{e2e.input_topic}"}}'] == (
        e2e.produce["sent"] + len(MALFORMED_BEFORE) + len(MALFORMED_AFTER)
    )
    # A lone worker runs its stateful stages fused (--topology fused, the default).
    assert any(k.startswith('detector_batch_latency_ms_bucket{le="5.0",stage="fused"}')
               for k in m)
    assert m['detector_stage_path_batches_total{path="fused"}'] > 0
    assert any(k.startswith("detector_consumer_lag{") for k in m)
    assert any(k.startswith("faust_") for k in m), "Faust's Prometheus sensor is registered"
    assert m["detector_cold_start_total"] > 0


def test_every_signal_on_the_topic_verifies_against_the_published_jwks(e2e: E2ERun) -> None:
    assert e2e.signals
    # The freshness window itself is unit-tested; here a wide one only rules
    # out a slow machine, not a broken signature.
    verifier = SetVerifier(load_jwks(e2e.keys.jwks.read_bytes()), ISSUER, AUDIENCE,
                           max_age_s=24 * 3600)
    now = time.time()
    for record in e2e.signals:
        outer = orjson.loads(record.value)
        verified = verifier.verify_record(outer, now)
        assert verified.kid == e2e.keys.kid
        assert verified.jti == outer["signal_id"] == verified.signal["signal_id"]
        assert verified.signal == {k: v for k, v in outer.items() if k != "set"}
        header = orjson.loads(b64url_decode(outer["set"].split(".")[0]))
        assert header == {"alg": "ES256", "kid": e2e.keys.kid, "typ": "secevent+jwt"}
        assert set(verified.claims) >= {"iss", "aud", "iat", "jti", "sub_id", "events"}


def test_the_signing_key_is_never_logged(e2e: E2ERun) -> None:
    pem_body = [ln for ln in e2e.keys.key.read_text().splitlines() if not ln.startswith("-")]
    assert f"kid={e2e.keys.kid}" in e2e.worker_log, "the worker says it signs, by kid"
    assert not any(line in e2e.worker_log for line in pem_body)


def test_reference_consumer_verifies_and_handles_every_signal(
    e2e: E2ERun, kafka_bootstrap: str, tmp_path: Path
) -> None:
    out = tmp_path / "handled.jsonl"
    run = run_cli(
        "responses", "--bootstrap-servers", kafka_bootstrap, "--topic", e2e.response_topic,
        "--group-id", unique("grp"), "--handler", "file", "--file", str(out),
        "--idle-timeout", "4", *e2e.keys.consumer_flags(), timeout_s=90,
    )
    assert run.returncode == 0, run.stderr
    stats = orjson.loads(run.stderr.strip().splitlines()[-1])
    n = len(e2e.signals)
    assert (stats["records"], stats["verified"], stats["handled"]) == (n, n, n)
    assert stats["refused"] == {}
    handled = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert handled == [orjson.loads(r.value) for r in e2e.signals]
