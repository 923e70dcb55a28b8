"""SASL_SSL (SCRAM-SHA-512 over TLS) with ACLs, on a real broker.

The broker (fixture ``kafka_sasl_ssl``) has only a SASL_SSL client listener,
a certificate signed by a test CA, four SCRAM users and the StandardAuthorizer
(no ACL = denied; ``admin`` is the only super user). This module grants the
ACLs and creates the topics that docs/kafka-security.md lists, read from its
command block, and nothing else. Then, each as its own principal:

* ``detector produce`` publishes the stream dataset (``detector-producer``);
* the worker decides it (``detector-worker``) and dead-letters a malformed event;
* ``detector responses`` hands every signal to a file (``detector-responses``);

and the signals equal the replay's. Wrong passwords and untrusted CAs are
refused with a message that says so, and the producer cannot forge signals.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    NewTopic,
    ResourcePattern,
    ResourceType,
)
from kafka.errors import KafkaError, TopicAuthorizationFailedError

from tests.integration._stream import REPO, WorkerProcess, running, wait_for
from tests.integration.conftest import SecureBroker

DOC = REPO / "docs" / "kafka-security.md"
DOC_MARKER = "<!-- acl-commands:"

APP_ID = "zt-detector"  # the defaults the documented ACLs name
AUTH, NETWORK, RESPONSES, DLQ = "zt.auth", "zt.network", "zt.responses", "zt.deadletter"
MALFORMED = b'{"kind":"auth","ts":1}'  # valid JSON, no entity: dead-lettered

CLI_TIMEOUT_S = 180.0


# ------------------------------------------------------------------ the documented ACLs


def documented_commands() -> list[list[str]]:
    """Return the kafka-topics.sh / kafka-acls.sh commands of the doc's tested block."""
    text = DOC.read_text()
    start = text.index(DOC_MARKER)
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block is not None, "no command block after the marker in docs/kafka-security.md"
    joined = block.group(1).replace("\\\n", " ")
    commands = [
        shlex.split(line) for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands and all(c[0] in ("kafka-topics.sh", "kafka-acls.sh") for c in commands)
    return commands


def _parser() -> argparse.ArgumentParser:
    # The subset of kafka-topics.sh / kafka-acls.sh flags the doc uses.
    p = argparse.ArgumentParser(exit_on_error=False)
    p.add_argument("--bootstrap-server")
    p.add_argument("--command-config")
    p.add_argument("--add", action="store_true")
    p.add_argument("--create", action="store_true")
    p.add_argument("--partitions", type=int)
    p.add_argument("--allow-principal", action="append", default=[])
    p.add_argument("--operation", action="append", default=[])
    p.add_argument("--topic", action="append", default=[])
    p.add_argument("--group", action="append", default=[])
    p.add_argument("--resource-pattern-type", default="literal",
                   choices=["literal", "prefixed"])
    return p


def apply_documented(admin: KafkaAdminClient) -> tuple[list[str], list[ACL]]:
    """Create the documented topics (1 partition here) and grant the documented ACLs."""
    topics: list[str] = []
    acls: list[ACL] = []
    for command in documented_commands():
        args = _parser().parse_args(command[1:])
        if command[0] == "kafka-topics.sh":
            assert args.create and len(args.topic) == 1, command
            topics.append(args.topic[0])
            continue
        assert args.add and args.allow_principal and args.operation, command
        kind = ACLResourcePatternType[args.resource_pattern_type.upper()]
        resources = [ResourcePattern(ResourceType.TOPIC, t, kind) for t in args.topic] + [
            ResourcePattern(ResourceType.GROUP, g, kind) for g in args.group
        ]
        assert resources, command
        acls += [
            ACL(principal, "*", ACLOperation[op.upper()], ACLPermissionType.ALLOW, resource)
            for principal in args.allow_principal
            for op in args.operation
            for resource in resources
        ]
    # One partition each: the worker then sees the file's order, and its
    # decisions must equal the replay's exactly.
    admin.create_topics([NewTopic(t, 1, 1) for t in topics], timeout_ms=30_000)
    admin.wait_for_topics(topics, timeout_ms=30_000)
    result = admin.create_acls(acls)
    assert not result["failed"], result["failed"]
    return topics, acls


# ------------------------------------------------------------------ helpers


def _env(broker: SecureBroker, user: str, password: str | None = None,
         cafile: Path | None = None) -> dict[str, str]:
    """The DETECTOR_* connection environment of ``user`` (the password never on argv)."""
    return {
        **os.environ,
        "DETECTOR_BOOTSTRAP_SERVERS": broker.bootstrap,
        "DETECTOR_SECURITY_PROTOCOL": "SASL_SSL",
        "DETECTOR_SASL_MECHANISM": "SCRAM-SHA-512",
        "DETECTOR_SASL_USERNAME": user,
        "DETECTOR_SASL_PASSWORD": broker.passwords[user] if password is None else password,
        "DETECTOR_SSL_CAFILE": str(cafile or broker.pki.ca),
    }


def _detector(*args: str, env: dict[str, str], timeout_s: float = CLI_TIMEOUT_S
              ) -> subprocess.CompletedProcess[str]:
    from tests.integration._stream import DETECTOR

    return subprocess.run(
        [DETECTOR, *args], capture_output=True, text=True, timeout=timeout_s, check=False,
        cwd=REPO, env=env, stdin=subprocess.DEVNULL,
    )


class SecureWorker(WorkerProcess):
    """A worker subprocess whose connection settings come from its environment."""

    def __init__(self, env: dict[str, str], tmp: Path, name: str = "w") -> None:
        super().__init__(env["DETECTOR_BOOTSTRAP_SERVERS"], APP_ID, tmp, [AUTH, NETWORK],
                         RESPONSES, DLQ, None, 1, name=name)
        self.env = env

    def start(self) -> SecureWorker:
        """Start the process with its environment; return self."""
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=REPO, env=self.env,
        )
        return self


