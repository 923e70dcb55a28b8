"""Integration tests against a real Kafka broker.

Every test in this directory is marked ``kafka`` (deselect with ``-m "not kafka"``).
The session-scoped ``kafka_bootstrap`` fixture gives the bootstrap address:

* ``KAFKA_BOOTSTRAP_SERVERS`` if it is set (a broker someone else runs);
* else a broker that ``scripts/kafka-local`` already runs (left running, as found);
* else it starts one with ``scripts/kafka-local start`` and stops it when the
  session ends.

A broker that cannot be started fails the tests with the broker's log tail:
never a silent skip.

``kafka_sasl_ssl`` starts a second, authenticated broker (SASL_SSL with
SCRAM-SHA-512, a test CA, ACLs enforced) for tests/integration/test_kafka_sasl_ssl.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.tls import Pki

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KAFKA_LOCAL = REPO / "scripts" / "kafka-local"

# The first run fetches the broker jars (Maven) before the start itself (<= 90 s).
START_TIMEOUT_S = 900
STOP_TIMEOUT_S = 120
_TAIL_CHARS = 12_000


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.kafka)


def _kafka_local(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KAFKA_LOCAL), *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _tail(text: str) -> str:
    return text if len(text) <= _TAIL_CHARS else "...\n" + text[-_TAIL_CHARS:]


def _stop() -> subprocess.CompletedProcess[str]:
    return _kafka_local("stop", timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        yield external
        return

    running = _kafka_local("bootstrap", timeout=30)
    if running.returncode == 0 and running.stdout.strip():
        yield running.stdout.strip()
        return

    try:
        started = _kafka_local("start", timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        _stop()
        pytest.fail(
            f"scripts/kafka-local start did not finish in {START_TIMEOUT_S}s\n{_tail(stderr)}",
            pytrace=False,
        )
    if started.returncode != 0 or not started.stdout.strip():
        pytest.fail(
            f"scripts/kafka-local start failed (exit {started.returncode}):\n"
            f"{_tail(started.stderr)}",
            pytrace=False,
        )
    address = started.stdout.strip().splitlines()[-1]
    # Another session started it between our look and our start: it is theirs to stop.
    ours = "already running" not in started.stderr
    try:
        yield address
    finally:
        if ours:
            stopped = _stop()
            if stopped.returncode != 0:
                pytest.fail(
                    f"scripts/kafka-local stop failed (exit {stopped.returncode}):\n"
                    f"{_tail(stopped.stderr)}",
                    pytrace=False,
                )


# ------------------------------------------------------------------ streaming


@pytest.fixture(scope="session")
def stream_dataset(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[dict[str, object]]]:
    """A small generated workforce (with attacks) and its replay decisions, in order.

    ``detector replay`` semantics on the same file are the reference every
    streaming test compares the worker against.
    """
    import orjson

    from detector.engine import Detector
    from detector.generate import GeneratorConfig, write_dataset
    from detector.model import load_model
    from detector.replay import replay

    out = tmp_path_factory.mktemp("stream-dataset")
    write_dataset(GeneratorConfig(users=25, days=3, seed=7), out)
    events = out / "events.jsonl"
    with (out / "decisions.jsonl").open("wb") as fh:
        replay(Detector(load_model(REPO / "models" / "default")), [events], fh, None)
    lines = (out / "decisions.jsonl").read_bytes().splitlines()
    decisions = [orjson.loads(line) for line in lines]
    return events, decisions


# ------------------------------------------------------------------ SASL_SSL


@dataclass(frozen=True)
class SecureBroker:
    """A broker whose only client listener is SASL_SSL (SCRAM-SHA-512 over TLS).

    ACLs are enforced (StandardAuthorizer; no ACL = denied); ``admin`` is the
    only super user. Passwords are random per session.
    """

    bootstrap: str
    pki: Pki
    passwords: dict[str, str]
    admin: str = "admin"

    def kafka_python(self, user: str, password: str | None = None,
                     cafile: Path | None = None) -> dict[str, object]:
        """Return kafka-python connection settings for ``user``."""
        import ssl

        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": user,
            "sasl_plain_password": self.passwords[user] if password is None else password,
            "ssl_context": ssl.create_default_context(cafile=str(cafile or self.pki.ca)),
        }


#: The principals the tests (and docs/kafka-security.md) use.
SECURE_USERS = ("admin", "detector-worker", "detector-producer", "detector-responses")


@pytest.fixture(scope="session")
def kafka_sasl_ssl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """Start a second broker (same jars) with a SASL_SSL listener; stop it at the end.

    Its state lives in a session temp dir, so it never meets the plain broker
    or a SASL_SSL broker started by hand.
    """
    import secrets

    from tests.integration.tls import make_test_pki

    root = tmp_path_factory.mktemp("kafka-sasl-ssl")
    pki = make_test_pki(root / "pki")
    passwords = {u: secrets.token_urlsafe(18) for u in SECURE_USERS}
    env = {
        **os.environ,
        "KAFKA_LOCAL_SECURITY": "SASL_SSL",
        "KAFKA_LOCAL_HOME": str(root / "state"),
        "KAFKA_LOCAL_TLS_DIR": str(pki.directory),
        "KAFKA_LOCAL_SCRAM_USERS": " ".join(f"{u}:{p}" for u, p in passwords.items()),
        "KAFKA_LOCAL_AUTHORIZER": "1",
        "KAFKA_LOCAL_SUPER_USERS": "admin",
    }
    env.pop("KAFKA_LOCAL_PORT", None)
    env.pop("KAFKA_LOCAL_CONTROLLER_PORT", None)

    def run(cmd: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KAFKA_LOCAL), cmd], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout, check=False,
        )

    try:
        started = run("start", START_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        run("stop", STOP_TIMEOUT_S)
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"SASL_SSL broker did not start in {START_TIMEOUT_S}s\n{_tail(stderr)}",
                    pytrace=False)
    if started.returncode != 0 or not started.stdout.strip():
        run("stop", STOP_TIMEOUT_S)
        pytest.fail(f"SASL_SSL broker failed to start (exit {started.returncode}):\n"
                    f"{_tail(started.stderr)}", pytrace=False)
    try:
        yield SecureBroker(started.stdout.strip().splitlines()[-1], pki, passwords)
    finally:
        stopped = run("stop", STOP_TIMEOUT_S)
        if stopped.returncode != 0:
            pytest.fail(f"SASL_SSL broker stop failed (exit {stopped.returncode}):\n"
                        f"{_tail(stopped.stderr)}", pytrace=False)


# ------------------------------------------------------------------ two nodes


@dataclass(frozen=True)
class TwoNodeKafka:
    """A cluster of this test's own: node 1 (broker + controller) and a broker-only node 2.

    Node 2 is started on demand (:meth:`start_node2`), so that everything
    created before it (the worker's topics, ``__consumer_offsets``) lives on
    node 1 only; a topic meant to go down with node 2 is then created with its
    replicas assigned to node 2. :meth:`kill_node2` is a crash (SIGKILL by pid,
    data kept); :meth:`start_node2` brings it back on the same port and data.
    """

    bootstrap: str
    env: dict[str, str]

    def _run(self, cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KAFKA_LOCAL), cmd], cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False,
        )

    def start_node2(self) -> str:
        """Start (or restart) node 2; return its address."""
        started = self._run("start-node2")
        assert started.returncode == 0, f"start-node2 failed:\n{_tail(started.stderr)}"
        return started.stdout.strip().splitlines()[-1]

    def kill_node2(self) -> None:
        """SIGKILL node 2 (its data stays)."""
        killed = self._run("kill-node2")
        assert killed.returncode == 0, f"kill-node2 failed:\n{_tail(killed.stderr)}"


@pytest.fixture
def kafka_two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodeKafka]:
    """Start node 1 of a two-node cluster in a temp dir; stop both nodes at the end.

    Never the session broker: while node 2 runs, the controller may place any
    new topic's replicas on it, which other tests must not meet.
    """
    import socket

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    port = free_port()
    cport = free_port()
    while cport == port:
        cport = free_port()
    env = {
        **os.environ,
        "KAFKA_LOCAL_HOME": str(tmp_path_factory.mktemp("kafka-two-nodes") / "state"),
        "KAFKA_LOCAL_PORT": str(port),
        "KAFKA_LOCAL_CONTROLLER_PORT": str(cport),
        "KAFKA_LOCAL_SECURITY": "PLAINTEXT",
        "KAFKA_LOCAL_PYTHON": sys.executable,  # kafka-python for the readiness probes
    }
    cluster = TwoNodeKafka("", env)
    try:
        started = cluster._run("start")
        if started.returncode != 0 or not started.stdout.strip():
            pytest.fail(f"node 1 failed to start (exit {started.returncode}):\n"
                        f"{_tail(started.stderr)}", pytrace=False)
        yield TwoNodeKafka(started.stdout.strip().splitlines()[-1], env)
    finally:
        stopped = subprocess.run(  # stops node 2 too
            [str(KAFKA_LOCAL), "stop"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=STOP_TIMEOUT_S * 2, check=False,
        )
        if stopped.returncode != 0:
            pytest.fail(f"two-node cluster stop failed (exit {stopped.returncode}):\n"
                        f"{_tail(stopped.stderr)}", pytrace=False)
