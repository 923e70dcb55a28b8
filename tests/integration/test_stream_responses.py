"""``detector responses`` against a real local HTTP endpoint and the real broker.

The endpoint fails on purpose: transient 503s are retried and nothing is
lost; a duplicated signal (same ``signal_id``) is posted once; offsets are
committed only after success, so a restarted consumer neither repeats handled
signals nor skips the one it gave up on.

Every signal is signed (a key from ``detector keys generate``) and the
consumer verifies against the JWKS (``--jwks``): forged, tampered, unsigned,
replayed, expired and misaddressed signals published to the real topic are
refused with their reason, never posted, and committed past.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from detector.sets import SetSigner, generate_private_key, load_private_key, signed_record
from tests.integration._stream import (
    AUDIENCE,
    ISSUER,
    SigningKeys,
    create_topics,
    run_cli,
    signing_keys,
    unique,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> SigningKeys:
    return signing_keys(tmp_path_factory.mktemp("keys"))


def _signer(keys: SigningKeys) -> SetSigner:
    return SetSigner(load_private_key(keys.key.read_bytes()), ISSUER, AUDIENCE)


def _signed(signer: SetSigner | None, signal: dict[str, Any], iat: float | None = None
            ) -> bytes:
    # iat: the send time, as the worker sets it
    return signed_record(signal, signer, int(time.time() if iat is None else iat))


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


def _publish(bootstrap: str, topic: str, records: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for value in records:
            producer.send(topic, key=b"user:" + str(orjson.loads(value).get("entity")).encode(),
                          value=value)
        producer.flush(30)
    finally:
        producer.close(10)


def _consume(bootstrap: str, topic: str, group: str, url: str, keys: SigningKeys) -> Any:
    return run_cli(
        "responses", "--bootstrap-servers", bootstrap, "--topic", topic, "--group-id", group,
        "--handler", "http", "--url", url, "--backoff", "0.05", "--backoff-max", "0.2",
        "--idle-timeout", "4", *keys.consumer_flags(), timeout_s=90,
    )


def test_retries_transient_failures_and_calls_once_per_signal(
    kafka_bootstrap: str, endpoint: tuple[Endpoint, str], keys: SigningKeys
) -> None:
    state, url = endpoint
    topic, group = unique("resp"), unique("grp")
    create_topics(kafka_bootstrap, {topic: 1})
    signer = _signer(keys)
    signals = [_signal(i) for i in range(5)]
    # redelivery after a worker crash: the same signals again, signed again
    _publish(kafka_bootstrap, topic, [
        _signed(signer, s) for s in [*signals[:3], signals[1], *signals[3:], signals[4]]
    ])
    state.fail_next = 3

    run = _consume(kafka_bootstrap, topic, group, url, keys)
    assert run.returncode == 0, run.stderr
    assert [s["signal_id"] for s in state.ok] == [s["signal_id"] for s in signals]
    assert all(s["set"] for s in state.ok), "the endpoint gets the signed signal"
    assert state.attempts == len(signals) + 3, "each 503 was retried"
    stats = orjson.loads(run.stderr.strip().splitlines()[-1])
    assert stats["handled"] == 5 and stats["retries"] == 3
    assert stats["refused"] == {"replayed": 2}, "a repeated jti is not acted on twice"

    again = _consume(kafka_bootstrap, topic, group, url, keys)
    assert again.returncode == 0, again.stderr
    assert len(state.ok) == len(signals), "committed signals are not handled again"


def test_permanent_failure_stops_without_committing(
    kafka_bootstrap: str, endpoint: tuple[Endpoint, str], keys: SigningKeys
) -> None:
    state, url = endpoint
    topic, group = unique("resp"), unique("grp")
    create_topics(kafka_bootstrap, {topic: 1})
    signals = [_signal(i) for i in range(4)]
    signer = _signer(keys)
    _publish(kafka_bootstrap, topic, [_signed(signer, s) for s in signals])
    state.reject = {"sig-002"}

    run = _consume(kafka_bootstrap, topic, group, url, keys)
    assert run.returncode == 1
    assert "sig-002" in run.stderr and "permanent" in run.stderr
    assert [s["signal_id"] for s in state.ok] == ["sig-000", "sig-001"]

    state.reject = set()  # the endpoint is fixed: nothing was lost
    again = _consume(kafka_bootstrap, topic, group, url, keys)
    assert again.returncode == 0, again.stderr
    assert [s["signal_id"] for s in state.ok] == [s["signal_id"] for s in signals]


def _with(record: bytes, **changes: Any) -> bytes:
    return orjson.dumps({**orjson.loads(record), **changes})


def test_forged_replayed_expired_and_misaddressed_signals_are_refused(
    kafka_bootstrap: str, endpoint: tuple[Endpoint, str], keys: SigningKeys
) -> None:
    state, url = endpoint
    topic, group = unique("resp"), unique("grp")
    create_topics(kafka_bootstrap, {topic: 1})
    signer = _signer(keys)
    attacker = SetSigner(generate_private_key(), ISSUER, AUDIENCE, kid=signer.kid)
    valid = [_signed(signer, _signal(i)) for i in range(3)]
    token = orjson.loads(valid[0])["set"]
    head, body, _ = token.split(".")
    attacks = {
        "forged": _signed(attacker, _signal(10)),  # right kid, wrong key
        "tampered": _with(valid[1], action="step_up"),  # envelope edited
        "unsigned": _signed(None, _signal(11)),
        "replayed": valid[0],  # the exact bytes again
        "expired": _signed(signer, _signal(12), iat=time.time() - 7 * 24 * 3600),
        "wrong_audience": _signed(
            SetSigner(load_private_key(keys.key.read_bytes()), ISSUER, "urn:other"), _signal(13)
        ),
        "alg_none": _with(valid[2], set=f"eyJhbGciOiJub25lIn0.{body}."),
    }
    _publish(kafka_bootstrap, topic, [valid[0], *attacks.values(), valid[1], valid[2]])

    run = _consume(kafka_bootstrap, topic, group, url, keys)
    assert run.returncode == 0, run.stderr
    assert [s["signal_id"] for s in state.ok] == ["sig-000", "sig-001", "sig-002"]
    stats = orjson.loads(run.stderr.strip().splitlines()[-1])
    assert stats["refused"] == {"bad_signature": 1, "mismatch": 1, "unsigned": 1,
                                "replayed": 1, "expired": 1, "wrong_audience": 1,
                                "bad_alg": 1}
    assert stats["handled"] == 3 and stats["verified"] == 3
    for reason in set(stats["refused"]) - {"replayed"}:  # a replay is logged at INFO
        assert f"reason={reason}" in run.stderr
    assert token not in run.stderr and body not in run.stderr, "tokens are never logged"

    again = _consume(kafka_bootstrap, topic, group, url, keys)
    assert again.returncode == 0, again.stderr
    stats = orjson.loads(again.stderr.strip().splitlines()[-1])
    assert stats["records"] == 0, "refused signals were committed past"
    assert len(state.ok) == 3


def test_without_a_jwks_the_consumer_refuses_to_start(kafka_bootstrap: str) -> None:
    run = run_cli("responses", "--bootstrap-servers", kafka_bootstrap, "--idle-timeout", "1")
    assert run.returncode == 2
    assert "--jwks FILE" in run.stderr and "--allow-unsigned" in run.stderr
