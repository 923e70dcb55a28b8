"""``detector responses`` against a real local HTTP endpoint and the real broker.

The endpoint fails on purpose: transient 503s are retried and nothing is
lost; a duplicated signal (same ``signal_id``) is posted once; offsets are
committed only after success, so a restarted consumer neither repeats handled
signals nor skips the one it gave up on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from tests.integration._stream import create_topics, run_cli, unique


class Endpoint:
    """A revocation endpoint that records successful POSTs and fails on demand."""

    def __init__(self) -> None:
        self.ok: list[dict[str, Any]] = []
        self.attempts = 0
        self.fail_next = 0  # answer 503 to this many requests
        self.reject: set[str] = set()  # signal ids answered with 400
        self.lock = threading.Lock()

    def handle(self, body: bytes) -> int:
        signal = orjson.loads(body)
        with self.lock:
            self.attempts += 1
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503
            if signal["signal_id"] in self.reject:
                return 400
            self.ok.append(signal)
            return 204


@pytest.fixture
def endpoint() -> Iterator[tuple[Endpoint, str]]:
    state = Endpoint()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(state.handle(body))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/revoke"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _signal(i: int) -> dict[str, Any]:
    return {
        "schema": "zt-detector.signal/1", "signal_id": f"sig-{i:03d}", "action": "revoke",
        "entity": f"user{i}", "entity_kind": "user", "entity_class": "employee",
        "session_id": None, "risk": 0.99, "reasons": [], "model_version": "t",
        "event_id": f"e{i}", "event_time": "2026-01-01T00:00:00.000Z",
        "event_ts_ms": 1767225600000, "kind": "auth",
    }


def _publish(bootstrap: str, topic: str, signals: list[dict[str, Any]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for s in signals:
            producer.send(topic, key=f"user:{s['entity']}".encode(), value=orjson.dumps(s))
        producer.flush(30)
    finally:
        producer.close(10)


def _consume(bootstrap: str, topic: str, group: str, url: str) -> Any:
    return run_cli(
        "responses", "--bootstrap-servers", bootstrap, "--topic", topic, "--group-id", group,
        "--handler", "http", "--url", url, "--backoff", "0.05", "--backoff-max", "0.2",
        "--idle-timeout", "4", timeout_s=90,
    )


def test_retries_transient_failures_and_calls_once_per_signal(
    kafka_bootstrap: str, endpoint: tuple[Endpoint, str]
) -> None:
    state, url = endpoint
    topic, group = unique("resp"), unique("grp")
    create_topics(kafka_bootstrap, {topic: 1})
    signals = [_signal(i) for i in range(5)]
    # redelivery after a worker crash: the same signals again
    _publish(kafka_bootstrap, topic, [*signals[:3], signals[1], *signals[3:], signals[4]])
    state.fail_next = 3

    run = _consume(kafka_bootstrap, topic, group, url)
    assert run.returncode == 0, run.stderr
    assert [s["signal_id"] for s in state.ok] == [s["signal_id"] for s in signals]
    assert state.attempts == len(signals) + 3, "each 503 was retried"
    stats = orjson.loads(run.stderr.strip().splitlines()[-1])
    assert stats["handled"] == 5 and stats["duplicates"] == 2 and stats["retries"] == 3

    again = _consume(kafka_bootstrap, topic, group, url)
    assert again.returncode == 0, again.stderr
    assert len(state.ok) == len(signals), "committed signals are not handled again"


def test_permanent_failure_stops_without_committing(
    kafka_bootstrap: str, endpoint: tuple[Endpoint, str]
) -> None:
    state, url = endpoint
    topic, group = unique("resp"), unique("grp")
    create_topics(kafka_bootstrap, {topic: 1})
    signals = [_signal(i) for i in range(4)]
    _publish(kafka_bootstrap, topic, signals)
    state.reject = {"sig-002"}

    run = _consume(kafka_bootstrap, topic, group, url)
    assert run.returncode == 1
    assert "sig-002" in run.stderr and "permanent" in run.stderr
    assert [s["signal_id"] for s in state.ok] == ["sig-000", "sig-001"]

    state.reject = set()  # the endpoint is fixed: nothing was lost
    again = _consume(kafka_bootstrap, topic, group, url)
    assert again.returncode == 0, again.stderr
    assert [s["signal_id"] for s in state.ok] == [s["signal_id"] for s in signals]
