"""The Faust adapter: ``detector worker``. The only module that imports ``faust``.

Four stages, each a thin loop over :mod:`detector.stream.stages`; the parse
stage reads the input topics with a batched aiokafka consumer
(:mod:`detector.stream.ingest`, ``--ingest direct``) or, with ``--ingest
faust``, as a Faust agent; the others are Faust agents::

    parse    input topics (any key)   -> <app>-by-ip        rejects -> dead-letter topic
    ip       <app>-by-ip (IP)         -> <app>-by-session   table ip-context
    session  <app>-by-session (sid)   -> <app>-by-entity    table session-context
    entity   <app>-by-entity (entity) -> response topic     table baselines

A worker that owns every partition of the three stateful stages runs them in
process right after the parse of each input batch, on the same tables and
partitions, once their internal topics are drained (``--topology fused``, the
default: :meth:`_Pipeline._fusable`, :meth:`_Pipeline._fused`); otherwise,
or with ``--topology staged``, they run as the agents above.

Each agent consumes raw bytes in micro-batches (``stream.take_events``), so a
bad message can never crash it: rejects are dead-lettered with their reason,
source topic, partition and offset, and counted. An exception from the engine
is a bug: the batch is rerun one event at a time (``stages.run_isolated``) and
only the events that raise go to the dead-letter topic with reason
``engine_error:<ExceptionType>``, counted and logged with the traceback;
nothing is skipped silently.

Tables hold the versioned state dicts as JSON bytes and are written back
explicitly for every key a batch changed: by default once per key per offset
commit, with its latest state (:class:`_PendingStates`, ``--state-writes
commit``), or after every batch (``--state-writes batch``). Faust places a
table write in the changelog partition of the *current event*; a batch spans
partitions, so each read and write is bound to an event of its own key first
(:func:`_bind`). A write puts the states into the table's store and hands
their changelog records to the producer as one batch per changelog partition
(``--changelog-sends partition``), delivered like any output before the
commit goes ahead; ``--changelog-sends table`` keeps Faust's Table API.

Delivery is at least once: every output is delivered before the batch's
state is written back and before the batch is acked, and Faust flushes the
producer before it commits offsets. Learning is once: a redelivered event
already in its state is skipped (``stages.Applied``). An output topic that
is temporarily unavailable (a retriable error, or the producer's own timeout)
holds the batch: it resends the failed outputs with capped exponential
backoff until they are delivered (:meth:`_Outbox.delivered`, counted in
``detector_delivery_retries_total{topic}``), so its stage takes no further
batch and its input lag grows; nothing is dropped, and the backlog drains
when the topic returns (back-pressure). A batch whose outputs the broker
refuses for good (authorization, record too large, invalid topic, or any
other error) stops the process before any ack (:func:`_fail_stop`).
On SIGTERM Faust stops fetching, waits until every started batch is acked
(a batch in back-pressure included), commits, flushes and exits. Signals
carry a deterministic id, so a redelivered or resent signal is deduplicated
downstream.

The model is hot-reloaded without a restart: on SIGHUP, and when the model
directory's ``model.json`` changes (polled every ``model_poll_s``). The new
directory is fully verified first; a model that fails to load is refused and
the old one keeps running (``detector_model_reloads_total{result="failed"}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hashlib
import logging
import math
import os
import signal
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn, Protocol, TypeVar

import faust
import orjson
from aiokafka.errors import KafkaError, KafkaTimeoutError
from faust.exceptions import ProducerSendError
from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import PrometheusMonitor, setup_prometheus_sensors
from faust.streams import _current_event  # see _bind
from faust.types import TP, EventT

from detector.baseline import Baseline
from detector.context import IpContext, SessionContext
from detector.engine import Decision, Detector, keyed_decision_json
from detector.events import Event
from detector.gctune import apply_threshold, format_threshold, parse_threshold
from detector.model import load_model
from detector.stream import stages
from detector.stream.batches import KeyedBatches
from detector.stream.batching import take_drained
from detector.stream.ingest import DirectIngest
from detector.stream.metrics import GcPauses, OffsetMap, StreamMetrics
from detector.stream.settings import WorkerSettings
from detector.stream.signing import signal_encoder
from detector.stream.store import MEMORY_OPTION, STORE_SCHEME, SharedMemory
from detector.stream.store import Store as RocksStore
from detector.stream.topics import InternalBacklog, ensure_topics
from detector.stream.transport import TRANSPORT_SCHEME

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: Least time between two reads of the internal topics' backlog while a
#: worker that owns every stage partition waits for them to drain (s).
BACKLOG_CHECK_S: Final = 0.5
#: How often a batch waiting for a rebalance to end looks again (s).
REBALANCE_POLL_S: Final = 0.02
#: Exit code of a worker that stopped because a batch failed (EX_SOFTWARE).
FAIL_STOP_EXIT: Final = 70
#: A consumed message: raw bytes key and value.
RawEvent = EventT[bytes]
_RAW: Final[dict[str, Any]] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


class ModelHolder:
    """The current :class:`Detector`; replaced atomically between batches.

    Each batch reads :attr:`detector` once, so a reload never changes the
    model in the middle of a batch.
    """

    def __init__(self, model_dir: Path, metrics: StreamMetrics) -> None:
        self.model_dir = Path(model_dir)
        self.metrics = metrics
        self.fingerprint = self._fingerprint()
        self.detector = Detector(load_model(self.model_dir))
        metrics.set_model(self.version)

    @property
    def version(self) -> str:
        """Return the loaded model's version."""
        return self.detector.model.version

    def _fingerprint(self) -> str:
        # model.json holds the sha256 of every other artifact, so its own hash
        # identifies the whole model directory.
        return hashlib.sha256((self.model_dir / "model.json").read_bytes()).hexdigest()

    def reload(self, force: bool = False) -> str:
        """Load the model directory again if it changed; return the result label.

        Blocking (file I/O and verification): run it in an executor.
        """
        try:
            fingerprint = self._fingerprint()
            if fingerprint == self.fingerprint and not force:
                return "unchanged"
            detector = Detector(load_model(self.model_dir))
        except (OSError, ValueError) as exc:
            logger.error("model reload refused dir=%s error=%s", self.model_dir, exc)
            self.metrics.model_reloads.labels(result="failed").inc()
            return "failed"
        old = self.version
        self.detector, self.fingerprint = detector, fingerprint
        self.metrics.set_model(self.version)
        self.metrics.model_reloads.labels(result="loaded").inc()
        logger.info("model reloaded old_version=%s new_version=%s", old, self.version)
        return "loaded"


class _BoundMessage:
    """The two fields of a message that Faust's tables read from the current event."""

    __slots__ = ("topic", "partition")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition


class _KeyBinding:
    """A stand-in current event for table access outside its stage's stream.

    The fused stages (``--topology fused``) read and write a stage's table
    for events that never crossed its internal topic. Bound to this, a key
    lands in the very partition its stage would have received it on (the
    internal topic's partition of the key): the same store and changelog
    partition as when staged, so a worker can switch between the two.
    """

    __slots__ = ("message", "__weakref__")

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _BoundMessage(topic, partition)


#: What a table key is bound to: an event of the key from the stage's stream,
#: or a stand-in for its partition (fused stages).
_Bound = RawEvent | _KeyBinding


def _bind(event: _Bound) -> None:
    """Make ``event`` Faust's current event in this task.

    Faust's tables read and write in the partition of the current event;
    inside a ``take`` batch that would be whichever event arrived last. Binding
    an event of the same key (hence the same partition) before each table
    access keeps every key in its own changelog partition. (There is no public
    API for this; ``_current_event`` is the context variable Faust itself sets.)
    Faust reads only ``message.topic`` and ``message.partition`` of it, which
    is all a :class:`_KeyBinding` has.
    """
    _current_event.set(weakref.ref(event))  # type: ignore[arg-type]  # see _KeyBinding


def _raw_rocks(table: Any) -> RocksStore | None:
    """Return ``table``'s store if it is our RocksDB store of raw bytes, else None.

    Such a store stores and returns a table's bytes as they are
    (``Store.writes_raw_batches``), so the worker reads it with ``_get`` and
    writes it with ``put_many``.
    """
    store = table.data
    return store if isinstance(store, RocksStore) and store.writes_raw_batches() else None


def _record_ms(event: RawEvent) -> int | None:
    """Return the Kafka record timestamp of ``event`` in epoch ms (None if unknown)."""
    ts = event.message.timestamp  # Faust gives seconds (float)
    return int(ts * 1000) if ts else None


def _source(event: RawEvent) -> stages.Source:
    m = event.message
    return stages.Source(m.topic, m.partition, m.offset)


