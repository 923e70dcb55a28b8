"""Log hygiene: no raw event, password, token or signing key ever reaches a log.

Canary secrets are planted where a leak would come from: a SASL password in
the settings, a bearer token in the HTTP response handler, a private-key
block, and canary strings inside event fields (user agent, status detail,
service, raw bytes of rejected input). Representative flows then run with
logging captured at DEBUG:

* ``detector -v replay`` (subprocess, rejects included): stdout, stderr and
  the rejects file;
* the stream stages (parse, decode, IP, session, entity) and the worker's
  dead-letter logging;
* :class:`EventProducer` over a fake KafkaProducer whose sends fail;
* :class:`ResponseConsumer` over a fake consumer, with malformed records, a
  failing handler, and the HTTP handler against a local endpoint that fails
  first;
* the worker settings' ``repr``/``str`` and a CLI connection error.

Then :func:`find_leaks` must find no canary in any captured text, not even
base64-encoded. ``test_scanner_finds_a_planted_leak`` proves the scanner
can fail.
"""

from __future__ import annotations

import base64
import http.server
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson
import pytest

from detector.engine import Detector
from detector.model import load_model
from detector.stream import stages
from detector.stream.producer import EventProducer
from detector.stream.responses import (
    HandlerFailed,
    HttpPostHandler,
    ResponseConsumer,
    TransientError,
)
from detector.stream.settings import KafkaConnection, WorkerSettings
from tests.conftest import DEFAULT_MODEL, REPO

PASSWORD: Final = "canary-sasl-pw-6b1f0e2d"  # noqa: S105 (a canary, not a credential)
TOKEN: Final = "canary-bearer-tok-93ac5d71"  # noqa: S105
KEY: Final = "canary-signing-key-4e8d20bb"
PEM: Final = f"-----BEGIN EC PRIVATE KEY-----\n{KEY}\n-----END EC PRIVATE KEY-----"
UA: Final = "canary-user-agent-c0ffee17"
DETAIL: Final = "canary-status-detail-5a5a91"
RAW: Final = "canary-raw-bytes-77e1d0aa"
CANARIES: Final = (PASSWORD, TOKEN, KEY, UA, DETAIL, RAW)
#: Patterns that mean a secret or a raw event reached a log whatever its value.
PATTERNS: Final = ("PRIVATE KEY-----", "Bearer ", "sasl_plain_password", '"class_uid":')

T0 = 1_772_442_000_000


