"""Producer and revocation consumer logic with fake Kafka clients (no broker)."""

from __future__ import annotations

import io
import logging
import urllib.request
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from detector.sets import (
    REFUSAL_REASONS,
    SetSigner,
    SetVerifier,
    generate_private_key,
    load_jwks,
    render_jwks,
    signed_record,
)
from detector.stream.producer import EventProducer
from detector.stream.responses import (
    HandlerFailed,
    HttpPostHandler,
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
    kw.setdefault("allow_unsigned", "verifier" not in kw)
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


# ------------------------------------------------------------------ signed signals
ISS, AUD, NOW = "urn:det", "urn:idp", 1_767_225_600.0
KEY, ATTACKER = generate_private_key(), generate_private_key()
SIGNER = SetSigner(KEY, ISS, AUD)


def _record(i: int, signer: SetSigner | None = SIGNER, iat: float = NOW, **changes: Any
            ) -> bytes:
    signal = {"schema": "zt-detector.signal/1", "signal_id": f"{i:032x}", "action": "revoke",
              "entity": f"u{i}", "entity_kind": "user", "session_id": None,
              "event_ts_ms": 1767225600000, "risk": 0.9, "reasons": []}
    rec = orjson.loads(signed_record(signal, signer, int(iat)))
    rec.update(changes)
    return orjson.dumps(rec)


def _verifying(values: list[bytes], calls: list[dict[str, Any]], now: float = NOW,
               **kw: Any) -> tuple[ResponseConsumer, Any]:
    verifier = SetVerifier(load_jwks(render_jwks([(KEY, None)])), ISS, AUD,
                           max_age_s=kw.pop("max_age_s", 900.0))
    return _consumer(values, calls.append, verifier=verifier, clock=lambda: now, **kw)


def test_a_valid_signed_signal_reaches_the_handler_from_the_signed_payload() -> None:
    calls: list[dict[str, Any]] = []
    value = _record(1)
    c, fake = _verifying([value], calls)
    stats = c.run(idle_timeout_s=0)
    assert [s["signal_id"] for s in calls] == [f"{1:032x}"]
    assert calls[0] == orjson.loads(value), "the signed signal, with its token"
    assert (stats.handled, stats.verified, dict(stats.refused)) == (1, 1, {})
    assert fake.committed == [1]


def _tampered_payload() -> bytes:
    rec = orjson.loads(_record(3))
    head, body, sig = rec["set"].split(".")
    from detector.sets import b64url_decode, b64url_encode

    claims = orjson.loads(b64url_decode(body))
    claims["zt_signal"]["entity"] = "ceo"
    rec["set"] = ".".join([head, b64url_encode(orjson.dumps(claims)), sig])
    rec["entity"] = "ceo"
    return orjson.dumps(rec)


def _alg_none() -> bytes:
    from detector.sets import b64url_encode

    rec = orjson.loads(_record(4))
    _, body, _ = rec["set"].split(".")
    head = b64url_encode(b'{"alg":"none","typ":"secevent+jwt","kid":"x"}')
    rec["set"] = f"{head}.{body}."
    return orjson.dumps(rec)


REFUSED: list[tuple[str, bytes, str]] = [
    ("forged_wrong_key", _record(2, SetSigner(ATTACKER, ISS, AUD, kid=SIGNER.kid)),
     "bad_signature"),
    ("forged_unknown_kid", _record(2, SetSigner(ATTACKER, ISS, AUD)), "unknown_kid"),
    ("tampered_payload", _tampered_payload(), "bad_signature"),
    ("alg_none", _alg_none(), "bad_alg"),
    ("expired", _record(5, iat=NOW - 901), "expired"),
    ("future", _record(5, iat=NOW + 3600), "future_iat"),
    ("wrong_audience", _record(6, SetSigner(KEY, ISS, "urn:other-idp")), "wrong_audience"),
    ("wrong_issuer", _record(6, SetSigner(KEY, "urn:evil", AUD)), "wrong_issuer"),
    ("unsigned", _record(7, signer=None), "unsigned"),
    ("envelope_edited", _record(8, action="step_up"), "mismatch"),
    ("garbage_token", _record(9, set="a.b.c"), "malformed"),
]


@pytest.mark.parametrize(("name", "value", "reason"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_signals_never_reach_the_handler_and_are_committed_past(
    name: str, value: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[dict[str, Any]] = []
    c, fake = _verifying([value, _record(1)], calls)
    with caplog.at_level(logging.INFO, logger="detector.stream.responses"):
        stats = c.run(idle_timeout_s=0)
    assert [s["signal_id"] for s in calls] == [f"{1:032x}"], "only the valid one is handled"
    assert dict(stats.refused) == {reason: 1} and reason in REFUSAL_REASONS
    assert fake.committed == [1, 2], "a refused signal can never become valid: commit past it"
    refusal = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusal) == 1 and f"reason={reason}" in refusal[0]
    assert "partition=0 offset=0" in refusal[0]
    token = orjson.loads(value).get("set")
    assert not token or token not in caplog.text, "tokens are never logged"


def test_a_replayed_jti_is_refused_also_when_re_signed() -> None:
    calls: list[dict[str, Any]] = []
    first = _record(1)
    resigned = _record(1, iat=NOW + 5)  # a worker's redelivery: same jti, new iat
    c, fake = _verifying([first, first, resigned, _record(2)], calls, now=NOW + 10)
    stats = c.run(idle_timeout_s=0)
    assert [s["signal_id"] for s in calls] == [f"{1:032x}", f"{2:032x}"]
    assert dict(stats.refused) == {"replayed": 2} and stats.duplicates == 0
    assert stats.records == stats.handled + stats.malformed + sum(stats.refused.values())
    assert fake.committed == [1, 2, 3, 4]


def test_the_jti_is_remembered_for_the_whole_freshness_window() -> None:
    calls: list[dict[str, Any]] = []
    now = [NOW]
    verifier = SetVerifier(load_jwks(render_jwks([(KEY, None)])), ISS, AUD, max_age_s=100)
    values = [_record(1)] + [_record(1000 + i) for i in range(2047)] + [_record(1)]
    c, _ = _consumer(values, calls.append, verifier=verifier, clock=lambda: now[0])
    stats = c.run(idle_timeout_s=0)  # prunes every 1024 records; j1 must survive them
    assert stats.refused == {"replayed": 1} and stats.handled == 2048
    now[0] = NOW + 101  # once the window has passed, the token itself is expired
    c.handle_record(Record("r", 0, 9999, _record(1)))
    assert dict(stats.refused) == {"replayed": 1, "expired": 1}


def test_a_handler_failure_does_not_mark_the_jti_seen() -> None:
    attempts: list[str] = []

    def handler(signal: dict[str, Any]) -> None:
        attempts.append(signal["signal_id"])
        raise PermanentError("400")

    verifier = SetVerifier(load_jwks(render_jwks([(KEY, None)])), ISS, AUD)
    c, fake = _consumer([_record(1)], handler, verifier=verifier, clock=lambda: NOW)
    with pytest.raises(HandlerFailed):
        c.run(idle_timeout_s=0)
    assert fake.committed == [] and not c._replay.seen(f"{1:032x}", NOW)


def test_the_consumer_needs_a_verifier_or_an_explicit_allow_unsigned() -> None:
    with pytest.raises(ValueError, match="--jwks FILE"):
        ResponseConsumer(KafkaConnection(), "r", "g", print, consumer=FakeConsumer([]))
    verifier = SetVerifier(load_jwks(render_jwks([(KEY, None)])), ISS, AUD)
    with pytest.raises(ValueError, match="exclude"):
        ResponseConsumer(KafkaConnection(), "r", "g", print, consumer=FakeConsumer([]),
                         verifier=verifier, allow_unsigned=True)


def test_http_handler_forwards_the_signed_set(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[urllib.request.Request] = []

    class Resp:
        def __enter__(self) -> Resp:
            return self

        def __exit__(self, *a: object) -> None:
            pass

        def read(self) -> bytes:
            return b""

    def urlopen(req: urllib.request.Request, timeout: float) -> Resp:
        sent.append(req)
        return Resp()

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    record = orjson.loads(_record(1))
    HttpPostHandler("http://idp.invalid/set", body="set")(record)
    assert sent[0].data == record["set"].encode()
    assert sent[0].get_header("Content-type") == "application/secevent+jwt"
    with pytest.raises(PermanentError, match="no signed SET"):
        HttpPostHandler("http://idp.invalid/set", body="set")({"signal_id": "x"})