def _read_all(broker: SecureBroker, topic: str, want: int, timeout_s: float = 60.0) -> list[Any]:
    consumer = KafkaConsumer(topic, auto_offset_reset="earliest", enable_auto_commit=False,
                             group_id=None, **broker.kafka_python(broker.admin))
    out: list[Any] = []
    try:
        def enough() -> bool:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
            return len(out) >= want

        wait_for(enough, timeout_s, f"{want} records on {topic}", lambda: f"got {len(out)}")
    finally:
        consumer.close()
    return out


# ------------------------------------------------------------------ the run


@dataclass
class SecureRun:
    granted: list[ACL]
    produce: subprocess.CompletedProcess[str]
    worker_exit: int
    worker_log: str
    dead: list[Any]
    response_records: list[Any]
    responses: subprocess.CompletedProcess[str]
    handled: list[dict[str, Any]]


@pytest.fixture(scope="module")
def secure(kafka_sasl_ssl: SecureBroker) -> Iterator[SecureBroker]:
    """The SASL_SSL broker with the documented topics and ACLs, and nothing more."""
    admin = KafkaAdminClient(client_id="acl-admin", request_timeout_ms=30_000,
                             **kafka_sasl_ssl.kafka_python(kafka_sasl_ssl.admin))
    try:
        apply_documented(admin)
    finally:
        admin.close()
    yield kafka_sasl_ssl


@pytest.fixture(scope="module")
def run(
    secure: SecureBroker,
    stream_dataset: tuple[Path, list[dict[str, Any]]],
    tmp_path_factory: pytest.TempPathFactory,
) -> SecureRun:
    events, expected = stream_dataset
    tmp = tmp_path_factory.mktemp("sasl-ssl")

    # Every event goes to one one-partition topic: the worker sees file order.
    produce = _detector("produce", "--events", str(events), "--auth-topic", AUTH,
                        "--network-topic", AUTH, env=_env(secure, "detector-producer"))
    assert produce.returncode == 0, produce.stderr
    producer = KafkaProducer(acks="all", **secure.kafka_python("detector-producer"))
    try:
        producer.send(AUTH, value=MALFORMED).get(timeout=30)
    finally:
        producer.close(10)

    # The worker signs (ES256 SETs) and the consumer verifies against the JWKS.
    key, jwks = tmp / "signing.pem", tmp / "jwks.json"
    keys = _detector("keys", "generate", "--out", str(key), env=dict(os.environ))
    assert keys.returncode == 0, keys.stderr
    keys = _detector("keys", "jwks", "--key", str(key), "--out", str(jwks), env=dict(os.environ))
    assert keys.returncode == 0, keys.stderr
    worker = SecureWorker({**_env(secure, "detector-worker"),
                           "DETECTOR_SIGNING_KEY_FILE": str(key)}, tmp)
    with running(worker):
        worker.wait_ready()
        worker.wait_decided(len(expected))
        dead = _read_all(secure, DLQ, 1)
        worker_exit = worker.stop()
    n_signals = sum(1 for d in expected if d["signal_id"] is not None)
    response_records = _read_all(secure, RESPONSES, n_signals)

    out = tmp / "handled.jsonl"
    responses = _detector("responses", "--handler", "file", "--file", str(out),
                          "--jwks", str(jwks), "--idle-timeout", "5",
                          env=_env(secure, "detector-responses"))
    handled = [orjson.loads(line) for line in out.read_bytes().splitlines()] if out.exists() else []
    admin = KafkaAdminClient(client_id="acl-admin", **secure.kafka_python(secure.admin))
    try:
        granted = admin.describe_acls(
            _any_acl_filter()
        )[0]
    finally:
        admin.close()
    return SecureRun(granted, produce, worker_exit, worker.log_tail(200), dead,
                     response_records, responses, handled)


