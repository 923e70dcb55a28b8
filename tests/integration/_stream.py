"""Helpers for the streaming integration tests: topics, worker processes, reading topics.

Workers run as real subprocesses (``.venv/bin/detector worker``) so that
SIGTERM, restarts and group rebalances are the real thing. Every wait polls
with a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

REPO = Path(__file__).resolve().parents[2]
DETECTOR = str(Path(sys.executable).with_name("detector"))
MODEL = REPO / "models" / "default"

WORKER_START_S = 90.0
WORKER_STOP_S = 60.0

ISSUER = "urn:zt-detector:it"
AUDIENCE = "urn:zt-detector:it-responses"


def unique(prefix: str) -> str:
    """Return a unique topic / app id for one test."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create topics (name -> partitions) and wait until they exist."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    try:
        admin.create_topics(
            [NewTopic(t, num_partitions=n, replication_factor=1) for t, n in topics.items()],
            timeout_ms=15_000,
        )
        admin.wait_for_topics(list(topics), timeout_ms=15_000)
    finally:
        admin.close()


def set_topic_config(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    """Alter ``topic``'s dynamic configuration (e.g. ``max.message.bytes``)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    finally:
        admin.close()


def produce_file(bootstrap: str, events: Path, topic: str) -> None:
    """Publish a JSONL file with ``detector produce`` (auth and network events to ``topic``)."""
    out = run_cli("produce", "--bootstrap-servers", bootstrap, "--events", str(events),
                  "--auth-topic", topic, "--network-topic", topic)
    assert out.returncode == 0, out.stderr


def read_topic(
    bootstrap: str, topic: str, want: int | None = None, timeout_s: float = 30.0,
    idle_s: float = 3.0,
) -> list[Any]:
    """Read a topic from the beginning; stop at ``want`` records, or when idle.

    Returns the consumer records (``.key``, ``.value``, ``.partition``...).
    """
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                out.extend(records)
            if batch:
                last = time.monotonic()
            if want is not None and len(out) >= want:
                break
            if want is None and out and time.monotonic() - last > idle_s:
                break
    finally:
        consumer.close()
    return out


def wait_all_decided(
    bootstrap: str, topic: str, event_ids: set[str], timeout_s: float = 180.0
) -> None:
    """Wait until the decisions topic holds a decision for every event id.

    Counting decisions is not enough: with at-least-once delivery a worker
    may decide a redelivered event twice and reach any count early.
    """
    missing: set[str] = set(event_ids)

    def covered() -> bool:
        nonlocal missing
        records = read_topic(bootstrap, topic, want=None, timeout_s=20, idle_s=1.0)
        seen = {orjson.loads(r.value)["event_id"] for r in records}
        missing = set(event_ids) - seen
        return not missing

    wait_for(covered, timeout_s, f"decisions for all {len(event_ids)} events",
             lambda: f"{len(missing)} still missing, e.g. {sorted(missing)[:5]}")


def free_port() -> int:
    """Return a free TCP port on localhost."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout_s: float, what: str,
             on_timeout: Callable[[], str] = lambda: "") -> None:
    """Poll ``check`` every 0.25 s until true; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{on_timeout()}")


def parse_metrics(text: str) -> dict[str, float]:
    """Return Prometheus text samples as {'name{labels}': value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


class WorkerProcess:
    """One ``detector worker`` subprocess, with its web port and log file."""

    def __init__(self, bootstrap: str, app_id: str, tmp: Path, inputs: list[str],
                 responses: str, dlq: str, decisions: str | None, partitions: int,
                 name: str = "w", extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.log_path = tmp / f"{name}-{app_id}.log"
        self.args = [
            DETECTOR, "worker",
            "--model", str(MODEL),
            "--bootstrap-servers", bootstrap,
            "--app-id", app_id,
            "--input-topics", ",".join(inputs),
            "--response-topic", responses,
            "--dlq-topic", dlq,
            "--partitions", str(partitions),
            "--store", "memory://",
            "--state-dir", str(tmp / f"state-{name}"),
            "--web-host", "127.0.0.1",
            "--web-port", str(self.port),
            "--batch-within-s", "0.1",
            "--commit-interval-s", "1.0",
            "--log-level", "INFO",
            *(["--decisions-topic", decisions] if decisions else []),
            *(extra or []),
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start the process; return self (not yet ready)."""
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        return self

    def log_tail(self, n: int = 60) -> str:
        """Return the last lines of the worker's log."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def _get(self, path: str) -> bytes | None:
        try:
            url = f"http://127.0.0.1:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310
                body: bytes = resp.read()
                return body
        except OSError:
            return None

    def health(self) -> dict[str, Any] | None:
        """Return the /health body, or None when the web server does not answer."""
        body = self._get("/health")
        return None if body is None else orjson.loads(body)

    def metrics(self) -> dict[str, float]:
        """Return the /metrics samples ({} when the web server does not answer)."""
        body = self._get("/metrics")
        return {} if body is None else parse_metrics(body.decode())

    def metric(self, prefix: str) -> float:
        """Return the sum of all samples whose name starts with ``prefix``."""
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))

    def decided(self) -> float:
        """Return the number of events this process decided."""
        return self.metric("detector_decisions_total")

    def alive(self) -> bool:
        """Return True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout_s: float = WORKER_START_S) -> None:
        """Wait until /health answers ready with assigned partitions."""
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"worker exited early:\n{self.log_tail()}")
            h = self.health()
            return bool(h and h["ready"] and h["assigned_partitions"] > 0)

        wait_for(ready, timeout_s, "worker ready", self.log_tail)

    def wait_decided(self, n: float, timeout_s: float = 120.0) -> None:
        """Wait until this process decided at least ``n`` events."""
        def done() -> bool:
            if not self.alive():
                raise AssertionError(f"worker exited early:\n{self.log_tail()}")
            return self.decided() >= n

        wait_for(done, timeout_s, f"{n} decisions", self.log_tail)

    def stop(self, timeout_s: float = WORKER_STOP_S) -> int:
        """SIGTERM and wait (SIGKILL after ``timeout_s``); return the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(
                    f"worker ignored SIGTERM for {timeout_s}s:\n{self.log_tail()}"
                ) from None
        self._log.close()
        return int(self.proc.returncode)


@contextlib.contextmanager
def running(*workers: WorkerProcess) -> Iterator[tuple[WorkerProcess, ...]]:
    """Start workers; always stop them (SIGKILL as a last resort) on exit."""
    try:
        for w in workers:
            w.start()
        yield workers
    finally:
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in workers:
            if w.proc is not None:
                try:
                    w.proc.wait(WORKER_STOP_S)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait(10)


def run_cli(*args: str, timeout_s: float = 120.0, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run ``detector <args>``; return the completed process (never raises on exit code)."""
    return subprocess.run(
        [DETECTOR, *args], capture_output=True, text=True, timeout=timeout_s, check=False,
        cwd=REPO, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class SigningKeys:
    """A signing key and its published JWKS, made with ``detector keys``."""

    key: Path
    jwks: Path
    kid: str

    def worker_flags(self) -> list[str]:
        """Return the ``detector worker`` flags that make it sign."""
        return ["--signing-key-file", str(self.key), "--issuer", ISSUER, "--audience", AUDIENCE]

    def consumer_flags(self) -> list[str]:
        """Return the ``detector responses`` flags that make it verify."""
        return ["--jwks", str(self.jwks), "--issuer", ISSUER, "--audience", AUDIENCE]


def signing_keys(tmp: Path) -> SigningKeys:
    """Generate a key and its JWKS with the real CLI (``detector keys``)."""
    key, jwks = tmp / "signing.pem", tmp / "jwks.json"
    made = run_cli("keys", "generate", "--out", str(key))
    assert made.returncode == 0, made.stderr
    assert key.stat().st_mode & 0o777 == 0o600
    published = run_cli("keys", "jwks", "--key", str(key), "--out", str(jwks))
    assert published.returncode == 0, published.stderr
    kid = str(orjson.loads(made.stdout)["kid"])
    assert orjson.loads(published.stdout)["kids"] == [kid]
    return SigningKeys(key, jwks, kid)