def _b64_forms(canary: str) -> list[str]:
    """Return the base64 fragments that encode ``canary`` at each of the 3 alignments."""
    raw = canary.encode()
    out = []
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + raw).decode()
        start = -(-k // 3) * 4  # first 4-char group made of canary bytes only
        end = (k + len(raw)) // 3 * 4
        out.append(enc[start + (4 if k else 0) : end])
    return [f for f in out if len(f) >= 8]


def find_leaks(text: str, canaries: tuple[str, ...] = CANARIES) -> list[str]:
    """Return every canary (plain or base64-encoded) and forbidden pattern found in ``text``."""
    found = []
    for c in canaries:
        if c in text:
            found.append(c)
        if any(f in text for f in _b64_forms(c)):
            found.append(f"base64({c})")
    found.extend(p for p in PATTERNS if p in text)
    return found


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture every logger at DEBUG, including exception tracebacks."""
    with caplog.at_level(logging.DEBUG):
        yield caplog


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    fmt = logging.Formatter("%(levelname)s %(name)s %(message)s")
    return "\n".join(fmt.format(r) for r in caplog.records)


def _events() -> list[bytes]:
    """Accepted and rejected events that carry the canaries in their fields."""
    ocsf = {
        "class_uid": 3002,
        "time": T0,
        "status_id": 2,
        "status_detail": DETAIL,
        "metadata": {"uid": "c-1"},
        "user": {"uid": "canary-user"},
        "src_endpoint": {"ip": "203.0.113.5", "location": {"country": "BR"}},
        "http_request": {"user_agent": UA},
        "session": {"uid": "cs-1"},
    }
    native = {
        "kind": "auth",
        "id": "c-2",
        "ts": T0 + 1000,
        "user": "canary-user",
        "ok": False,
        "ip": "203.0.113.5",
        "ua": UA,
        "service": DETAIL,
        "session": "cs-1",
    }
    return [
        orjson.dumps(ocsf),
        orjson.dumps(native),
        orjson.dumps({**native, "id": "c-3", "ts": f"not a time {RAW}"}),  # bad_time
        orjson.dumps({**native, "id": "c-4", "ok": RAW}),  # bad_field:ok
        orjson.dumps({**native, "id": "c-5", "country": RAW}),  # bad_field:country
        f'{{"kind":"auth","ua":"{UA}","x":{RAW}}}'.encode(),  # not_json
        f'["{RAW}", "{UA}"]'.encode(),  # not_object
        orjson.dumps({"kind": "auth", "ts": T0, "ua": UA, "note": RAW}),  # missing_entity
        orjson.dumps({"class_uid": 6003, "time": T0, "user": {"uid": RAW}}),  # unknown_class
        orjson.dumps({**native, "id": "c-6", "pad": RAW * 3000}),  # too_large
    ]


# --------------------------------------------------------------- the scanner


@pytest.mark.log_leak_expected  # the session-wide scan (tests/conftest.py) skips this one
def test_scanner_finds_a_planted_leak(captured: pytest.LogCaptureFixture) -> None:
    """The scanner can fail: a deliberately leaking log line is found, plain or base64."""
    leaky = logging.getLogger("tests.leaky")
    leaky.warning("connecting with password=%s", PASSWORD)
    leaky.info("dead letter raw_b64=%s", base64.b64encode(b'{"ua":"' + UA.encode() + b'"}'))
    leaky.debug("event %s", _events()[0].decode())
    text = _log_text(captured)
    leaks = find_leaks(text)
    assert PASSWORD in leaks and f"base64({UA})" in leaks and UA in leaks
    assert DETAIL in leaks and '"class_uid":' in leaks
    assert find_leaks("all clean: reason=not_json offset=3") == []


@pytest.mark.parametrize("canary", CANARIES)
def test_scanner_finds_base64_at_every_alignment(canary: str) -> None:
    for prefix in (b"", b"x", b"xy", b"xyz"):
        blob = base64.b64encode(prefix + canary.encode() + b"tail").decode()
        assert find_leaks(blob, (canary,)) == [f"base64({canary})"], prefix


# ------------------------------------------------------------------- flows


def test_replay_cli_at_debug_leaks_nothing(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(_events()) + b"\n")
    decisions, rejects = tmp_path / "d.jsonl", tmp_path / "r.jsonl"
    detector = str(Path(sys.executable).with_name("detector"))
    proc = subprocess.run(  # noqa: S603
        [
            detector,
            "-v",
            "replay",
            "--model",
            str(DEFAULT_MODEL),
            "--events",
            str(events),
            "--decisions",
            str(decisions),
            "--rejects",
            str(rejects),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = orjson.loads(proc.stdout)
    assert summary["rejected"] == 8 and summary["accepted"] == 2
    assert "reject source=" in proc.stderr, "DEBUG logging must really be on"
    assert find_leaks(proc.stdout) == []
    assert find_leaks(proc.stderr) == []
    # rejects say where and why, never what
    assert find_leaks(rejects.read_text()) == []


def test_stream_stages_and_dead_letter_logging_leak_nothing(
    captured: pytest.LogCaptureFixture,
) -> None:
    from detector.stream.metrics import StreamMetrics
    from detector.stream.worker import _Pipeline

    det = Detector(load_model(DEFAULT_MODEL))
    msgs = [(raw, stages.Source("zt.auth", 0, i)) for i, raw in enumerate(_events())]
    accepted, dead = stages.parse_stage(msgs)
    assert len(accepted) == 2 and len(dead) == 8
    internal = [(r.to_bytes(), stages.Source("by-ip", 0, i)) for i, (_, r) in enumerate(accepted)]
    internal.append((f'{{"v":1,"e":["{UA}"]}}'.encode(), stages.Source("by-ip", 0, 9)))
    items, _, bad = stages.decode_routed(internal, "ip")
    routed = stages.ip_stage(det, items, {}, {}).out
    routed2 = stages.session_stage(det, [r for _, r in routed], {}).out
    decisions = stages.entity_stage(det, [r for _, r in routed2], {}, {}).out
    assert len(decisions) == 2 and len(bad) == 1

    # the worker's dead-letter path logs each reject (without Faust: a bare pipeline)
    sent: list[tuple[str, list[tuple[str, bytes]]]] = []

    class Outbox:
        def send(self, topic: str, records: list[tuple[str, bytes]]) -> None:
            sent.append((topic, records))

    pipe = object.__new__(_Pipeline)
    pipe.metrics = StreamMetrics()
    pipe.settings = WorkerSettings(
        model_dir=DEFAULT_MODEL,
        kafka=KafkaConnection(
            security_protocol="SASL_PLAINTEXT", sasl_username="svc", sasl_password=PASSWORD
        ),
    )
    pipe._dead_letter(Outbox(), [*dead, *bad])  # type: ignore[arg-type]
    assert sent and len(sent[0][1]) == 9
    # the dead-letter *topic* carries the raw bytes (base64): that is its job
    assert any(find_leaks(v.decode()) for _, v in sent[0][1])
    text = _log_text(captured)
    assert "dead letter stage=parse reason=bad_field:ok" in text
    assert find_leaks(text) == []


class _FakeFuture:
    def __init__(self, fail: Exception | None) -> None:
        self.fail = fail

    def add_errback(self, fn: Any) -> _FakeFuture:
        if self.fail is not None:
            fn(self.fail)
        return self


class _FakeKafkaProducer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, topic: str, key: bytes, value: bytes) -> _FakeFuture:
        self.sent.append(value)
        # a broker error whose text echoes the payload
        return _FakeFuture(RuntimeError(f"broker refused {value[:80]!r} {PASSWORD}"))

    def flush(self, timeout: float | None = None) -> None:
        return None

    def close(self, timeout: float | None = None) -> None:
        return None


def test_producer_leaks_nothing(captured: pytest.LogCaptureFixture) -> None:
    conn = KafkaConnection(
        security_protocol="SASL_PLAINTEXT", sasl_username="svc", sasl_password=PASSWORD
    )
    fake = _FakeKafkaProducer()
    producer = EventProducer(conn, "zt.auth", producer=fake)
    stats = producer.publish(_events())
    assert stats.sent == 2 and stats.rejected == 8 and stats.failed == 2
    assert "send failed error=RuntimeError" in _log_text(captured)
    assert find_leaks(_log_text(captured)) == []
    assert find_leaks(repr(producer.__dict__)) == []


class _Record:
    def __init__(self, value: bytes, offset: int) -> None:
        self.value, self.offset = value, offset
        self.topic, self.partition, self.key = "zt.responses", 0, b"user:canary-user"


class _FakeConsumer:
    def __init__(self, records: list[_Record]) -> None:
        self.records = records
        self.committed: list[Any] = []

    def poll(self, timeout_ms: int = 0, max_records: int = 0) -> dict[str, list[_Record]]:
        out, self.records = self.records, []
        return {"tp": out} if out else {}

    def commit(self, offsets: Any) -> None:
        self.committed.append(offsets)

    def close(self) -> None:
        return None


def _signal(i: int) -> dict[str, Any]:
    """A real signal record for a canary-carrying event (to_signal of a revoke)."""
    from detector.engine import Decision
    from detector.events import parse_event
    from detector.policy import Action, Reason
    from detector.signals import to_signal

    event = parse_event(_events()[1])
    decision = Decision(
        event,
        Action.REVOKE,
        1.0,
        1.0,
        1.0,
        (Reason("new_user_agent", UA, DETAIL),),
        False,
        0.0,
        f"sig-{i}",
        "v1",
    )
    return to_signal(decision)


class _FailingEndpoint(http.server.BaseHTTPRequestHandler):
    calls: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _FailingEndpoint.calls.append(self.headers.get("Authorization", ""))
        # fail the first attempt of each signal, with a body that echoes secrets
        code = 503 if len(_FailingEndpoint.calls) % 2 == 1 else 200
        self.send_response(code)
        self.end_headers()
        self.wfile.write(f"error for {TOKEN} {UA}".encode())

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FailingEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FailingEndpoint.calls = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/revoke"
    finally:
        server.shutdown()
        server.server_close()


def test_response_consumer_and_http_handler_leak_nothing(
    captured: pytest.LogCaptureFixture, endpoint: str
) -> None:
    conn = KafkaConnection(
        security_protocol="SASL_PLAINTEXT", sasl_username="svc", sasl_password=PASSWORD
    )
    records = [
        _Record(orjson.dumps(_signal(1)), 0),
        _Record(f'{{"not a signal": "{UA}", "token": "{TOKEN}"'.encode(), 1),  # malformed
        _Record(orjson.dumps(_signal(2)), 2),
        _Record(orjson.dumps(_signal(1)), 3),  # duplicate
    ]
    handler = HttpPostHandler(endpoint, body="caep", token=TOKEN, timeout_s=5)
    consumer = ResponseConsumer(
        conn,
        "zt.responses",
        "g",
        handler,
        consumer=_FakeConsumer(records),
        sleep=lambda _: None,
        allow_unsigned=True,
    )
    stats = consumer.run(max_records=4)
    assert (stats.handled, stats.malformed, stats.duplicates, stats.retries) == (2, 1, 1, 2)
    assert _FailingEndpoint.calls == [f"Bearer {TOKEN}"] * 4  # the token is really sent

    # a handler that gives up: its error is logged on every retry, then raised
    def give_up(signal: dict[str, Any]) -> None:
        raise TransientError(f"IdP said no ({signal['signal_id']})")

    failing = ResponseConsumer(
        conn,
        "zt.responses",
        "g2",
        give_up,
        max_attempts=2,
        consumer=_FakeConsumer([_Record(orjson.dumps(_signal(3)), 0)]),
        sleep=lambda _: None,
        allow_unsigned=True,
    )
    with pytest.raises(HandlerFailed):
        failing.run(max_records=1)
    text = _log_text(captured)
    assert "handler failed signal_id=sig-1" in text and "malformed signal record" in text
    assert find_leaks(text) == []
    assert find_leaks(repr(handler.__dict__.get("url"))) == []


def test_settings_repr_and_str_hide_the_password(captured: pytest.LogCaptureFixture) -> None:
    env = {
        "DETECTOR_BOOTSTRAP_SERVERS": "k1:9093",
        "DETECTOR_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "DETECTOR_SASL_MECHANISM": "SCRAM-SHA-512",
        "DETECTOR_SASL_USERNAME": "detector",
        "DETECTOR_SASL_PASSWORD": PASSWORD,
        "DETECTOR_MODEL_DIR": str(DEFAULT_MODEL),
    }
    settings = WorkerSettings.from_env(env)
    assert settings.kafka.sasl_password == PASSWORD  # it is there...
    logging.getLogger("tests.settings").info("settings %s / %r", settings, settings.kafka)
    for text in (repr(settings), str(settings), f"{settings.kafka}", _log_text(captured)):
        assert find_leaks(text) == [], text  # ...and never printed


def test_cli_connection_error_does_not_echo_the_password(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    events.write_bytes(_events()[1] + b"\n")
    detector = str(Path(sys.executable).with_name("detector"))
    proc = subprocess.run(  # noqa: S603
        [
            detector,
            "-v",
            "produce",
            "--bootstrap-servers",
            "127.0.0.1:9",
            "--security-protocol",
            "SASL_PLAINTEXT",
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            "detector",
            "--events",
            str(events),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "DETECTOR_SASL_PASSWORD": PASSWORD},
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0  # nothing listens there
    assert find_leaks(proc.stdout + proc.stderr) == [], proc.stderr[-3000:]


def test_signing_key_material_is_not_in_any_log_sink(captured: pytest.LogCaptureFixture) -> None:
    """A PEM key handed around in settings-like objects is never formatted into a log."""
    conn = KafkaConnection(
        security_protocol="SASL_PLAINTEXT", sasl_username="svc", sasl_password=PEM
    )
    logging.getLogger("tests.keys").debug("connection %r", conn)
    assert find_leaks(repr(conn)) == [] and find_leaks(_log_text(captured)) == []


def test_session_wide_scan_fails_a_run_that_leaks(tmp_path: Path) -> None:
    """The conftest hooks fail a whole pytest run when any test's captured log leaks."""
    (tmp_path / "test_leaky.py").write_text(
        "import logging\n"
        "def test_leaks():\n"
        f"    logging.getLogger('x').warning('auth header Bearer {TOKEN}')\n"
        "def test_clean():\n"
        "    logging.getLogger('x').warning('reason=not_json offset=3')\n"
    )
    proc = subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "test_leaky.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
    )
    assert "2 passed" in proc.stdout, proc.stdout[-2000:]
    assert proc.returncode == 1
    assert "LOG LEAK: test_leaky.py::test_leaks" in proc.stdout
    assert "test_clean" not in proc.stdout.split("LOG LEAK")[-1]
