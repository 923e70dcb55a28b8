"""Streaming settings: one frozen object per process, built in the entry point.

Every setting comes from a command-line flag or a ``DETECTOR_*`` environment
variable (the flag wins). Nothing else reads the environment: the CLI builds
a :class:`WorkerSettings` (or :class:`KafkaConnection`) once and passes it
down explicitly.

Secrets (``sasl_password``, ``signing_key``) never appear in ``repr`` or logs.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from detector.gctune import DEFAULT_THRESHOLD, format_threshold, parse_threshold
from detector.sets import DEFAULT_AUDIENCE, DEFAULT_ISSUER

ENV_PREFIX: Final = "DETECTOR_"

DEFAULT_AUTH_TOPIC: Final = "zt.auth"
DEFAULT_NETWORK_TOPIC: Final = "zt.network"
DEFAULT_RESPONSE_TOPIC: Final = "zt.responses"
DEFAULT_DLQ_TOPIC: Final = "zt.deadletter"


class SecurityProtocol(StrEnum):
    """Kafka security protocols (the names Kafka clients use)."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    """SASL mechanisms supported with a username and password."""

    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """How to reach and authenticate to the brokers.

    Examples
    --------
    >>> c = KafkaConnection.from_env({"DETECTOR_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
    ...                               "DETECTOR_SASL_PASSWORD": "s3cret"})
    >>> c.servers
    ('k1:9092', 'k2:9092')
    >>> "s3cret" in repr(c)
    False
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism = SaslMechanism.PLAIN
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "security_protocol", SecurityProtocol(self.security_protocol))
        object.__setattr__(self, "sasl_mechanism", SaslMechanism(self.sasl_mechanism))
        if not self.servers:
            raise ValueError("bootstrap servers must not be empty")
        if self.uses_sasl and (not self.sasl_username or self.sasl_password is None):
            raise ValueError(f"{self.security_protocol} needs a SASL username and password")
        if self.ssl_cafile is not None:
            object.__setattr__(self, "ssl_cafile", Path(self.ssl_cafile))
            if not self.uses_ssl:
                # A CA file means "I expect TLS": connecting in the clear
                # instead would silently drop the encryption the operator asked for.
                raise ValueError(
                    f"a CA file is set but security protocol {self.security_protocol} "
                    "does not use TLS (use SSL or SASL_SSL)"
                )
            if not self.ssl_cafile.is_file():
                raise ValueError(f"CA file not found: {self.ssl_cafile}")

    @property
    def servers(self) -> tuple[str, ...]:
        """Return the bootstrap servers as ``host:port`` strings."""
        return tuple(s.strip() for s in self.bootstrap_servers.split(",") if s.strip())

    @property
    def uses_sasl(self) -> bool:
        """Return True for the SASL protocols."""
        return self.security_protocol in (
            SecurityProtocol.SASL_PLAINTEXT,
            SecurityProtocol.SASL_SSL,
        )

    @property
    def uses_ssl(self) -> bool:
        """Return True for the TLS protocols."""
        return self.security_protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)

    def ssl_context(self) -> ssl.SSLContext | None:
        """Return a verifying TLS context, or None without TLS.

        The context trusts the CA file when one is set, else the system's CAs;
        it checks the broker's certificate and host name (``create_default_context``:
        TLS 1.2 or later). Every client (kafka-python, aiokafka, Faust) gets a
        context from here, so they all apply the same policy.

        Raises ``ValueError`` when the CA file holds no usable certificate.
        """
        if not self.uses_ssl:
            return None
        cafile = str(self.ssl_cafile) if self.ssl_cafile is not None else None
        try:
            return ssl.create_default_context(cafile=cafile)
        except ssl.SSLError as exc:
            raise ValueError(
                f"CA file {self.ssl_cafile}: no usable PEM certificate ({exc.reason or exc})"
            ) from None

    def _sasl_config(self) -> dict[str, Any]:
        if not self.uses_sasl:
            return {}
        return {
            "sasl_mechanism": self.sasl_mechanism.value,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password,
        }

    def kafka_python_config(self) -> dict[str, Any]:
        """Return the connection keyword arguments for kafka-python clients."""
        cfg: dict[str, Any] = {
            "bootstrap_servers": list(self.servers),
            "security_protocol": self.security_protocol.value,
            **self._sasl_config(),
        }
        if self.uses_ssl:
            cfg["ssl_context"] = self.ssl_context()
        return cfg

    def aiokafka_config(self) -> dict[str, Any]:
        """Return the connection keyword arguments for aiokafka clients.

        The same keys serve ``aiokafka.conn.create_conn``, minus
        ``bootstrap_servers`` (it takes one host and port).
        """
        return {
            "bootstrap_servers": ",".join(self.servers),
            "security_protocol": self.security_protocol.value,
            "ssl_context": self.ssl_context(),
            **self._sasl_config(),
        }

    def faust_brokers(self) -> list[str]:
        """Return the broker URLs in Faust's form (``kafka://host:port``)."""
        return [f"kafka://{s}" for s in self.servers]

    def faust_credentials(self) -> Any:
        """Return Faust ``broker_credentials`` (None for PLAINTEXT)."""
        import faust

        # Faust derives the protocol from the credentials' type: SASL_SSL for
        # SASLCredentials with an ssl_context, SASL_PLAINTEXT without one.
        if self.uses_sasl:
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password,
                ssl_context=self.ssl_context(),
                mechanism=self.sasl_mechanism.value,
            )
        context = self.ssl_context()
        if context is not None:
            return faust.SSLCredentials(context)
        return None

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> KafkaConnection:
        """Build from ``DETECTOR_*`` variables; non-None ``overrides`` win."""
        built: KafkaConnection = _build(cls, env, overrides)
        return built


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Everything one ``detector worker`` process needs.

    Examples
    --------
    >>> s = WorkerSettings.from_env({"DETECTOR_INPUT_TOPICS": "a,b", "DETECTOR_PARTITIONS": "4"},
    ...                             model_dir="models/default")
    >>> s.input_topics, s.partitions, s.internal_topic("by-ip")
    (('a', 'b'), 4, 'zt-detector-by-ip')
    """

    model_dir: Path
    kafka: KafkaConnection = field(default_factory=KafkaConnection)
    #: Faust app id: the consumer group and the prefix of internal topics.
    app_id: str = "zt-detector"
    input_topics: tuple[str, ...] = (DEFAULT_AUTH_TOPIC, DEFAULT_NETWORK_TOPIC)
    response_topic: str = DEFAULT_RESPONSE_TOPIC
    dlq_topic: str = DEFAULT_DLQ_TOPIC
    #: Optional audit topic with every decision (allow included); off by default.
    decisions_topic: str | None = None
    #: Partitions of the internal repartition topics and table changelogs.
    #: Fixed for the life of a deployment: changing it re-keys the state.
    partitions: int = 8
    replication_factor: int = 1
    state_dir: Path = Path("state")
    #: ``rocksdb://`` (production default) or ``memory://`` (tests).
    store: str = "rocksdb://"
    #: Micro-batch bounds: at most ``batch_max`` events, waiting at most
    #: ``batch_within_s`` after a batch's first event for it to fill.
    batch_max: int = 500
    batch_within_s: float = 0.2
    web_host: str = "0.0.0.0"  # noqa: S104  (the metrics port must be scrapeable)
    web_port: int = 6066
    #: Seconds between checks of the model directory for a new model; 0 = off
    #: (SIGHUP always triggers a reload).
    model_poll_s: float = 10.0
    #: Offset commit interval; outputs are flushed before every commit.
    commit_interval_s: float = 2.0
    log_level: str = "INFO"
    #: How long a consumer fetch waits for data. Each of the four hops can
    #: wait this long for a partition whose previous data was still buffered
    #: when the fetch was sent (Faust's driver hard-codes 1,500 ms).
    fetch_max_wait_ms: int = 50
    #: The least data (bytes) the broker gathers before it answers an input
    #: fetch of the direct ingest, unless ``fetch_max_wait_ms`` passes
    #: first. 1 answers as soon as any record is there: on a live feed many
    #: small fetches, each decoded in Python. Larger values make fewer,
    #: fuller fetches (less CPU per event) for up to ``fetch_max_wait_ms``
    #: more latency when the feed is slow.
    fetch_min_bytes: int = 1
    #: How long the producer retries a send by itself (aiokafka's
    #: ``request_timeout_ms``: batch expiry, metadata and buffer waits).
    #: After it the batch resends the failed outputs itself, with backoff,
    #: for as long as the failure is retriable (back-pressure, counted in
    #: ``detector_delivery_retries_total``); so this bounds how soon an
    #: unavailable output topic shows in the metrics and logs, not how long
    #: it may be down. (Faust's own default is 1,200,000: 20 minutes.)
    producer_request_timeout_ms: int = 30_000
    #: Events timed more than this many seconds after their Kafka record's
    #: timestamp are rejected (``bad_time``); 0 = no bound. Set the input
    #: topics' ``message.timestamp.type=LogAppendTime`` so the bound is the
    #: broker's clock, not the producer's.
    max_future_skew_s: float = 300.0
    #: A micro-batch is handed on as soon as no event arrived for this many
    #: seconds (the stream is drained), so an idle worker holds an event
    #: about this long per stage instead of up to ``batch_within_s``.
    #: 0 = Faust's fixed window (a batch waits ``batch_within_s`` since the
    #: previous one unless it fills).
    batch_idle_s: float = 0.005
    #: How the input topics are read: ``direct`` (a plain aiokafka consumer
    #: in micro-batches, group ``<app_id>-ingest``: detector.stream.ingest)
    #: or ``faust`` (a Faust agent, one message at a time through Faust's
    #: stream machinery, ~25x the CPU per event).
    ingest: str = "direct"
    #: How the stateful stages run: ``fused`` (default), in process, right
    #: after the parse stage of the same batch, whenever this worker owns
    #: every partition of the three stages (a single worker) and their
    #: internal topics are drained, else staged; ``staged``, always as Faust
    #: agents reached through their internal topics (docs/streaming.md,
    #: "Fused stages"). With ``ingest`` ``faust`` they are always staged.
    topology: str = "fused"
    #: Where Faust's consumer (the internal topics and changelogs) runs:
    #: ``loop`` (default), as tasks on the worker's event loop, or
    #: ``thread``, Faust's own consumer thread with its own event loop, which
    #: costs a cross-thread hand-off per fetch and per call and GIL switches
    #: between the two threads (detector.stream.transport).
    faust_consumer: str = "loop"
    #: When the stateful stages write their changed states to their tables
    #: (and changelogs): ``commit`` (default), each changed key once, with
    #: its latest state, before every offset commit and partition revocation;
    #: ``batch``, every changed key after every batch. Both write a state only
    #: after the outputs computed with it were delivered and before any offset
    #: of its events is committed (docs/streaming.md, "State").
    state_writes: str = "commit"
    #: How keyed outputs (decisions, signals, dead letters) reach the
    #: producer: ``partition`` (default), a stage batch's records for one
    #: partition appended to one producer batch (detector.stream.batches);
    #: ``record``, one producer ``send`` per record.
    output_sends: str = "partition"
    #: How changed states reach a table's changelog: ``partition``
    #: (default), each state written to the table's store and all of one
    #: write's records for a changelog partition in one producer batch,
    #: delivered like any output; ``table``, Faust's Table API, one
    #: ``send_soon`` per key.
    changelog_sends: str = "partition"
    #: The cyclic garbage collector's thresholds for the worker process
    #: (detector.gctune): ``python`` keeps the interpreter's 700,10,10,
    #: under which full passes over every held state took about a fifth of
    #: the worker's CPU.
    gc_threshold: str = format_threshold(DEFAULT_THRESHOLD)
    #: RocksDB memory per table partition (each is its own database: 3
    #: tables x ``partitions``): the write buffer size (MB, up to 3 buffers
    #: each) and the block cache (MB). The defaults are faust's own (64 and
    #: 2048). A memtable holds every version written since its last flush,
    #: so a busy worker's RSS grows towards 3 x partitions x the write
    #: buffer before it levels off (docs/streaming.md, "State").
    rocksdb_write_buffer_mb: int = 64
    rocksdb_block_cache_mb: int = 2048
    #: One RocksDB memory budget (MB) for every table partition of the
    #: worker (detector.stream.store): one shared block cache, with the
    #: memtables and the index and filter blocks charged to it, whatever the
    #: number of partitions. 0 keeps faust's store, one cache of
    #: ``rocksdb_block_cache_mb`` per table partition; when set, that flag
    #: is not used.
    rocksdb_memory_mb: int = 512
    #: Signal signing (docs/signals.md): a PEM EC P-256 private key, from a
    #: file or from the value of DETECTOR_SIGNING_KEY (never in repr or
    #: logs). Without either, signals go out unsigned and verifying
    #: consumers refuse them.
    signing_key_file: Path | None = None
    signing_key: str | None = field(default=None, repr=False)
    #: ``kid`` of the signing key; default: its RFC 7638 JWK thumbprint.
    signing_kid: str | None = None
    #: The SET ``iss`` and ``aud`` claims.
    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_AUDIENCE

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_dir", Path(self.model_dir))
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        if isinstance(self.input_topics, str):
            object.__setattr__(self, "input_topics", _split(self.input_topics))
        topics = tuple(dict.fromkeys(self.input_topics))  # dedupe, keep order
        object.__setattr__(self, "input_topics", topics)
        if not topics:
            raise ValueError("at least one input topic is required")
        outputs = {self.response_topic, self.dlq_topic, self.decisions_topic}
        if outputs & set(topics):
            raise ValueError("input topics must differ from the response/DLQ/decision topics")
        if self.partitions < 1 or self.replication_factor < 1:
            raise ValueError("partitions and replication factor must be >= 1")
        if self.batch_max < 1 or self.batch_within_s <= 0:
            raise ValueError("batch_max must be >= 1 and batch_within_s > 0")
        if self.batch_idle_s < 0:
            raise ValueError("batch_idle_s must be >= 0 (0 = Faust's fixed window)")
        if self.ingest not in ("direct", "faust"):
            raise ValueError("ingest must be direct or faust")
        if self.topology not in ("staged", "fused"):
            raise ValueError("topology must be staged or fused")
        if self.faust_consumer not in ("loop", "thread"):
            raise ValueError("faust_consumer must be loop or thread")
        if self.state_writes not in ("commit", "batch"):
            raise ValueError("state_writes must be commit or batch")
        if self.output_sends not in ("partition", "record"):
            raise ValueError("output_sends must be partition or record")
        if self.changelog_sends not in ("partition", "table"):
            raise ValueError("changelog_sends must be partition or table")
        parse_threshold(self.gc_threshold)  # raises ValueError with the reason
        if not 1 <= self.rocksdb_write_buffer_mb <= 1024:
            raise ValueError("rocksdb_write_buffer_mb must be in 1..1024")
        if not 1 <= self.rocksdb_block_cache_mb <= 65536:
            raise ValueError("rocksdb_block_cache_mb must be in 1..65536")
        if not (self.rocksdb_memory_mb == 0 or 16 <= self.rocksdb_memory_mb <= 65536):
            raise ValueError("rocksdb_memory_mb must be 0 (off) or in 16..65536")
        if self.store not in ("rocksdb://", "memory://"):
            raise ValueError("store must be rocksdb:// or memory://")
        if not 0 <= self.web_port < 65536:
            raise ValueError("web_port must be a TCP port")
        if self.model_poll_s < 0 or self.commit_interval_s <= 0:
            raise ValueError("model_poll_s must be >= 0 and commit_interval_s > 0")
        if self.max_future_skew_s < 0:
            raise ValueError("max_future_skew_s must be >= 0 (0 = no bound)")
        if not 1 <= self.fetch_max_wait_ms <= 60_000:
            raise ValueError("fetch_max_wait_ms must be in 1..60000")
        if not 1 <= self.fetch_min_bytes <= 50 * 1024 * 1024:
            raise ValueError("fetch_min_bytes must be in 1..52428800")
        if not 1_000 <= self.producer_request_timeout_ms <= 3_600_000:
            raise ValueError("producer_request_timeout_ms must be in 1000..3600000")
        self._check_signing()

    def _check_signing(self) -> None:
        if self.signing_key == "":
            object.__setattr__(self, "signing_key", None)
        if self.signing_key_file is not None:
            object.__setattr__(self, "signing_key_file", Path(self.signing_key_file))
            if self.signing_key is not None:
                raise ValueError("give the signing key as a file or in DETECTOR_SIGNING_KEY, "
                                 "not both")
            if not self.signing_key_file.is_file():
                raise ValueError(f"signing key file not found: {self.signing_key_file}")
        if not self.issuer or not self.audience:
            raise ValueError("issuer and audience must not be empty")

    @property
    def signs(self) -> bool:
        """Return True when a signing key is configured."""
        return self.signing_key_file is not None or self.signing_key is not None

    def internal_topic(self, name: str) -> str:
        """Return the name of an internal (repartition) topic of this app."""
        return f"{self.app_id}-{name}"

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> WorkerSettings:
        """Build from ``DETECTOR_*`` variables; non-None ``overrides`` win.

        Connection settings (``bootstrap_servers``, ``security_protocol``...)
        may be given in ``overrides`` too; they build the ``kafka`` field.
        """
        conn_names = {f.name for f in fields(KafkaConnection)}
        conn = {k: overrides.pop(k) for k in list(overrides) if k in conn_names}
        kafka = KafkaConnection.from_env(env, **conn)
        built: WorkerSettings = _build(cls, env, {**overrides, "kafka": kafka})
        return built


def _convert(cls: type, name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(cls)}[name]
    kind = str(kind)
    if kind.startswith("int"):
        return int(raw)
    if kind.startswith("float"):
        return float(raw)
    if kind.startswith("tuple"):
        return _split(raw)
    if kind.startswith("Path"):
        return Path(raw)
    if raw == "" and "None" in kind:
        return None
    return raw


def _build(cls: type, env: Mapping[str, str], overrides: Mapping[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is not None and f.name != "kafka":
            try:
                kwargs[f.name] = _convert(cls, f.name, raw)
            except ValueError as exc:
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}: {exc}") from None
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def with_overrides(settings: WorkerSettings, **changes: Any) -> WorkerSettings:
    """Return a copy of ``settings`` with the non-None ``changes`` applied."""
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})