#: Most keys one stage holds between commits. A Rust-held baseline is ~3.8 KB
#: and a decoded Python one (the pure-Python engine's) ~18 KB (BENCHMARKS.md,
#: memory), so this bounds a stage's held states to ~38 MB (~180 MB)
#: however many keys change within a commit interval; at the bound the stage
#: writes them out early, which is what ``--state-writes batch`` always does.
PENDING_STATES_MAX: Final = 10_000
#: Most keys written per step of a background state write
#: (``begin_fused_flush``): a step encodes, stores and hands its keys to the
#: producer while batches wait. A step also ends once its encoding took
#: :data:`SNAPSHOT_STEP_S`: a Rust-held baseline takes ~150 µs to encode, a
#: session context a few, and the store ~30 µs per key, so a step holds the
#: batches up for at most ~8 ms whatever the table.
SNAPSHOT_CHUNK: Final = 100
#: Encoding time after which a step of a background state write ends (s).
SNAPSHOT_STEP_S: Final = 0.005


class _PendingStates:
    """The states one stage changed since the last offset commit, not yet in its table.

    With ``--state-writes commit`` (the default) a batch's changed states wait
    here instead of being written to the table one changelog record per key
    per batch: the next batch of a key reads its state from here (no decode),
    and :meth:`flush` writes each key once, with its latest state, before
    Faust commits the input offsets (``_Consumer._commit_offsets``) and when
    partitions are revoked. A key's changelog record thus always precedes the
    commit of any offset whose event it holds, so at-least-once and the
    applied logs' "already in the state implies its outputs are out" hold as
    with a write per batch; a crash loses only state whose events were not
    committed, and those are delivered again. With ``--state-writes batch``
    the stage flushes right after each batch instead.
    """

    __slots__ = ("table", "limit", "lock", "_values", "_writing", "_clean")

    def __init__(self, table: Any, limit: int = PENDING_STATES_MAX) -> None:
        self.table = table
        self.limit = limit
        #: Held while states are on their way to the table: one write at a
        #: time per table, so a key's changelog records keep their order
        #: even when one write's delivery is retried.
        self.lock = asyncio.Lock()
        self._values: dict[str, tuple[Any, stages.Applied | None, _Bound]] = {}
        #: A snapshot on its way to the table in the background
        #: (:meth:`snapshot`); still read by :meth:`take` until written.
        self._writing: dict[str, tuple[Any, stages.Applied | None, _Bound]] = {}
        #: States this worker last wrote to the table, decoded: equal to what
        #: the store holds, they spare the next batches of their keys a read
        #: and a decode. At most ``limit`` keys; forgotten when partitions
        #: move (:meth:`forget_written`), when the store may change under them.
        self._clean: dict[str, tuple[Any, stages.Applied | None, _Bound]] = {}

    def __len__(self) -> int:
        return len(self._values)

    @property
    def full(self) -> bool:
        """Whether as many keys are held as the memory bound allows (flush now)."""
        return len(self._values) >= self.limit

    def take(self, keys: Iterable[str], applied: dict[str, stages.Applied] | None
             ) -> dict[str, Any]:
        """Return the pending state of each of ``keys`` that has one.

        Copies each one's applied log into ``applied``: the batch updates its
        logs in place, and a batch that fails must leave these untouched.
        """
        held: dict[str, Any] = {}
        values, writing, clean = self._values, self._writing, self._clean
        for key in keys:
            entry = values.get(key)
            if entry is None:
                entry = writing.get(key)
                if entry is None:
                    entry = clean.get(key)
                    if entry is None:
                        continue
            value, log, _ = entry
            held[key] = value
            if applied is not None and log is not None:
                applied[key] = stages.Applied(dict(log.offsets))
        return held

    def put(self, key: str, value: Any, log: stages.Applied | None, event: _Bound) -> None:
        """Hold ``value`` (and its applied log) as ``key``'s latest state."""
        self._values[key] = (value, log, event)

    def hold(self, changed: dict[str, Any], applied: dict[str, stages.Applied] | None,
             keyed: Mapping[str, _Bound]) -> bool:
        """Hold a batch's changed states; return whether the memory bound is reached."""
        values = self._values  # what put() does, without a call per key
        if applied is None:
            for key, value in changed.items():
                values[key] = (value, None, keyed[key])
        else:
            for key, value in changed.items():
                values[key] = (value, applied.get(key), keyed[key])
        return self.full

    def take_all(self) -> list[tuple[str, Any, stages.Applied | None, _Bound]]:
        """Return every pending state (key, state, applied log, an event of the key); forget them.

        From here on they are remembered as the store's values: the caller
        writes them all to the store before it awaits anything.
        """
        entries = [(key, value, log, event) for key, (value, log, event) in self._values.items()]
        self._remember(self._values)
        self._values = {}
        return entries

    def _remember(self, written: dict[str, tuple[Any, stages.Applied | None, _Bound]]) -> None:
        if len(self._clean) + len(written) > self.limit:
            self._clean = {}
        self._clean.update(written)

    def forget_written(self) -> None:
        """Forget the states remembered as the store's (partitions moved: it may change)."""
        self._clean = {}

    def snapshot(self) -> bool:
        """Set the held states aside to be written in the background; return whether any.

        Batches that follow hold their states anew; until the snapshot is
        written (:meth:`take_snapshot`, then :meth:`written`) :meth:`take`
        still reads it. Held values are never changed in place (a batch
        puts new ones), so the snapshot is the states as they were.
        """
        if self._writing:
            raise RuntimeError("a snapshot of this table's states is still being written")
        self._writing, self._values = self._values, {}
        return bool(self._writing)

    def take_snapshot(self) -> list[tuple[str, Any, stages.Applied | None, _Bound]]:
        """Return the snapshot's entries (key, state, applied log, an event of the key)."""
        return [(key, value, log, event) for key, (value, log, event) in self._writing.items()]

    def written(self) -> None:
        """Forget the snapshot: it is in the table's store and changelog (remembered as such)."""
        self._remember(self._writing)
        self._writing = {}

    def flush(self) -> int:
        """Write every pending state through the table (and its changelog); return how many.

        Faust's Table API: one changelog ``send_soon`` per key
        (``--changelog-sends table``).
        """
        table = self.table
        entries = self.take_all()
        for key, value, log, event in entries:
            _bind(event)  # the key's own changelog partition (see _bind)
            table[key.encode()] = stages.encode_state(value, log)
        return len(entries)