def _any_acl_filter() -> Any:
    from kafka.admin import ACLFilter, ResourcePatternFilter

    return ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                     ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))


# ------------------------------------------------------------------ end to end


def test_only_the_documented_acls_are_granted(run: SecureRun) -> None:
    principals = {acl.principal for acl in run.granted}
    assert principals == {"User:detector-producer", "User:detector-worker",
                          "User:detector-responses"}
    worker_prefixed = {
        (acl.resource_pattern.resource_name, acl.operation.name) for acl in run.granted
        if acl.resource_pattern.pattern_type is ACLResourcePatternType.PREFIXED
    }
    assert worker_prefixed == {(f"{APP_ID}-", op) for op in ("CREATE", "DESCRIBE", "READ",
                                                              "WRITE")}


def test_producer_publishes_with_scram_over_tls(
    run: SecureRun, stream_dataset: tuple[Path, list[dict[str, Any]]]
) -> None:
    stats = orjson.loads(run.produce.stdout)
    assert stats["sent"] == len(stream_dataset[1])
    assert stats["failed"] == 0 and stats["rejected"] == 0


def test_worker_decides_and_signals_equal_replay(
    run: SecureRun, stream_dataset: tuple[Path, list[dict[str, Any]]]
) -> None:
    _, expected = stream_dataset
    want = [(d["signal_id"], d["action"], d["event_id"]) for d in expected if d["signal_id"]]
    assert want, "the dataset must raise signals"
    got = [orjson.loads(r.value) for r in run.response_records]
    assert [(s["signal_id"], s["action"], s["event_id"]) for s in got] == want
    assert run.worker_exit == 0, run.worker_log
    assert "AuthorizationFailed" not in run.worker_log, run.worker_log


def test_worker_dead_letters_with_its_credentials(run: SecureRun) -> None:
    (record,) = run.dead
    assert orjson.loads(record.value)["reason"] == "missing_entity"


def test_revocation_consumer_handles_every_signal(
    run: SecureRun, stream_dataset: tuple[Path, list[dict[str, Any]]]
) -> None:
    assert run.responses.returncode == 0, run.responses.stderr
    want = [d["signal_id"] for d in stream_dataset[1] if d["signal_id"]]
    assert [s["signal_id"] for s in run.handled] == want


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("command", "user"),
    [
        (["produce", "--generate", "--users", "2"], "detector-producer"),
        (["responses", "--idle-timeout", "1", "--allow-unsigned"], "detector-responses"),
        (["worker", "--store", "memory://", "--web-port", "0"], "detector-worker"),
    ],
)
def test_wrong_password_is_refused_clearly(
    secure: SecureBroker, command: list[str], user: str
) -> None:
    wrong = secure.passwords[user][::-1] + "x"
    done = _detector(*command, env=_env(secure, user, password=wrong))
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"detector {command[0]}: error: authentication failed at "), last
    assert f"the broker refused user '{user}' with SCRAM-SHA-512" in last
    assert "invalid credentials" in last
    assert wrong not in done.stderr and secure.passwords[user] not in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("which", ["other CA", "system CAs"])
def test_untrusted_broker_certificate_is_refused_clearly(
    secure: SecureBroker, which: str
) -> None:
    env = _env(secure, "detector-producer", cafile=secure.pki.other_ca)
    if which == "system CAs":
        del env["DETECTOR_SSL_CAFILE"]
    done = _detector("produce", "--generate", "--users", "2", env=env)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"detector produce: error: TLS: the certificate of the broker at {secure.bootstrap} "
        "is not trusted (self-signed certificate in certificate chain"
    ), last
    trusted = str(secure.pki.other_ca) if which == "other CA" else "the system's CAs"
    assert f"trusted: {trusted})" in last and "--ssl-cafile" in last
    assert "Traceback" not in done.stderr


def test_plaintext_client_cannot_talk_to_the_tls_listener(secure: SecureBroker) -> None:
    env = {**os.environ, "DETECTOR_BOOTSTRAP_SERVERS": secure.bootstrap}
    done = _detector("produce", "--generate", "--users", "2", env=env)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"detector produce: error: cannot reach Kafka at {secure.bootstrap}")
    assert "security protocol PLAINTEXT" in last


def test_producer_cannot_forge_signals(secure: SecureBroker) -> None:
    producer = KafkaProducer(acks="all", retries=0, max_block_ms=30_000,
                             **secure.kafka_python("detector-producer"))
    try:
        with pytest.raises(KafkaError) as info:
            producer.send(RESPONSES, value=b'{"action":"revoke"}').get(timeout=30)
    finally:
        producer.close(10)
    assert isinstance(info.value, TopicAuthorizationFailedError), repr(info.value)
