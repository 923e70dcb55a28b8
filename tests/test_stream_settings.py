"""Worker settings from the environment and flags: precedence, validation, secrets."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest

from detector.stream.settings import KafkaConnection, SecurityProtocol, WorkerSettings
from tests.integration.tls import make_test_pki


def test_flags_override_environment() -> None:
    env = {"DETECTOR_BOOTSTRAP_SERVERS": "env:9092", "DETECTOR_PARTITIONS": "12",
           "DETECTOR_INPUT_TOPICS": "a, b,a", "DETECTOR_BATCH_WITHIN_S": "0.5"}
    s = WorkerSettings.from_env(env, model_dir="m", bootstrap_servers="flag:9092",
                                partitions=None, batch_max=64)
    assert s.kafka.servers == ("flag:9092",)
    assert (s.partitions, s.batch_max, s.batch_within_s) == (12, 64, 0.5)
    assert s.input_topics == ("a", "b")
    assert s.model_dir == Path("m")


def test_fetch_min_bytes_default_environment_and_ingest_consumer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from detector.stream import ingest

    assert WorkerSettings(model_dir="m").fetch_min_bytes == 1  # answer at once
    s = WorkerSettings.from_env({"DETECTOR_FETCH_MIN_BYTES": "32768"}, model_dir="m")
    assert s.fetch_min_bytes == 32768
    made: dict[str, object] = {}

    class Consumer:
        def __init__(self, **kwargs: object) -> None:
            made.update(kwargs)
            raise RuntimeError("built")  # the settings are what this test reads

    monkeypatch.setattr(ingest, "AIOKafkaConsumer", Consumer)
    monkeypatch.setattr(ingest, "adopt_offsets", lambda settings: {})

    async def join() -> None:
        direct = ingest.DirectIngest(s, parse=None, complete=None,  # type: ignore[arg-type]
                                     on_revoked=lambda: None, fail_stop=None,  # type: ignore[arg-type]
                                     app_stopping=lambda: False)
        with pytest.raises(RuntimeError, match="built"):
            await direct._join()

    asyncio.run(join())
    assert made["fetch_min_bytes"] == 32768 and made["fetch_max_wait_ms"] == s.fetch_max_wait_ms


def test_batch_idle_from_environment_and_off() -> None:
    assert WorkerSettings(model_dir="m").batch_idle_s > 0  # drained batches by default
    s = WorkerSettings.from_env({"DETECTOR_BATCH_IDLE_S": "0"}, model_dir="m")
    assert s.batch_idle_s == 0.0  # Faust's fixed window


@pytest.mark.parametrize(
    ("field", "default", "from_env", "flag"),
    [
        ("ingest", "direct", "faust", "direct"),
        ("topology", "fused", "staged", "fused"),
        ("faust_consumer", "loop", "thread", "loop"),
        ("state_writes", "commit", "batch", "commit"),
        ("output_sends", "partition", "record", "partition"),
        ("changelog_sends", "partition", "table", "partition"),
        ("gc_threshold", "1000000,50,50", "python", "20000,20,20"),
        ("rocksdb_write_buffer_mb", 64, 4, 16),
        ("rocksdb_block_cache_mb", 2048, 32, 256),
        ("rocksdb_memory_mb", 512, 0, 64),
    ],
)
def test_choice_settings_default_then_environment_then_flag(
    field: str, default: object, from_env: object, flag: object
) -> None:
    assert getattr(WorkerSettings(model_dir="m"), field) == default
    env = {f"DETECTOR_{field.upper()}": str(from_env)}
    assert getattr(WorkerSettings.from_env(env, model_dir="m"), field) == from_env
    s = WorkerSettings.from_env(env, model_dir="m", **{field: flag})
    assert getattr(s, field) == flag  # the flag wins


def test_empty_decisions_topic_means_off() -> None:
    s = WorkerSettings.from_env({"DETECTOR_DECISIONS_TOPIC": ""}, model_dir="m")
    assert s.decisions_topic is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DETECTOR_PARTITIONS": "x"}, "DETECTOR_PARTITIONS"),
        ({"DETECTOR_PARTITIONS": "0"}, "partitions"),
        ({"DETECTOR_STORE": "redis://"}, "store"),
        ({"DETECTOR_SECURITY_PROTOCOL": "SASL_SSL"}, "SASL username and password"),
        ({"DETECTOR_SECURITY_PROTOCOL": "TLS"}, "TLS"),
        ({"DETECTOR_INPUT_TOPICS": "zt.responses"}, "input topics must differ"),
        ({"DETECTOR_SSL_CAFILE": "/nonexistent/ca.pem"}, "CA file"),
        ({"DETECTOR_BOOTSTRAP_SERVERS": " , "}, "bootstrap"),
        ({"DETECTOR_BATCH_IDLE_S": "-0.001"}, "batch_idle_s"),
        ({"DETECTOR_INGEST": "kafka"}, "ingest must be direct or faust"),
        ({"DETECTOR_TOPOLOGY": "merged"}, "topology must be staged or fused"),
        ({"DETECTOR_FAUST_CONSUMER": "process"}, "faust_consumer must be loop or thread"),
        ({"DETECTOR_STATE_WRITES": "never"}, "state_writes must be commit or batch"),
        ({"DETECTOR_OUTPUT_SENDS": "topic"}, "output_sends must be partition or record"),
        ({"DETECTOR_CHANGELOG_SENDS": "faust"}, "changelog_sends must be partition or table"),
        ({"DETECTOR_GC_THRESHOLD": "700,10"}, "gc threshold: expected"),
        ({"DETECTOR_GC_THRESHOLD": "0,10,10"}, "switch the collector off"),
        ({"DETECTOR_ROCKSDB_WRITE_BUFFER_MB": "0"}, "rocksdb_write_buffer_mb"),
        ({"DETECTOR_ROCKSDB_BLOCK_CACHE_MB": "100000"}, "rocksdb_block_cache_mb"),
        ({"DETECTOR_ROCKSDB_MEMORY_MB": "8"}, "rocksdb_memory_mb"),
        ({"DETECTOR_ROCKSDB_MEMORY_MB": "-1"}, "rocksdb_memory_mb"),
        ({"DETECTOR_FETCH_MIN_BYTES": "0"}, "fetch_min_bytes"),
        ({"DETECTOR_FETCH_MIN_BYTES": "60000000"}, "fetch_min_bytes"),
    ],
)
def test_invalid_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkerSettings.from_env(env, model_dir="m")


def test_sasl_ssl_client_configs_and_secret_hygiene(tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path)
    c = KafkaConnection.from_env(
        {"DETECTOR_SECURITY_PROTOCOL": "SASL_SSL", "DETECTOR_SASL_MECHANISM": "SCRAM-SHA-512",
         "DETECTOR_SASL_USERNAME": "det", "DETECTOR_SASL_PASSWORD": "pw-123",
         "DETECTOR_SSL_CAFILE": str(pki.ca)}
    )
    assert c.security_protocol is SecurityProtocol.SASL_SSL
    cfg = c.kafka_python_config()
    assert cfg["security_protocol"] == "SASL_SSL" and cfg["sasl_mechanism"] == "SCRAM-SHA-512"
    assert cfg["sasl_plain_username"] == "det"
    assert cfg["sasl_plain_password"] == "pw-123"  # noqa: S105 (a test value)
    # One verifying TLS context, trusting exactly the given CA, for every client.
    ctx = cfg["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
    subjects = [dict(x[0] for x in ca["subject"]) for ca in ctx.get_ca_certs()]
    assert subjects == [{"organizationName": "zt-detector tests",
                         "commonName": "zt-detector test CA"}]
    aio = c.aiokafka_config()
    assert aio["security_protocol"] == "SASL_SSL" and aio["sasl_mechanism"] == "SCRAM-SHA-512"
    assert isinstance(aio["ssl_context"], ssl.SSLContext)
    creds = c.faust_credentials()
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"
    assert "pw-123" not in repr(c) and "pw-123" not in repr(creds)
    assert c.faust_brokers() == ["kafka://127.0.0.1:9092"]


def test_ssl_without_sasl_uses_ssl_credentials(tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path)
    c = KafkaConnection(security_protocol=SecurityProtocol.SSL, ssl_cafile=pki.ca)
    assert isinstance(c.faust_credentials(), faust.SSLCredentials)
    assert "sasl_mechanism" not in c.kafka_python_config()


def test_ca_file_without_tls_is_refused(tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path)
    with pytest.raises(ValueError, match="does not use TLS"):
        KafkaConnection(ssl_cafile=pki.ca)


def test_unusable_ca_file_is_refused_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    c = KafkaConnection(security_protocol=SecurityProtocol.SSL, ssl_cafile=bad)
    with pytest.raises(ValueError, match="no usable PEM certificate"):
        c.kafka_python_config()


def test_plaintext_has_no_credentials() -> None:
    c = KafkaConnection()
    assert c.faust_credentials() is None
    assert "sasl_mechanism" not in c.kafka_python_config()


def test_signing_settings_from_environment_and_flags(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("pem")
    s = WorkerSettings.from_env(
        {"DETECTOR_SIGNING_KEY_FILE": "/nonexistent", "DETECTOR_ISSUER": "urn:env",
         "DETECTOR_SIGNING_KID": "k1"},
        model_dir="m", signing_key_file=key, audience="urn:idp",
    )
    assert s.signing_key_file == key and s.signs
    assert (s.signing_kid, s.issuer, s.audience) == ("k1", "urn:env", "urn:idp")
    assert not WorkerSettings(model_dir=Path("m")).signs


def test_signing_key_value_never_in_repr() -> None:
    s = WorkerSettings.from_env({"DETECTOR_SIGNING_KEY": "-----BEGIN PRIVATE KEY-----xyz"},
                                model_dir="m")
    assert s.signs and "xyz" not in repr(s) and "BEGIN" not in repr(s)
    assert not WorkerSettings.from_env({"DETECTOR_SIGNING_KEY": ""}, model_dir="m").signs


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DETECTOR_SIGNING_KEY_FILE": "/nonexistent/k.pem"}, "signing key file not found"),
        ({"DETECTOR_SIGNING_KEY_FILE": __file__, "DETECTOR_SIGNING_KEY": "pem"}, "not both"),
        ({"DETECTOR_ISSUER": ""}, "issuer and audience"),
    ],
)
def test_invalid_signing_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkerSettings.from_env(env, model_dir="m")


def test_ensure_topics_names_the_missing_acl_instead_of_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import kafka
    from kafka.errors import TopicAuthorizationFailedError

    from detector.stream.topics import ensure_topics

    class DeniedAdmin:
        def __init__(self, **kwargs: object) -> None:
            self.closed = False

        def list_topics(self) -> list[str]:
            raise TopicAuthorizationFailedError("denied")

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(kafka, "KafkaAdminClient", DeniedAdmin)
    settings = WorkerSettings(model_dir="models/default", app_id="zt-test")
    with pytest.raises(ValueError, match="refused the worker's principal.*'zt-test-'"):
        ensure_topics(settings)