class _Pipeline:
    """The agents' bodies, with their topics, tables and metrics."""

    def __init__(
        self,
        app: faust.App,
        settings: WorkerSettings,
        holder: ModelHolder,
        metrics: StreamMetrics,
    ) -> None:
        self.app = app
        self.settings = settings
        self.holder = holder
        self.metrics = metrics
        self.encode_signal = signal_encoder(settings)  # signs when a key is configured
        n = settings.partitions
        self.by_ip = app.topic(
            settings.internal_topic("by-ip"), partitions=n, internal=True, **_RAW
        )
        self.by_session = app.topic(
            settings.internal_topic("by-session"), partitions=n, internal=True, **_RAW
        )
        self.by_entity = app.topic(
            settings.internal_topic("by-entity"), partitions=n, internal=True, **_RAW
        )
        # bytes key and value types make Faust use the raw codec for the
        # changelog (sends and recovery alike); values are our versioned JSON.
        table: dict[str, Any] = {"partitions": n, "key_type": bytes, "value_type": bytes}

        #: The RocksDB memory budget of every table partition (None: faust's store).
        self.rocksdb_memory: SharedMemory | None = None
        if _store_url(settings) == f"{STORE_SCHEME}://":
            self.rocksdb_memory = SharedMemory(settings.rocksdb_memory_mb * 1024 * 1024)
            metrics.add_rocksdb_memory(self.rocksdb_memory.usage)

        def options() -> dict[str, Any]:
            # One dict per table: faust's RocksDB store pops keys from it.
            if settings.store != "rocksdb://":
                return {}
            if self.rocksdb_memory is None:
                return {"options": rocksdb_options(settings)}
            # The app's store is then STORE_SCHEME (build_app).
            return {"options": {**rocksdb_options(settings), MEMORY_OPTION: self.rocksdb_memory}}

        self.ips = app.Table("ip-context", **table, **options())
        self.sessions = app.Table("session-context", **table, **options())
        self.baselines = app.Table("baselines", **table, **options())
        self.offsets: dict[str, stages.OffsetTracker] = {}
        # Changed states per table (see _PendingStates): held until the next
        # commit, or written out right after each batch (--state-writes batch).
        self.pending = {id(t): _PendingStates(t) for t in (self.ips, self.sessions, self.baselines)}
        self.write_per_batch = settings.state_writes == "batch"

        # --topology fused (see _fusable): the stages' partitions, the consumer
        # generation in which fusing was found safe, the next offset each
        # staged batch has finished per internal partition, and whether no
        # fused batch is running (a revocation waits for that, as Faust waits
        # for its agents' batches; the direct ingest runs one batch at a time).
        self.fuse = settings.topology == "fused" and settings.ingest == "direct"
        if settings.topology == "fused" and not self.fuse:
            logger.info("fused stages off reason=faust_ingest")
        self._internal = [(topic.get_topic_name(), p) for topic in
                          (self.by_ip, self.by_session, self.by_entity) for p in range(n)]
        self._bindings = {tp: _KeyBinding(*tp) for tp in self._internal}
        self._fused_generation: int | None = None
        self._fuse_off: str | None = None
        self._finished: dict[tuple[str, int], int] = {}
        self._backlog = InternalBacklog(settings)
        self._backlog_checked = -BACKLOG_CHECK_S
        self._agents_running = 0  # agent batches running or waiting (see _as_agent)
        self._fused_settled = asyncio.Event()
        self._fused_settled.set()
        self._fused_unflushed = False

    # ------------------------------------------------------------------ helpers
    def _outbox(self) -> _Outbox:
        """Return a new batch's outbox on the app's producer (``--output-sends``)."""
        batches = None
        if self.settings.output_sends == "partition":
            batches = KeyedBatches.of(self.app.producer)
        return _Outbox(self.app.producer, self.metrics, batches)

    def _dead_letter(self, out: _Outbox, dead: Sequence[stages.DeadLetter]) -> Awaitable[None]:
        for d in dead:
            self.metrics.rejects.labels(stage=d.stage, reason=d.reason).inc()
            logger.info(
                "dead letter stage=%s reason=%s topic=%s partition=%d offset=%d event_id=%s",
                d.stage, d.reason, d.source.topic, d.source.partition, d.source.offset,
                d.event_id,
            )
        return out.send(self.settings.dlq_topic, [(d.source.topic, d.to_bytes()) for d in dead])

    async def _engine_errors(
        self,
        out: _Outbox,
        stage: str,
        failures: Sequence[tuple[int, BaseException]],
        items: Sequence[stages.Routed],
    ) -> None:
        """Dead-letter the events the engine raised on (a bug: counted and logged)."""
        dead: list[stages.DeadLetter] = []
        for i, exc in failures:
            name = type(exc).__name__
            item = items[i]
            self.metrics.engine_errors.labels(stage=stage, error=name).inc()
            logger.error(
                "engine error stage=%s error=%s event_id=%s origin=%s:%d:%d",
                stage, name, item.event.event_id, item.origin.topic, item.origin.partition,
                item.origin.offset, exc_info=exc,
            )
            # The original input coordinates; past the parse stage the raw
            # input is not at hand, so the dead letter carries the routed record.
            dead.append(stages.DeadLetter(
                f"engine_error:{name}", name, stage, item.origin,
                stages.encode_records([item]), item.event.event_id,
            ))
        await self._dead_letter(out, dead)

    def _load(
        self,
        table: Any,
        name: str,
        keyed: Mapping[str, _Bound],
        decode: Callable[[Any], T],
        applied: dict[str, stages.Applied] | None = None,
    ) -> dict[str, T]:
        # What table.get(key) does, less its detour: Faust's Table reads a
        # key through `in` and then `[]` (two store reads) and a miss through
        # __missing__ and a KeyError; the store's own get reads once. On our
        # RocksDB store of raw values, its _get reads without the Mapping.get
        # detour, which raised and caught a KeyError per missing key (most
        # new session keys). The table's sensor hook is kept.
        store, on_get = table.data, table.on_key_get
        raw_store = _raw_rocks(table)
        read: Callable[[bytes], bytes | None] = (
            raw_store._get if raw_store is not None else store.get)

        def get(key: str) -> bytes | None:
            _bind(keyed[key])
            raw = key.encode()
            on_get(raw)
            return read(raw)

        held = self.pending[id(table)].take(keyed, applied)
        states, bad = stages.load_states(
            [k for k in keyed if k not in held] if held else keyed, get, decode, applied
        )
        if held:
            states.update(held)
        for key in bad:
            self.metrics.state_resets.labels(table=name).inc()
            logger.error(
                "state reset table=%s reason=undecodable key_sha256=%s",
                name, hashlib.sha256(key.encode()).hexdigest()[:16],
            )
        return states

    async def _run_stage(
        self,
        out: _Outbox,
        stage: str,
        table: Any,
        table_name: str,
        items: Sequence[stages.Routed],
        keyed: Mapping[str, _Bound],
        decode: Callable[[Any], Any],
        key_of: Callable[[Event], str | None],
        run: Callable[[Sequence[stages.Routed], dict[str, Any],
                       dict[str, stages.Applied] | None], stages.StageResult],
        applied: dict[str, stages.Applied] | None,
    ) -> stages.StageResult:
        """Load a batch's states, run one stage on them; return its result.

        Events the engine raised on are dead-lettered (``run_isolated``),
        staged or fused alike.
        """
        states: dict[str, Any] = self._load(table, table_name, keyed, decode, applied)
        result, failures = stages.run_isolated(run, items, states, applied, key_of)
        await self._engine_errors(out, stage, failures, items)
        return result

    async def _store(
        self,
        table: Any,
        keyed: Mapping[str, _Bound],
        changed: dict[str, Any],
        applied: dict[str, stages.Applied] | None = None,
    ) -> None:
        # Explicit write-back of every changed key: the changelog is the state.
        # Called only after the batch's outputs were delivered, so a state that
        # holds an event implies that event's outputs are out (see stages).
        pending = self.pending[id(table)]
        if pending.hold(changed, applied, keyed) or self.write_per_batch:
            await self._write_states(pending)

    async def _write_states(self, pending: _PendingStates) -> int:
        """Write one table's pending states to its store and changelog; return how many.

        ``--changelog-sends partition``: each state goes into the table's
        store, then all of them to the changelog as one producer batch per
        changelog partition, delivered (retried like any output) before this
        returns; the store's persisted changelog offsets follow the delivery.
        ``table``: Faust's Table API, one ``send_soon`` per key, delivered
        by Faust's producer flush before the commit.
        """
        async with pending.lock:
            if self.settings.changelog_sends == "table":
                n = pending.flush()
                if n:
                    self.metrics.state_writes.labels(table=pending.table.name).inc(n)
                return n
            # One step: every state is in the store before anything is
            # awaited, as take_all requires (its states are remembered as
            # the store's, and a revocation may forget them meanwhile).
            return await self._write_entries(pending.table, pending.take_all(), stepped=False)

    async def _write_entries(
        self, table: Any, entries: Sequence[tuple[str, Any, stages.Applied | None, _Bound]],
        stepped: bool = True,
    ) -> int:
        """Write states to a table's store and changelog, a step at a time; return how many.

        Each step encodes up to :data:`SNAPSHOT_CHUNK` keys (fewer once
        their encoding took :data:`SNAPSHOT_STEP_S`), stores them and hands
        them to the producer; the event loop is let go between steps, so
        batches that come meanwhile run instead of waiting for the whole
        write. Unless ``stepped``, the write is one step. Then every
        changelog record is awaited (retried like any output) and the
        store's persisted changelog offsets follow the delivery. The caller
        holds the table's write lock.
        """
        size, step_s = (SNAPSHOT_CHUNK, SNAPSHOT_STEP_S) if stepped else (len(entries), math.inf)
        out = self._outbox()
        topic = table.changelog_topic.get_topic_name()
        encode, clock = stages.encode_state, time.perf_counter
        i, n = 0, len(entries)
        while i < n:
            if i:
                await asyncio.sleep(0)
            started = clock()
            chunk: list[tuple[bytes, bytes, _Bound]] = []
            for key, value, log, event in entries[i : i + size]:
                chunk.append((key.encode(), encode(value, log), event))
                if clock() - started >= step_s:
                    break
            i += len(chunk)
            await out.send_partitioned(topic, self._to_store(table, chunk))
        if entries:
            await self._persisted(table, out)
            self.metrics.state_writes.labels(table=table.name).inc(len(entries))
        return len(entries)

    def _to_store(self, table: Any, entries: Sequence[tuple[bytes, bytes, _Bound]]
                  ) -> list[tuple[int, bytes, bytes]]:
        """Write ``entries`` to the table's store; return their changelog records.

        What Faust's Table.__setitem__ does per key (changelog record in the
        current event's partition, store write, table sensor), with the
        changelog records handed over per partition instead of per key. The
        store is written first: a changelog offset recorded as persisted is
        then always in the store (recovery replays the changelog after it).
        """
        store = table.data
        sensor = table._sensor_on_set
        records: list[tuple[int, bytes, bytes]] = []
        raw_store = _raw_rocks(table)
        if raw_store is not None and not table.use_partitioner:
            # One write batch per partition (Store.put_many), each key in its
            # event's partition as partition_for_key gives it below.
            by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
            verified: set[str] = set()
            for key, value, event in entries:
                message = event.message
                if message.topic not in verified:  # as partition_for_key checks
                    table._verify_source_topic_partitions(message.topic)
                    verified.add(message.topic)
                partition = message.partition
                pairs = by_partition.get(partition)
                if pairs is None:
                    by_partition[partition] = [(key, value)]
                else:
                    pairs.append((key, value))
                records.append((partition, key, value))
            for partition, pairs in by_partition.items():
                raw_store.put_many(partition, pairs)
            for _, key, value in records:
                sensor(table, key, value)
            return records
        for key, value, event in entries:
            _bind(event)  # the key's own partition (see _bind)
            partition = table.partition_for_key(key)  # checks co-partitioning, as Faust does
            if partition is None:  # a table on the producer's partitioner: not one of ours
                raise RuntimeError(f"table {table.name} has no partition for its changelog")
            store[key] = value
            sensor(table, key, value)
            records.append((partition, key, value))
        return records

    async def _persisted(self, table: Any, out: _Outbox) -> None:
        """Wait for a table's changelog records; record their offsets as persisted."""
        await out.delivered()
        for (topic, partition), offset in out.offsets.items():
            table.data.set_persisted_offset(TP(topic, partition), offset)

    async def _write_snapshot(self, pending: _PendingStates) -> int:
        """Write a table's snapshot (:meth:`_PendingStates.snapshot`); return how many states.

        The write of :meth:`_write_states`, in steps (:meth:`_write_entries`);
        batches read the snapshot until it is written.
        """
        async with pending.lock:
            n = await self._write_entries(pending.table, pending.take_snapshot())
            pending.written()
            return n

    def _duplicates(self, stage: str, dups: Sequence[stages.Routed]) -> None:
        if dups:
            self.metrics.redelivered.labels(stage=stage).inc(len(dups))
            first = dups[0].origin
            logger.info(
                "redelivered events skipped stage=%s events=%d first=%s:%d:%d",
                stage, len(dups), first.topic, first.partition, first.offset,
            )

    def _check_offsets(self, stage: str, batch: Sequence[RawEvent]) -> None:
        self._check_sources(stage, [_source(e) for e in batch])

    def _check_sources(self, stage: str, sources: Sequence[stages.Source]) -> None:
        tracker = self.offsets.setdefault(stage, stages.OffsetTracker())
        for source, skipped in tracker.observe_all(sources):
            if skipped:
                self.metrics.input_gaps.labels(stage=stage).inc(skipped)
                logger.error(
                    "offset gap stage=%s topic=%s partition=%d skipped=%d before_offset=%d",
                    stage, source.topic, source.partition, skipped, source.offset,
                )

    def reset_offsets(self, stage: str | None = None) -> None:
        """Forget the expected offsets of ``stage`` (all stages if None): partitions moved."""
        for name, tracker in self.offsets.items():
            if stage is None or name == stage:
                tracker.reset()

    async def flush_states(self) -> None:
        """Write every stage's pending states to its table (before a commit or a revoke).

        A retriable delivery failure is waited out (back-pressure: no commit
        meanwhile), unless the app is stopping: a stop during an outage then
        gives up at the next failed attempt instead of waiting for the
        broker. Either that or a refusal stops the process before anything
        is committed past the states, as a failed batch does
        (:func:`_fail_stop`), instead of being raised into Faust's commit and
        its consumer's crash handling.
        """
        async def write() -> int:
            written = 0
            for pending in self.pending.values():
                written += await self._write_states(pending)
            return written

        await self._write_or_stop(write())

    async def _write_or_stop(self, write: Awaitable[int]) -> None:
        """Await a write of held states (it returns how many) under :meth:`flush_states`' rules.

        Retriable failures are waited out unless the app is stopping; a
        failure stops the process (:func:`_fail_stop`). A write of at least
        one state is timed in ``detector_state_flush_ms``.
        """
        token = _stopping.set(_AppStopping(self.app))
        started = time.perf_counter()
        try:
            if await write:
                self.metrics.state_flush_ms.observe((time.perf_counter() - started) * 1e3)
        except Exception as exc:  # noqa: BLE001 (fail-stop, see flush_states)
            _fail_stop(exc)
        finally:
            _stopping.reset(token)

    def _observe(self, stage: str, n: int, started: float) -> None:
        self.metrics.batch_size.labels(stage=stage).observe(n)
        self.metrics.batch_ms.labels(stage=stage).observe((time.perf_counter() - started) * 1e3)

    def _batches(self, stream: Any, internal: bool = True) -> AsyncIterator[Sequence[RawEvent]]:
        s = self.settings
        # An internal record holds up to a whole upstream batch, so internal
        # stages take fewer records per batch (bounding a batch's events).
        most = max(1, s.batch_max // 50) if internal else s.batch_max
        if s.batch_idle_s <= 0:  # Faust's fixed window, as before --batch-idle-s existed
            batches: AsyncIterator[Sequence[RawEvent]] = stream.take_events(
                most, within=s.batch_within_s
            )
            return batches
        drained = take_drained(stream, most, s.batch_within_s, s.batch_idle_s)
        # As Faust does for its own take generators: Stream.on_stop closes
        # leftovers explicitly (deterministic cleanup off CPython).
        agens = getattr(stream, "_active_agens", None)
        if agens is not None:
            agens.add(drained)
        return drained

    def _forward(self, out: _Outbox, topic: str, routed: Sequence[tuple[str, stages.Routed]]
                 ) -> Awaitable[None]:
        return out.send_records(topic, stages.pack(routed, self.settings.partitions))

    # ------------------------------------------------------------------- agents
    async def parse(self, stream: Any) -> None:
        """Stage 1: validate input, dead-letter rejects, forward keyed by source IP."""
        async for batch in self._batches(stream, internal=False):
            await _complete(self._parse_batch(batch))

    async def _parse_batch(self, batch: Sequence[RawEvent]) -> None:
        skew = self.settings.max_future_skew_s
        await self.parse_messages(
            [e.value for e in batch], [_source(e) for e in batch],
            [_record_ms(e) for e in batch] if skew > 0 else None,
        )

    async def parse_messages(
        self,
        values: Sequence[bytes | None],
        sources: Sequence[stages.Source],
        record_ms: Sequence[int | None] | None,
    ) -> None:
        """Parse one batch of input messages and deliver its outputs (both ingest paths).

        Forwards the accepted events packed to ``<app>-by-ip`` and dead-letters
        the rejects; returns once every output is acknowledged.
        """
        started = time.perf_counter()
        self._check_sources("parse", sources)
        for topic, count in Counter(s.topic for s in sources).items():
            self.metrics.events_in.labels(topic=topic).inc(count)
        skew = self.settings.max_future_skew_s
        # Decided before the parse (nothing is awaited between the two, so
        # it is the same decision as after it): fused batches need no
        # routing keys.
        fused = self.fuse and await self._fusable()
        accepted, dead = stages.parse_stage(
            list(zip(values, sources, strict=True)),
            record_ms if skew > 0 else None,
            int(skew * 1000) if skew > 0 else None,
            route=not fused,
        )
        out = self._outbox()
        if fused:
            await self._fused(out, accepted, dead)
        else:
            if self.fuse:
                self.metrics.stage_paths.labels(path="staged").inc()
            await self._forward(out, self.by_ip.get_topic_name(), accepted)
            await self._dead_letter(out, dead)
            await out.delivered()
        self._observe("parse", len(values), started)

    # ------------------------------------------------------------ fused stages
    async def _fusable(self) -> bool:
        """Return whether this batch may run the stateful stages in process.

        Only while this worker owns every partition of the three stages,
        their tables are recovered and no rebalance is under way: then every
        key's state is here, as it would be in the stages' own batches. A
        batch that comes during a rebalance or a recovery waits for its end
        first (as the staged records would wait in the internal topics). On
        the first batch of a consumer generation this also needs the
        repartition topics drained (:class:`InternalBacklog`): a record still
        waiting there holds older events than this batch's. Until then, and
        whenever ownership is partial (several workers), the batch is staged.
        """
        app = self.app
        if self._rebalancing():
            # Wait for the rebalance to end, then decide. Records forwarded
            # now would reach internal partitions whose owner is not settled,
            # and may have no committed offset yet (they are empty while this
            # worker fuses): one such record, sent to by-ip during the
            # handover, was never processed in a benchmark run (lag 0).
            self._staged("rebalancing")
            while self._rebalancing() and not app.should_stop:
                await asyncio.sleep(REBALANCE_POLL_S)
        if app.should_stop:
            return self._staged("stopping")
        if self._rebalancing():
            return self._staged("recovering")
        if self._agents_running:
            return self._staged("stages_busy")
        actives = app.assignor.assigned_actives()
        if any(TP(t, p) not in actives for t, p in self._internal):
            return self._staged("partial_ownership")
        generation = app.consumer_generation_id
        if self._fused_generation == generation:
            return True
        now = time.monotonic()
        if now - self._backlog_checked < BACKLOG_CHECK_S:
            return False
        self._backlog_checked = now
        try:
            ends, committed = await asyncio.get_running_loop().run_in_executor(
                None, self._backlog.read, self._internal
            )
        except Exception as exc:  # noqa: BLE001 (staged meanwhile, retried; logged)
            logger.warning("fused stages: backlog unknown error=%s", type(exc).__name__)
            return self._staged("backlog_unknown")
        waiting = sum(
            max(0, end - max(self._finished.get(tp, 0), committed.get(tp, 0)))
            for tp, end in ends.items()
        )
        if len(ends) < len(self._internal) or waiting:
            return self._staged("backlog", waiting)
        if app.consumer_generation_id != generation or self._rebalancing():
            return self._staged("rebalancing")
        if self._agents_running:  # a stage's batch began meanwhile
            return self._staged("stages_busy")
        self._fused_generation = generation
        self._fuse_off = None
        logger.info("fused stages on generation=%d partitions=%d", generation,
                    self.settings.partitions)
        return True

    def _rebalancing(self) -> bool:
        """Whether Faust is rebalancing or recovering its tables (ownership unsettled)."""
        app = self.app
        recovery = getattr(app.tables, "recovery", None)
        return bool(app.rebalancing or recovery is None or not recovery.completed.is_set()
                    or getattr(app, "in_recovery", False))

    def _staged(self, reason: str, records: int = 0) -> bool:
        """Note why this batch is staged (logged when the reason changes); return False."""
        self._fused_generation = None
        if reason != self._fuse_off:
            self._fuse_off = reason
            logger.info("fused stages off reason=%s waiting_records=%d", reason, records)
        return False

    async def _as_agent(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run one batch of a stage's agent; with fused stages, never beside a fused batch.

        Both read a key's state, await their outputs and then store it: run
        side by side on the same key, the later store would drop what the
        other learned. So an agent's batch waits for a running fused batch,
        none starts while it waits or runs, and the next fused batch first
        checks the backlog again (records reached the internal topics).
        """
        if not self.fuse:
            await work()
            return
        self._agents_running += 1
        self._fused_generation = None
        try:
            await self._fused_settled.wait()
            await work()
        finally:
            self._agents_running -= 1

    def _finish(self, batch: Sequence[RawEvent]) -> None:
        """Record how far a staged batch of an internal topic was processed (for _fusable)."""
        if not self.fuse:
            return
        finished = self._finished
        for e in batch:
            m = e.message
            tp = (m.topic, m.partition)
            if finished.get(tp, 0) <= m.offset:
                finished[tp] = m.offset + 1

    def _bound(self, topic: str, keys: Iterable[str]) -> dict[str, _Bound]:
        """Bind each key to its partition of ``topic``, as its stage would receive it."""
        n = self.settings.partitions
        bindings = self._bindings
        return {k: bindings[(topic, stages.partition_for(k, n))] for k in keys}

    async def _fused(self, out: _Outbox, accepted: Sequence[tuple[str, stages.Routed]],
                     dead: Sequence[stages.DeadLetter]) -> None:
        """Run the three stateful stages on a parsed batch in process and deliver its outputs.

        The very stage functions and tables of the staged agents, in their
        order (IP, session, entity), each key bound to the partition its
        stage owns it in (:meth:`_bound`). States are held or written after
        every output of the batch was delivered, as a stage does.
        """
        self.metrics.stage_paths.labels(path="fused").inc()
        self._fused_settled.clear()
        try:
            started = time.perf_counter()
            detector = self.holder.detector
            items = [r for _, r in accepted]
            # Each stage's keys once per batch (a batch re-run event by event,
            # see run_isolated, computes its own).
            ip_keys = stages.ip_state_keys(items)
            ip_keyed = self._bound(self.by_ip.get_topic_name(),
                                   {k for k in ip_keys if k is not None})
            ip_applied: dict[str, stages.Applied] = {}
            first = items
            ip_result = await self._run_stage(
                out, "ip", self.ips, "ip-context", items, ip_keyed, IpContext.from_dict,
                stages.ip_state_key,
                lambda b, st, ap: stages.ip_stage(detector, b, st, ap, route=False,
                                                  keys=ip_keys if b is first else None),
                ip_applied,
            )
            items = [r for _, r in ip_result.out]
            session_keyed = self._bound(self.by_session.get_topic_name(), {
                k for k in stages.session_state_keys(items) if k is not None})
            session_result = await self._run_stage(
                out, "session", self.sessions, "session-context", items, session_keyed,
                SessionContext.from_dict, stages.session_state_key,
                lambda b, st, ap: stages.session_stage(detector, b, st, route=False), None,
            )
            items = [r for _, r in session_result.out]
            partitions = self.settings.partitions
            # Keys and paths once per batch (the stage reuses them; a batch
            # run again event by event, see run_isolated, computes its own).
            routes = stages.entity_routes([r.event for r in items], partitions)
            entity_keyed = self._bound(self.by_entity.get_topic_name(), set(routes[0]))
            entity_applied: dict[str, stages.Applied] = {}
            whole = items
            entity_result = await self._run_stage(
                out, "entity", self.baselines, "baselines", items, entity_keyed,
                Baseline.from_dict, stages.entity_state_key,
                lambda b, st, ap: stages.entity_stage(
                    detector, b, st, ap, partitions, routes if b is whole else None),
                entity_applied,
            )
            decisions = entity_result.out
            await self._send_decisions(out, decisions)
            await self._dead_letter(out, dead)
            await out.delivered()
            self._fused_unflushed = True
            await self._store(self.ips, ip_keyed, ip_result.changed, ip_applied)
            await self._store(self.sessions, session_keyed, session_result.changed)
            await self._store(self.baselines, entity_keyed, entity_result.changed,
                              entity_applied)
            self._duplicates("ip", ip_result.duplicates)
            self._duplicates("entity", entity_result.duplicates)
            self._count_decisions(decisions)
            self._observe("fused", len(accepted), started)
        finally:
            self._fused_settled.set()

    async def settle_fused(self) -> None:
        """Wait until no fused batch is running (before partitions are revoked)."""
        await self._fused_settled.wait()

    def begin_fused_flush(self) -> Awaitable[None] | None:
        """Set aside the states the fused batches changed; return their write, or None.

        Called between two batches, when the direct ingest takes the input
        offsets due for commit: the snapshot then holds the states of exactly
        those batches. The returned write (awaited before the commit, while
        the next batches run) puts them in their tables a chunk at a time
        (:meth:`_write_snapshot`), so no batch waits for a whole flush (it
        took 140-260 ms every commit interval in a live feed of 3,500-7,000
        events/s, mostly the session table's thousands of keys). On failure
        it stops the process without committing, as :meth:`flush_states`.
        With ``--changelog-sends table`` (Faust's Table API, one send per
        key) the write is :meth:`flush_fused`, the whole flush at once.
        """
        if not self._fused_unflushed:
            return None
        if self.settings.changelog_sends == "table":
            return self.flush_fused()
        self._fused_unflushed = False
        snapshots = [p for p in self.pending.values() if p.snapshot()]
        return self._write_snapshots(snapshots)

    async def _write_snapshots(self, snapshots: Sequence[_PendingStates]) -> None:
        async def write() -> int:
            written = 0
            for pending in snapshots:
                written += await self._write_snapshot(pending)
            await self.app.producer.flush()
            return written

        await self._write_or_stop(write())

    async def flush_fused(self) -> None:
        """Write the states fused batches changed, before the input offsets are committed.

        The direct ingest commits input offsets itself; with fused stages a
        committed input offset must never be ahead of the states that hold
        its event (a crash would lose that learning), as for Faust's commits.
        """
        if self._fused_unflushed:
            self._fused_unflushed = False
            await self.flush_states()
            await self.app.producer.flush()

    async def _context_stage(
        self,
        stream: Any,
        stage: str,
        table: Any,
        table_name: str,
        key_of: Callable[[Event], str | None],
        decode: Callable[[Any], T],
        run: Callable[[Detector, Sequence[stages.Routed], dict[str, Any],
                       dict[str, stages.Applied] | None], stages.StageResult],
        forward: str,
        idempotent: bool,
    ) -> None:
        async def one(batch: Sequence[RawEvent]) -> None:
            started = time.perf_counter()
            self._check_offsets(stage, batch)
            out = self._outbox()
            items, index, dead = stages.decode_routed([(e.value, _source(e)) for e in batch], stage)
            await self._dead_letter(out, dead)
            keyed: dict[str, RawEvent] = {}
            for r, i in zip(items, index, strict=True):
                key = key_of(r.event)
                if key is not None:
                    keyed[key] = batch[i]
            applied: dict[str, stages.Applied] | None = {} if idempotent else None
            detector = self.holder.detector
            result = await self._run_stage(
                out, stage, table, table_name, items, keyed, decode, key_of,
                lambda b, st, ap: run(detector, b, st, ap), applied,
            )
            await self._forward(out, forward, result.out)
            await out.delivered()
            await self._store(table, keyed, result.changed, applied)
            self._finish(batch)
            self._duplicates(stage, result.duplicates)
            self._observe(stage, len(items), started)

        async for batch in self._batches(stream):
            await _complete(self._as_agent(functools.partial(one, batch)))

    async def ip(self, stream: Any) -> None:
        """Stage 2 (keyed by source IP): IP context, forward keyed by session."""
        await self._context_stage(
            stream, "ip", self.ips, "ip-context", stages.ip_state_key, IpContext.from_dict,
            stages.ip_stage, self.by_session.get_topic_name(), idempotent=True,
        )

    async def session(self, stream: Any) -> None:
        """Stage 3 (keyed by session id): session context, forward keyed by entity."""
        await self._context_stage(
            stream, "session", self.sessions, "session-context", stages.session_state_key,
            SessionContext.from_dict, lambda d, b, st, ap: stages.session_stage(d, b, st),
            self.by_entity.get_topic_name(), idempotent=False,
        )

    async def entity(self, stream: Any) -> None:
        """Stage 4 (keyed by entity): baselines, decisions, signals."""
        async for batch in self._batches(stream):
            await _complete(self._as_agent(functools.partial(self._entity_batch, batch)))

    async def _entity_batch(self, batch: Sequence[RawEvent]) -> None:
        s = self.settings
        started = time.perf_counter()
        self._check_offsets("entity", batch)
        out = self._outbox()
        items, index, dead = stages.decode_routed(
            [(e.value, _source(e)) for e in batch], "entity"
        )
        await self._dead_letter(out, dead)
        keyed = {r.event.entity_key: batch[i] for r, i in zip(items, index, strict=True)}
        applied: dict[str, stages.Applied] = {}
        detector = self.holder.detector
        result = await self._run_stage(
            out, "entity", self.baselines, "baselines", items, keyed, Baseline.from_dict,
            stages.entity_state_key,
            lambda b, st, ap: stages.entity_stage(detector, b, st, ap, s.partitions), applied,
        )
        decisions = result.out
        await self._send_decisions(out, decisions)
        await out.delivered()
        await self._store(self.baselines, keyed, result.changed, applied)
        self._finish(batch)
        self._duplicates("entity", result.duplicates)
        self._count_decisions(decisions)
        self._observe("entity", len(items), started)

    async def _send_decisions(self, out: _Outbox, decisions: Sequence[Decision]) -> None:
        """Hand the signals (and, when configured, every decision) to ``out``."""
        s = self.settings
        signals = [
            (d.event.entity_key, self.encode_signal(d))
            for d in decisions
            if d.signal_id is not None
        ]
        await out.send(s.response_topic, signals)
        if s.decisions_topic:
            await out.send(
                s.decisions_topic,
                keyed_decision_json(decisions),
            )

    def _count_decisions(self, decisions: Sequence[Decision]) -> None:
        m = self.metrics
        # Counted by member, labelled once per action (Enum.value is a
        # descriptor call: per decision it was 1.5 % of a draining worker).
        by_action: dict[Any, int] = {}
        signalled: dict[Any, int] = {}
        for d in decisions:
            action = d.action
            by_action[action] = by_action.get(action, 0) + 1
            if d.signal_id is not None:
                signalled[action] = signalled.get(action, 0) + 1
        for action, count in by_action.items():
            m.decisions.labels(action=action.value).inc(count)
        for action, count in signalled.items():
            m.signals.labels(action=action.value).inc(count)
        cold = sum(1 for d in decisions if d.cold_start)
        if cold:
            m.cold_start.inc(cold)


def _store_url(settings: WorkerSettings) -> str:
    """Return the tables' store URL: detector.stream.store's RocksDB store under a memory budget."""
    if settings.store == "rocksdb://" and settings.rocksdb_memory_mb > 0:
        return f"{STORE_SCHEME}://"
    return settings.store


def rocksdb_options(settings: WorkerSettings) -> dict[str, int]:
    """Return the RocksDB options of each table partition (faust's ``RocksDBOptions`` kwargs)."""
    mb = 1024 * 1024
    return {
        "write_buffer_size": settings.rocksdb_write_buffer_mb * mb,
        "block_cache_size": settings.rocksdb_block_cache_mb * mb,
    }


async def _complete(work: Awaitable[None]) -> None:
    """Run one batch to completion, even if the agent is cancelled meanwhile.

    ``stream.take_events`` acks a batch in a ``finally`` when the agent's
    loop is left, also when it is left because the agent was cancelled (a
    graceful stop or a rebalance). Cancelled half-way, a batch would be
    acked, and so committed, with its outputs never sent: lost. So the
    batch's work is shielded, awaited to the end on cancellation, and only
    then is the cancellation passed on. A batch that is waiting out an
    outage of an output topic (:meth:`_Outbox.delivered`) is told about the
    cancellation and gives up at its next failed attempt: it fail-stops
    (nothing acked) instead of holding the stop up for as long as the outage
    lasts.
    """
    stopping = asyncio.Event()
    token = _stopping.set(stopping)  # copied into the task's context
    try:
        task = asyncio.ensure_future(work)
    finally:
        _stopping.reset(token)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        stopping.set()
        try:
            await task
        except Exception as exc:  # noqa: BLE001 (fail-stop, see below)
            _fail_stop(exc)
        raise
    except Exception as exc:  # noqa: BLE001 (fail-stop, see below)
        _fail_stop(exc)


def _fail_stop(exc: Exception) -> NoReturn:
    """Exit the process at once: a batch failed (an output the broker refused).

    Letting the exception end the agent would be worse than useless: the
    ``take_events`` loop acks the failed batch on its way out, the worker
    commits past it (its outputs never delivered: lost), and the process
    stays up, reporting healthy, with a dead agent. Exiting now, before any
    ack, is a crash like SIGKILL: nothing is committed past the batch, and
    the next process redelivers it from the last commit. Only non-retriable
    refusals (and bugs) get here; a temporarily unavailable output is waited
    out by :meth:`_Outbox.delivered` (back-pressure).
    """
    logger.critical(
        "batch failed, its outputs were not delivered: stopping the worker without "
        "committing it (exit %d) error=%s", FAIL_STOP_EXIT, type(exc).__name__, exc_info=exc,
    )
    logging.shutdown()
    os._exit(FAIL_STOP_EXIT)


#: Back-pressure on a retriable delivery failure: the first wait before a
#: resend, doubled per attempt up to the cap (s). Each attempt already spans
#: the producer's own retries (``producer_request_timeout_ms``), so the cap
#: only bounds how late a recovered topic is noticed.
RETRY_BACKOFF_S: Final = 0.5
RETRY_BACKOFF_MAX_S: Final = 15.0

class _StopSignal(Protocol):
    """What :meth:`_Outbox.delivered` asks whether to give up: an ``asyncio.Event``'s API."""

    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


class _AppStopping:
    """Set once the app stops (Faust's ``should_stop``, polled: Faust sets no event for it)."""

    POLL_S: Final = 0.1

    def __init__(self, app: Any) -> None:
        self._app = app

    def is_set(self) -> bool:
        """Return whether the app is stopping."""
        return bool(self._app.should_stop)

    async def wait(self) -> None:
        """Return once the app is stopping."""
        while not self.is_set():
            await asyncio.sleep(self.POLL_S)


#: Set by :func:`_complete` when the batch's agent is cancelled (a stop), and
#: by :meth:`_Pipeline.flush_states` to the app's own stop.
_stopping: ContextVar[_StopSignal | None] = ContextVar("zt_batch_stopping", default=None)


class DeliveryAbandoned(RuntimeError):
    """A batch stopped retrying a retriable delivery failure because the agent stops."""


def _retriable(exc: BaseException) -> bool:
    """Return True if a failed send may succeed when resent later.

    Retriable: aiokafka errors marked ``retriable`` (leader not available,
    not leader for partition, connection errors, request timed out, not
    enough replicas, unknown topic or partition while metadata catches up)
    and :class:`~aiokafka.errors.KafkaTimeoutError`, which is what the
    producer raises when its own retries ran out (``request_timeout_ms``:
    batch expired, metadata or buffer space not available in time); aiokafka
    flags it not retriable because *it* will not retry, but the cause is an
    unavailable partition that may come back. Everything else (authorization,
    record too large, invalid topic, a closed producer, any other exception)
    is not. Faust wraps errors raised by ``send`` itself in
    ``ProducerSendError``; the cause decides.

    Examples
    --------
    >>> from aiokafka.errors import LeaderNotAvailableError, MessageSizeTooLargeError
    >>> _retriable(LeaderNotAvailableError()), _retriable(MessageSizeTooLargeError())
    (True, False)
    """
    if isinstance(exc, ProducerSendError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, KafkaTimeoutError):
        return True
    return isinstance(exc, KafkaError) and bool(exc.retriable)


@dataclass(slots=True)
class _Record:
    """One output of a batch and the outcome of its latest send."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    result: Awaitable[Any] | None = None  # the producer's delivery future
    error: BaseException | None = None  # raised by the send call itself

    def order_key(self) -> tuple[str, int | bytes | None]:
        """Return what this record's order is kept within: its partition (or key)."""
        return (self.topic, self.partition if self.partition is not None else self.key)


@dataclass(slots=True)
class _Group:
    """Keyed records handed to ``KeyedBatches`` in one call, with each one's outcome."""

    topic: str
    keyed: Sequence[tuple[bytes, bytes]]
    partitions: Sequence[int] | None
    outcomes: Sequence[tuple[Awaitable[Any] | None, BaseException | None]] = ()


def _records_of(entries: Sequence[_Record | _Group]) -> list[_Record]:
    """Return ``entries`` with every group expanded into its records, in order."""
    records: list[_Record] = []
    for entry in entries:
        if type(entry) is _Group:
            partitions = entry.partitions
            for i, ((key, value), (result, error)) in enumerate(
                    zip(entry.keyed, entry.outcomes, strict=True)):
                records.append(_Record(entry.topic, key, value,
                                       None if partitions is None else partitions[i],
                                       result, error))
        else:
            records.append(entry)  # type: ignore[arg-type]
    return records


class _Outbox:
    """One batch's outputs, sent straight to the producer.

    Faust's ``Topic.send`` costs about a millisecond of bookkeeping per
    message; the producer itself keeps per-partition order. The batch waits
    for every acknowledgement (:meth:`delivered`) before it is acked, so an
    output the broker refused fails the agent (fail-stop, the batch is
    redelivered) instead of being committed past, and an output topic that
    is temporarily unavailable holds the batch (back-pressure) until it is
    delivered.
    """

    def __init__(self, producer: Any, metrics: StreamMetrics | None = None,
                 batches: KeyedBatches | None = None) -> None:
        self._producer = producer
        self._metrics = metrics
        self._batches = batches
        #: What was handed over, in order: records sent one by one, and
        #: groups handed to ``batches`` (their records are built only when a
        #: delivery fails, see _records_of).
        self._records: list[_Record | _Group] = []
        #: The highest offset delivered per (topic, partition), from the
        #: delivery results.
        self.offsets: dict[tuple[str, int], int] = {}

    async def send(self, topic: str, records: Sequence[tuple[str, bytes]]) -> None:
        """Send keyed records (the producer's partitioner places them)."""
        await self._hand_over(topic, [(key.encode(), value) for key, value in records], None)

    async def send_records(self, topic: str, records: Sequence[tuple[int, bytes]]) -> None:
        """Send unkeyed records to explicit partitions (internal topics)."""
        for partition, value in records:
            await self._send(_Record(topic, None, value, partition))

    async def send_partitioned(self, topic: str,
                               records: Sequence[tuple[int, bytes, bytes]]) -> None:
        """Send keyed records to explicit partitions (partition, key, value): changelogs."""
        await self._hand_over(topic, [(key, value) for _, key, value in records],
                              [partition for partition, _, _ in records])

    async def _hand_over(self, topic: str, keyed: list[tuple[bytes, bytes]],
                         partitions: list[int] | None) -> None:
        """Give keyed records to the producer and keep each with its outcome.

        With ``batches``, one producer batch per partition (its delivery
        future shared by its records); else one ``send`` per record. Either
        way :meth:`delivered` treats the records alike.
        """
        if self._batches is None:
            for i, (key, value) in enumerate(keyed):
                await self._send(
                    _Record(topic, key, value, None if partitions is None else partitions[i]))
            return
        if not keyed:
            return
        group = _Group(topic, keyed, partitions)
        self._records.append(group)
        group.outcomes = await self._batches.send(topic, keyed, partitions)

    async def _send(self, record: _Record) -> None:
        self._records.append(record)
        record.result, record.error = None, None
        try:
            record.result = await self._producer.send(
                record.topic, record.key, record.value, record.partition, None, None
            )
        except Exception as exc:  # noqa: BLE001 (classified in delivered())
            # No room or no metadata within the producer's timeout, or a
            # refusal: kept with the record, decided on like a failed delivery.
            record.error = exc

    async def _failures(self) -> list[tuple[_Record, BaseException]]:
        # Each delivery future once, with how many records share it: records
        # sharing a future are one producer batch (KeyedBatches), whose
        # result holds its first offset; its records have the next ones.
        sharing: dict[int, int] = {}
        futures: list[Awaitable[Any]] = []
        raised = False  # a record whose send call itself raised
        for entry in self._records:
            outcomes = (entry.outcomes if type(entry) is _Group
                        else ((entry.result, entry.error),))  # type: ignore[union-attr]
            for fut, error in outcomes:
                if error is not None:
                    raised = True
                if fut is not None:
                    k = id(fut)
                    n = sharing.get(k)
                    if n is None:
                        sharing[k] = 1
                        futures.append(fut)
                    else:
                        sharing[k] = n + 1
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed: dict[int, BaseException] = {}  # by id of the future
        offsets = self.offsets
        for fut, res in zip(futures, results, strict=True):
            if isinstance(res, BaseException):
                failed[id(fut)] = res
            elif res is not None:  # aiokafka's RecordMetadata
                tp = (res.topic, res.partition)
                last = res.offset + sharing[id(fut)] - 1
                if last > offsets.get(tp, -1):
                    offsets[tp] = last
        out: list[tuple[_Record, BaseException]] = []
        if not failed and not raised:
            return out
        records = _records_of(self._records)
        self._records = [*records]  # built once: delivered() resends from them
        for r in records:
            exc = r.error if r.error is not None else failed.get(id(r.result))
            if exc is not None:
                if not isinstance(exc, Exception):  # a cancelled delivery future
                    exc = RuntimeError(f"delivery to {r.topic} cancelled ({type(exc).__name__})")
                out.append((r, exc))
        return out

    async def delivered(self) -> None:
        """Wait until every output is acknowledged; resend what failed retriably.

        A non-retriable failure is raised (the caller fail-stops). Retriable
        failures are resent after a capped exponential backoff, as often as
        it takes: the batch is not acked meanwhile, so its agent takes no
        further batch and its input lag grows (back-pressure), counted in
        ``detector_delivery_retries_total{topic}`` and logged per attempt.
        Order: a record is resent with every later record of the batch that
        shares its partition (internal topics) or key (keyed topics), in the
        original order, so the last copies keep the batch's order per key;
        earlier copies of those later records are duplicates (signal ids
        deduplicate them downstream).
        """
        attempt = 0
        while self._records:
            failures = await self._failures()
            if not failures:
                self._records.clear()
                return
            for _, exc in failures:
                if not _retriable(exc):
                    raise exc
            first = failures[0][1]
            stopping = _stopping.get()
            if stopping is not None and stopping.is_set():
                raise DeliveryAbandoned(
                    f"agent stopping while {len(failures)} outputs were undelivered"
                ) from first
            failed_ids = {id(r) for r, _ in failures}
            resend: list[_Record] = []
            held: set[tuple[str, int | bytes | None]] = set()  # keys with a resend
            for r in _records_of(self._records):  # (built by _failures already)
                k = r.order_key()
                if id(r) in failed_ids or k in held:
                    resend.append(r)
                    held.add(k)
            attempt += 1
            backoff = min(RETRY_BACKOFF_MAX_S, RETRY_BACKOFF_S * 2 ** (attempt - 1))
            by_topic = Counter(r.topic for r in resend)
            for topic, count in by_topic.items():
                if self._metrics is not None:
                    self._metrics.delivery_retries.labels(topic=topic).inc(count)
            logger.warning(
                "delivery failed, retrying (back-pressure) attempt=%d failed=%d resend=%d "
                "topics=%s backoff_s=%.1f error=%s",
                attempt, len(failures), len(resend), ",".join(sorted(by_topic)), backoff,
                type(first).__name__,
            )
            await _pause(backoff, stopping)
            self._records = []
            for r in resend:
                await self._send(r)


async def _pause(seconds: float, stopping: _StopSignal | None) -> None:
    """Sleep ``seconds``, or less if the agent is told to stop."""
    if stopping is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


class _CachedPrometheusMonitor(PrometheusMonitor):
    """Faust's Prometheus sensor with the per-message and per-key label lookups cached.

    Faust calls these hooks for every message, every stream event and every
    table key read or written; its
    own sensor resolves a labelled child (``.labels(...)``) and, for
    streams, normalises the stream's label string on every call (about 10 %
    of a loaded worker's CPU). The children are the same objects every
    time, so they are looked up once per topic, partition or stream. The
    exported series are unchanged.
    """

    def __init__(self, metrics: Any, **kwargs: Any) -> None:
        super().__init__(metrics, **kwargs)
        self._by_tp: dict[Any, tuple[Any, Any]] = {}
        self._by_stream: dict[Any, Any] = {}
        self._by_table: dict[tuple[str, str], Any] = {}

    def _table_child(self, table: Any, operation: str) -> Any:
        child = self._by_table.get((table.name, operation))
        if child is None:
            child = self._by_table[(table.name, operation)] = (
                self._metrics.table_operations.labels(
                    table=f"table.{table.name}", operation=operation))
        return child

    def on_table_get(self, table: Any, key: Any) -> None:
        """Count a table read (Faust's Monitor bookkeeping, then the cached series)."""
        Monitor.on_table_get(self, table, key)
        self._table_child(table, self.KEYS_RETRIEVED).inc()

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        """Count a table write: once per key the stages store (see on_table_get)."""
        Monitor.on_table_set(self, table, key, value)
        self._table_child(table, self.KEYS_UPDATED).inc()

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        """Count a message in (Faust's Monitor bookkeeping, then the cached series)."""
        Monitor.on_message_in(self, tp, offset, message)
        m = self._metrics
        m.messages_received.inc()
        m.active_messages.inc()
        children = self._by_tp.get(tp)
        if children is None:
            children = self._by_tp[tp] = (
                m.messages_received_per_topics.labels(topic=tp.topic),
                m.messages_received_per_topics_partition.labels(
                    topic=tp.topic, partition=tp.partition),
            )
        children[0].inc()
        children[1].set(offset)

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> Any:
        """Count a stream event in; return Faust's per-event state."""
        state = Monitor.on_stream_event_in(self, tp, offset, stream, event)
        m = self._metrics
        m.total_events.inc()
        m.total_active_events.inc()
        child = self._by_stream.get(stream)
        if child is None:
            child = self._by_stream[stream] = m.total_events_per_stream.labels(
                stream=f"stream.{self._stream_label(stream)}.events")
        child.inc()
        return state


def build_app(
    settings: WorkerSettings, holder: ModelHolder, metrics: StreamMetrics
) -> faust.App:
    """Build the Faust app of one worker process (no module-level singleton).

    Parameters
    ----------
    settings : the worker's settings
    holder : the current model, shared with the reload trigger
    metrics : the worker's metrics; Faust's Prometheus sensor joins its registry

    Returns
    -------
    faust.App
        Not started; run it with :func:`run_worker` (or ``faust.Worker``).
    """
    kafka = settings.kafka
    brokers = [TRANSPORT_SCHEME + url[url.index("://"):] for url in kafka.faust_brokers()]
    app = faust.App(
        settings.app_id,
        broker=brokers,
        broker_credentials=kafka.faust_credentials(),
        store=_store_url(settings),
        datadir=str(settings.state_dir),
        web_enabled=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_commit_interval=settings.commit_interval_s,
        producer_request_timeout=settings.producer_request_timeout_ms / 1000,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # aiokafka's partitions for keyed outputs, with the compiled murmur2.
        producer_partitioner=stages.KeyPartitioner(),
        stream_wait_empty=True,
        autodiscover=False,
    )
    app.zt_fetch_max_wait_ms = settings.fetch_max_wait_ms  # type: ignore[attr-defined]
    app.zt_consumer_in_loop = settings.faust_consumer == "loop"  # type: ignore[attr-defined]
    setup_prometheus_sensors(app, registry=metrics.registry, name_prefix="faust")
    # Same series (registered once above), cheaper per message.
    app.monitor = _CachedPrometheusMonitor(metrics=app.monitor._metrics)  # type: ignore[attr-defined]

    pipe = _Pipeline(app, settings, holder, metrics)
    ingest: DirectIngest | None = None
    if settings.ingest == "direct":
        ingest = DirectIngest(
            settings, pipe.parse_messages, _complete, lambda: pipe.reset_offsets("parse"),
            _fail_stop, lambda: bool(app.should_stop),
            before_commit=pipe.flush_fused if pipe.fuse else None,
            begin_write=pipe.begin_fused_flush if pipe.fuse else None,
            max_poll_interval_s=app.conf.broker_max_poll_interval,
            session_timeout_s=app.conf.broker_session_timeout,
            heartbeat_interval_s=app.conf.broker_heartbeat_interval,
            loop=app.loop, beacon=app.beacon,
        )
        # Started with the app's other services once its tables are
        # recovered; stopped before the producer it sends with.
        app.service(ingest)  # type: ignore[arg-type]  # an instance is taken as is
    else:
        inputs = app.topic(*settings.input_topics, **_RAW)
        app.agent(inputs, name="parse")(pipe.parse)

    def offsets() -> tuple[OffsetMap, OffsetMap]:
        monitor = app.monitor
        end = {(tp.topic, tp.partition): o for tp, o in dict(monitor.tp_end_offsets).items()}
        read = {(tp.topic, tp.partition): o for tp, o in dict(monitor.tp_read_offsets).items()}
        if ingest is not None:
            ingest_end, ingest_read = ingest.offsets()
            end.update(ingest_end)
            read.update(ingest_read)
        return end, read

    metrics.add_lag(offsets)
    app.agent(pipe.by_ip, name="ip")(pipe.ip)
    app.agent(pipe.by_session, name="session")(pipe.session)
    app.agent(pipe.by_entity, name="entity")(pipe.entity)

    # Pending states reach their tables before Faust commits offsets
    # (detector.stream.transport._Consumer calls this first) and before the
    # tables' partitions are revoked.
    app.zt_write_pending_states = pipe.flush_states  # type: ignore[attr-defined]

    async def on_revoked(app_: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        pipe.reset_offsets()
        # A fused batch still running holds states of these partitions, as an
        # agent's batch does: it finishes (outputs delivered, states held)
        # before they are written out below.
        await pipe.settle_fused()
        # States stored by batches that were still running when the tables
        # were revoked (Faust waits for them after revoking the tables), and
        # a background write of the fused stages' states (each table's write
        # lock): written and flushed now, before this worker rejoins the
        # group and a new owner recovers the partitions from their changelogs.
        await pipe.flush_states()
        await app.producer.flush()
        # Partitions may come back after another worker changed their states.
        for pending in pipe.pending.values():
            pending.forget_written()

    app.on_partitions_revoked.connect(on_revoked)

    async def health(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        try:
            assigned = len(app.consumer.assignment())
        except Exception:  # consumer not started yet
            assigned = 0
        if ingest is not None:
            assigned += ingest.assigned()
        recovering = bool(getattr(app, "in_recovery", False))
        body = {
            "status": "ok",
            "ready": not app.rebalancing and not recovering,
            "rebalancing": bool(app.rebalancing),
            "recovering": recovering,
            "assigned_partitions": assigned,
            "model_version": holder.version,
        }
        return view.json(body)

    app.page("/health")(health)

    async def reload_model(app_: faust.App) -> None:
        result = await asyncio.get_running_loop().run_in_executor(None, holder.reload)
        if result == "unchanged":
            metrics.model_reloads.labels(result="unchanged").inc()

    if settings.model_poll_s > 0:
        app.timer(settings.model_poll_s, name="model-reload")(reload_model)
    return app


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: ts, level, logger, message (+ exception)."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON line."""
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def logging_config(level: str, json_logs: bool) -> dict[str, Any]:
    """Return the ``logging.config.dictConfig`` of a worker process."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if json_logs
        else {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "main",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        # Faust logs every fetch/commit at INFO: keep its chatter at WARNING.
        "loggers": {
            name: {"level": "WARNING"}
            for name in ("faust", "mode", "aiokafka", "kafka", "detector.stream.transport")
        },
    }


class DetectorWorker(faust.Worker):
    """Faust's worker, plus SIGHUP = reload the model now."""

    def __init__(self, app: faust.App, holder: ModelHolder, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.holder = holder

    def install_signal_handlers(self) -> None:
        """Install Faust's handlers (SIGTERM/SIGINT: graceful stop) and SIGHUP."""
        super().install_signal_handlers()
        self.loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self) -> None:
        logger.info("SIGHUP: reloading model dir=%s", self.holder.model_dir)
        self.loop.run_in_executor(None, self.holder.reload, True)


def run_worker(settings: WorkerSettings, json_logs: bool = True) -> int:
    """Run one worker until SIGTERM/SIGINT; return the exit code.

    Raises :class:`~detector.model.ModelError` when the model does not load.
    """
    # Before anything is loaded: the collector's passes over the model, the
    # held states and Faust's objects were a fifth of the CPU (gctune).
    previous = apply_threshold(parse_threshold(settings.gc_threshold))
    try:
        metrics = StreamMetrics()
        with GcPauses(metrics.gc_pause_ms):
            return _run_app(settings, metrics, json_logs)
    finally:
        apply_threshold(previous)


def _run_app(settings: WorkerSettings, metrics: StreamMetrics, json_logs: bool) -> int:
    holder = ModelHolder(settings.model_dir, metrics)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    ensure_topics(settings)
    app = build_app(settings, holder, metrics)
    logger.info(
        "worker starting app_id=%s inputs=%s partitions=%d store=%s model_version=%s web=%s:%d"
        " gc_threshold=%s",
        settings.app_id, ",".join(settings.input_topics), settings.partitions,
        settings.store, holder.version, settings.web_host, settings.web_port,
        format_threshold(gc.get_threshold()),
    )
    worker = DetectorWorker(
        app,
        holder,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        logging_config=logging_config(settings.log_level, json_logs),
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
