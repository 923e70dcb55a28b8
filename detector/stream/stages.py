"""The worker's four stages as pure, synchronous functions, and their wire records.

The Faust adapter (:mod:`detector.stream.worker`) moves bytes between topics
and tables; everything it decides is decided here, with no broker, so the
whole topology is testable with plain dicts (``tests/test_stream_stages.py``)::

    input topics --parse_stage--> <app>-by-ip       keyed by source IP (auth) or entity
                 --ip_stage-----> <app>-by-session  keyed by session id (auth) or entity
                 --session_stage> <app>-by-entity   keyed by entity
                 --entity_stage-> response topic    step_up/revoke signals keyed by entity

Each stage owns one keyed state (IP context, session context, baselines) and
sees all events of a key in the order of its input partition, which is what
makes its results equal the replay's (see ``docs/streaming.md``).

Between stages an event travels as a :class:`Routed` record: the validated
event itself (no re-parse) plus the context computed so far and the
coordinates of the original input message. Rejected input and batches the
engine failed on become :class:`DeadLetter` records.

Between stages, the events of one micro-batch that go to the same partition
travel together in one Kafka record (:func:`pack`, :func:`decode_routed`):
Faust's per-message cost, not the engine, limited a worker that sent one
record per event per hop. The partition is chosen like Kafka's default
partitioner (murmur2 of the key), so the keys-to-partitions map is the one a
keyed producer would give.

Redelivery is idempotent for keyed state (see :class:`Applied`): each stored
state carries the origin coordinates of the events recently applied to it,
and a redelivered event that is already in the state is skipped instead of
being learned twice. A state is written only after the outputs computed with
it were delivered, so "already in the state" implies "its outputs are out".
"""

from __future__ import annotations

import base64
import functools
import hashlib
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol, TypeVar

import orjson
from aiokafka.partitioner import DefaultPartitioner, murmur2

from detector import native
from detector.context import IpContext, IpStats, SessionContext
from detector.engine import Detector, EngineState
from detector.events import (
    MAX_EVENT_BYTES,
    EntityClass,
    EntityKind,
    Event,
    EventKind,
    ParseError,
    parse_batch,
    parse_event,  # noqa: F401  (the examples below use it)
)

ROUTED_VERSION: Final = 1
#: Version of a record holding several routed events (one batch, one partition).
ROUTED_BATCH_VERSION: Final = 2
#: Largest internal record :func:`pack` builds (the broker's default limit is 1 MiB).
MAX_RECORD_BYTES: Final = 512 * 1024
#: How far (in origin offsets) below the newest an applied-log entry is kept.
#: Redelivery reaches back only to the last commit, seconds of input.
APPLIED_WINDOW: Final = 100_000
_APPLIED_FIELD: Final = "_applied"
DEAD_LETTER_SCHEMA: Final = "zt-detector.deadletter/1"
#: Reason code of a routed record that does not decode: only a version skew
#: between workers or a foreign producer on an internal topic causes it.
BAD_INTERNAL_RECORD: Final = "bad_internal_record"
#: A dead-letter record carries at most this many of the original bytes, plus
#: the original's size and sha256: a 10 MB input must not become a 13 MB dead
#: letter that the producer or broker refuses, which would stop the worker on
#: one message. Four times the parser's limit keeps every message near that
#: limit whole, and the record (base64) stays well under Kafka's 1 MB default.
DEAD_LETTER_RAW_MAX: Final = 4 * MAX_EVENT_BYTES
_N_FIELDS: Final = len(Event._fields)
_KIND: Final = Event._fields.index("kind")
_ENTITY_KIND: Final = Event._fields.index("entity_kind")
_ENTITY_CLASS: Final = Event._fields.index("entity_class")

SessionChanges = tuple[tuple[str, str, str], ...]
# Enum members by wire value: a dict lookup instead of EnumType.__call__ per
# field and event on every hop (KeyError for an unknown value, as ValueError).
_EVENT_KINDS: Final = {m.value: m for m in EventKind}
_ENTITY_KINDS: Final = {m.value: m for m in EntityKind}
_ENTITY_CLASSES: Final = {m.value: m for m in EntityClass}
T = TypeVar("T")


class Source(NamedTuple):
    """Coordinates of a Kafka message.

    A named tuple, not a frozen dataclass: every event crossing a hop gets
    one, and a tuple is built at a third of a frozen dataclass's cost.
    """

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the worker could not process: why, and where it came from."""

    reason: str
    detail: str
    stage: str
    source: Source
    raw: bytes
    event_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the dead-letter topic record (original bytes in base64).

        At most :data:`DEAD_LETTER_RAW_MAX` original bytes are kept
        (``raw_truncated`` says when some were cut); ``raw_size`` and
        ``raw_sha256`` always describe the whole original.

        Examples
        --------
        >>> d = DeadLetter("not_json", "x", "parse", Source("zt.auth", 0, 7), b"{")
        >>> r = d.to_dict()
        >>> r["reason"], r["topic"], r["offset"], base64.b64decode(r["raw_b64"])
        ('not_json', 'zt.auth', 7, b'{')
        >>> r["raw_size"], r["raw_truncated"]
        (1, False)
        """
        raw = self.raw
        return {
            "schema": DEAD_LETTER_SCHEMA,
            "reason": self.reason,
            "detail": self.detail,
            "stage": self.stage,
            "topic": self.source.topic,
            "partition": self.source.partition,
            "offset": self.source.offset,
            "event_id": self.event_id,
            "raw_b64": base64.b64encode(raw[:DEAD_LETTER_RAW_MAX]).decode("ascii"),
            "raw_size": len(raw),
            "raw_truncated": len(raw) > DEAD_LETTER_RAW_MAX,
            "raw_sha256": hashlib.sha256(raw).hexdigest(),
        }

    def to_bytes(self) -> bytes:
        """Return :meth:`to_dict` as JSON bytes."""
        return orjson.dumps(self.to_dict())


class Routed(NamedTuple):
    """A validated event between stages, with the context computed so far.

    A named tuple for the same reason as :class:`Source` (built per event
    and hop).
    """

    event: Event
    origin: Source
    ip: IpStats | None = None
    session_changes: SessionChanges | None = None

    def to_bytes(self) -> bytes:
        """Encode compactly: the event's fields in order, origin and context.

        Examples
        --------
        >>> e = parse_event(b'{"kind":"auth","id":"e1","ts":5,"user":"ana","ip":"192.0.2.1"}')
        >>> r = Routed(e, Source("zt.auth", 1, 2), IpStats(1, 0, 0), ())
        >>> Routed.from_bytes(r.to_bytes()) == r
        True
        """
        return orjson.dumps({"v": ROUTED_VERSION, **self._wire()})

    def _wire(self) -> dict[str, Any]:
        ip = self.ip
        return {
            "e": list(self.event),  # the fields in Event._fields order
            "o": [self.origin.topic, self.origin.partition, self.origin.offset],
            "i": None if ip is None else [ip.users, ip.failures, ip.fail_users],
            "s": self.session_changes,
        }

    @classmethod
    def _from_wire(cls, data: Mapping[str, Any]) -> Routed:
        fields = data["e"]
        if not isinstance(fields, list) or len(fields) != _N_FIELDS:
            raise ValueError("event field count mismatch")
        fields[_KIND] = _EVENT_KINDS[fields[_KIND]]
        fields[_ENTITY_KIND] = _ENTITY_KINDS[fields[_ENTITY_KIND]]
        fields[_ENTITY_CLASS] = _ENTITY_CLASSES[fields[_ENTITY_CLASS]]
        topic, partition, offset = data["o"]
        ip = data["i"]
        changes = data["s"]
        return cls(
            Event._make(fields),
            Source(str(topic), int(partition), int(offset)),
            None if ip is None else IpStats(int(ip[0]), int(ip[1]), int(ip[2])),
            None if changes is None
            else tuple([(str(a), str(b), str(c)) for a, b, c in changes]),
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> Routed:
        """Decode :meth:`to_bytes` output; raise ``ValueError`` when malformed."""
        routed = decode_records(raw)
        if len(routed) != 1:
            raise ValueError("malformed routed record: not a single event")
        return routed[0]


# Build a Routed / Source from a complete tuple of its fields, skipping the
# generated keyword-argument __new__ (434 against 676 ns here): two to three
# of each per event. Give every field, in order.
_new_routed: Final = functools.partial(tuple.__new__, Routed)
new_source: Final = functools.partial(tuple.__new__, Source)


def encode_records(items: Sequence[Routed]) -> bytes:
    """Encode several routed events as one internal record (version 2).

    Examples
    --------
    >>> e = parse_event(b'{"kind":"auth","ts":5,"user":"ana"}')
    >>> rs = [Routed(e, Source("in", 0, 1)), Routed(e, Source("in", 0, 2))]
    >>> decode_records(encode_records(rs)) == rs
    True
    """
    return orjson.dumps({"v": ROUTED_BATCH_VERSION, "r": [r._wire() for r in items]})


def decode_records(raw: bytes) -> list[Routed]:
    """Decode an internal record (one event, version 1, or several, version 2).

    Returns the routed events in order; raises ``ValueError`` when malformed.
    """
    if _decode_kernel is not None and type(raw) is bytes:
        # The compiled decoder (native/src/codec.rs): the very list below,
        # read straight from the bytes; None at any doubt, and then the
        # code below decides.
        fast: list[Routed] | None = _decode_kernel(raw)
        if fast is not None:
            return fast
    try:
        data = orjson.loads(raw)
        version = data["v"]
        if version == ROUTED_VERSION:
            return [Routed._from_wire(data)]
        if version == ROUTED_BATCH_VERSION:
            records = data["r"]
            if not isinstance(records, list):
                raise ValueError("records is not a list")
            return [Routed._from_wire(r) for r in records]
        raise ValueError(f"unsupported routed record version {version!r}")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"malformed routed record: {type(exc).__name__}") from exc


def partition_for(key: str, partitions: int) -> int:
    """Return the partition of ``key`` as Kafka's default partitioner picks it.

    Examples
    --------
    >>> partition_for("user:alice", 8) == partition_for("user:alice", 8) < 8
    True
    """
    if _partition_kernel is not None and partitions >= 1:
        # The compiled murmur2 (native/src/kafka.rs): the same partition,
        # without aiokafka's Python loop over the key's bytes.
        compiled: int = _partition_kernel(key, partitions)
        return compiled
    h: int = murmur2(key.encode())
    return (h & 0x7FFFFFFF) % partitions


class KeyPartitioner:
    """The producer's partitioner: aiokafka's ``DefaultPartitioner``, with the compiled murmur2.

    The worker's keyed outputs (signals, decisions, dead letters) go through
    the producer's partitioner one record at a time; aiokafka's is a Python
    loop over the key's bytes. Same partitions: ``murmur2(key) & 0x7fffffff``
    modulo the number of partitions, indexing the sorted partition list;
    a record without a key goes to a random available partition.

    Examples
    --------
    >>> from aiokafka.partitioner import DefaultPartitioner
    >>> p, keys = KeyPartitioner(), [f"user:{i}".encode() for i in range(200)]
    >>> [p(k, [0, 1, 2, 3, 4], [0, 1]) for k in keys] == [
    ...     DefaultPartitioner()(k, [0, 1, 2, 3, 4], [0, 1]) for k in keys]
    True
    """

    def __init__(self) -> None:
        compiled = _native_function("murmur2")
        self._murmur2: Callable[[bytes], int] = compiled if compiled is not None else murmur2

    def __call__(self, key: bytes | None, all_partitions: list[int],
                 available: list[int]) -> int:
        """Return the partition for ``key`` among ``all_partitions`` (sorted by id)."""
        if key is None:
            chosen: int = DefaultPartitioner()(key, all_partitions, available)
            return chosen
        return self.place(key, all_partitions)

    def place(self, key: bytes, all_partitions: list[int]) -> int:
        """Return the partition of a non-null ``key``, as ``self(key, all_partitions, _)``.

        The availability list plays no part for a key, so callers that
        place many records read the topic's partitions once (see
        ``KeyedBatches``).
        """
        return all_partitions[(self._murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]


def _native_function(name: str) -> Any:
    """Return the compiled function ``name``, or None when the module is not built or stale."""
    try:
        module = native.load()
    except native.NativeStale:  # the worker's Detector reports a stale build
        return None
    return getattr(module, name, None) if module is not None else None


_partition_kernel: Final[Callable[[str, int], int] | None] = _native_function("partition_for")
_entity_routes_kernel: Final[Any] = _native_function("entity_routes")
_fresh_kernel: Final[Any] = _native_function("fresh_split")
_rerouted_kernel: Final[Any] = _native_function("rerouted")


def _compiled_codec() -> Any:
    """Return the compiled codec of internal records (``RoutedCodec``), or None when not built."""
    codec, kernels = _native_function("RoutedCodec"), _native_function("ParseKernels")
    if codec is None or kernels is None:
        return None
    return codec(sys.modules[__name__], kernels(sys.modules[Event.__module__]))


_decode_kernel: Callable[[bytes], list[Routed] | None] | None = None
_encode_kernel: Callable[[Routed], bytes | None] | None = None


def use_native_codec(enabled: bool) -> bool:
    """Encode and decode internal records with the compiled codec, or in Python only.

    For tests and benchmarks that compare the two (on at import when the
    module is built). Returns True when the compiled codec is in use.
    """
    global _decode_kernel, _encode_kernel
    codec = _compiled_codec() if enabled else None
    _decode_kernel = codec.decode if codec is not None else None
    _encode_kernel = codec.encode if codec is not None else None
    return codec is not None


use_native_codec(True)

#: What an engine call can raise (a kernel panic included): see run_isolated.
_ENGINE_FAULTS: Final = native.engine_faults()


def pack(
    routed: Sequence[tuple[str, Routed]], partitions: int, max_bytes: int = MAX_RECORD_BYTES
) -> list[tuple[int, bytes]]:
    """Group keyed events by destination partition into internal records.

    Returns ``(partition, record)`` pairs. Events keep their relative order
    within a partition (and so within a key); a partition's events are split
    over several records when one would exceed ``max_bytes``.

    Examples
    --------
    >>> e = parse_event(b'{"kind":"auth","ts":5,"user":"ana"}')
    >>> out = pack([("a", Routed(e, Source("in", 0, 1))), ("a", Routed(e, Source("in", 0, 2)))], 4)
    >>> len(out), [r.origin.offset for r in decode_records(out[0][1])]
    (1, [1, 2])
    """
    groups: dict[int, list[bytes]] = {}
    encode = _encode_kernel
    for key, r in routed:
        # The compiled encoder (native/src/codec.rs) writes the same JSON
        # values; None at any doubt, and then orjson does.
        part = encode(r) if encode is not None else None
        if part is None:
            part = orjson.dumps(r._wire())
        groups.setdefault(partition_for(key, partitions), []).append(part)
    out: list[tuple[int, bytes]] = []
    for partition, parts in groups.items():
        chunk: list[bytes] = []
        size = 0
        for part in parts:
            if chunk and size + len(part) > max_bytes:
                out.append((partition, _records(chunk)))
                chunk, size = [], 0
            chunk.append(part)
            size += len(part) + 1
        out.append((partition, _records(chunk)))
    return out


def _records(parts: list[bytes]) -> bytes:
    # The same bytes encode_records() writes, from events encoded once.
    return b'{"v":%d,"r":[' % ROUTED_BATCH_VERSION + b",".join(parts) + b"]}"


# ------------------------------------------------------------------------ keys


def ip_key(event: Event) -> str:
    """Return the key of the per-IP stage: the source IP of an auth event, else the entity.

    Only authentication events with a source IP touch IP context, so other
    events are keyed by entity (spreading load, keeping entity locality).
    """
    if event.kind is EventKind.AUTH and event.src_ip is not None:
        return event.src_ip
    return event.entity_key


def session_key(event: Event) -> str:
    """Return the key of the per-session stage: the session id of an auth event, else the entity."""
    if event.kind is EventKind.AUTH and event.session_id is not None:
        return event.session_id
    return event.entity_key


# ----------------------------------------------------------------------- stages


def parse_stage(
    messages: Sequence[tuple[bytes | None, Source]],
    record_ms: Sequence[int | None] | None = None,
    max_future_ms: int | None = None,
    route: bool = True,
) -> tuple[list[tuple[str, Routed]], list[DeadLetter]]:
    """Validate raw input messages; return (key, routed) per accepted event, and rejects.

    The key is the IP stage's (:func:`ip_key`); without ``route`` (the
    fused stages: nothing is forwarded) it is ``""``, not computed.

    With ``record_ms`` (each message's Kafka record timestamp) and
    ``max_future_ms``, an event whose time is more than ``max_future_ms``
    after its record's timestamp is rejected as ``bad_time``: one
    far-future event would otherwise anchor or silence its entity's
    baseline (docs/time-and-ordering.md). The record timestamp is data
    from the broker (LogAppendTime) or the producer (CreateTime), never the
    worker's clock, so the decision is replayable.

    Examples
    --------
    >>> ok, bad = parse_stage([(b'{"kind":"auth","ts":1,"user":"a"}', Source("t", 0, 0)),
    ...                        (b"nope", Source("t", 0, 1))])
    >>> [k for k, _ in ok], [d.reason for d in bad]
    (['user:a'], ['not_json'])
    >>> ok, bad = parse_stage([(b'{"kind":"auth","ts":9000000,"user":"a"}', Source("t", 0, 2))],
    ...                       record_ms=[1000], max_future_ms=60_000)
    >>> ok, [d.reason for d in bad]
    ([], ['bad_time'])
    """
    out: list[tuple[str, Routed]] = []
    dead: list[DeadLetter] = []
    datas = [raw if raw is not None else b"" for raw, _ in messages]
    # One call for the batch (the compiled reader over the list), then per message.
    parsed, _ = parse_batch(datas)
    for i, event in enumerate(parsed):
        source = messages[i][1]
        data = datas[i]
        if isinstance(event, ParseError):
            dead.append(DeadLetter(event.reason, event.detail, "parse", source, data))
            continue
        if record_ms is not None and max_future_ms is not None:
            received = record_ms[i]
            if received is not None and received > 0 and event.ts_ms > received + max_future_ms:
                detail = f"event time is more than {max_future_ms // 1000} s after the record's"
                dead.append(DeadLetter("bad_time", detail, "parse", source, data, event.event_id))
                continue
        out.append((ip_key(event) if route else "", _new_routed((event, source, None, None))))
    return out, dead


def decode_routed(
    messages: Sequence[tuple[bytes | None, Source]], stage: str
) -> tuple[list[Routed], list[int], list[DeadLetter]]:
    """Decode internal records; return the events, the index in ``messages`` of each, and rejects.

    A record holds one event (version 1) or several (version 2); a record
    that does not decode is dead-lettered whole.
    """
    items: list[Routed] = []
    index: list[int] = []
    dead: list[DeadLetter] = []
    for i, (raw, source) in enumerate(messages):
        data = raw if raw is not None else b""
        try:
            routed = decode_records(data)
        except ValueError as exc:
            dead.append(DeadLetter(BAD_INTERNAL_RECORD, str(exc), stage, source, data))
            continue
        items += routed
        index += [i] * len(routed)
    return items, index, dead


class OffsetTracker:
    """Notice offsets a stage never received: the next offset expected per partition.

    A consumer reads each partition in order, so within one assignment the
    offsets a stage sees only go up by one (or back, on a redelivery). A
    jump forward means messages were skipped before they reached the stage:
    never silent, the caller counts and logs it. A rebalance may move the
    position anywhere (another worker may have read on), so the caller
    calls :meth:`reset` then. (Transactional producers leave one offset per
    commit marker, which shows up here as a gap of one.)

    Examples
    --------
    >>> t = OffsetTracker()
    >>> [t.observe(Source("in", 0, o)) for o in (5, 6, 6, 9, 10)]
    [0, 0, 0, 2, 0]
    """

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next: dict[tuple[str, int], int] = {}

    def observe(self, source: Source) -> int:
        """Record a received offset; return how many offsets were skipped before it."""
        tp = (source.topic, source.partition)
        expected = self._next.get(tp)
        self._next[tp] = source.offset + 1
        if expected is None or source.offset <= expected:
            return 0
        return source.offset - expected

    def observe_all(self, sources: Sequence[Source]) -> list[tuple[Source, int]]:
        """Record received offsets in order; return each one that skipped some, with how many.

        The same as :meth:`observe` on each, in one call per batch.

        Examples
        --------
        >>> gaps = OffsetTracker().observe_all([Source("in", 0, o) for o in (5, 6, 9, 9, 12)])
        >>> [(s.offset, skipped) for s, skipped in gaps]
        [(9, 2), (12, 2)]
        """
        expected_by_tp = self._next
        gaps: list[tuple[Source, int]] = []
        for source in sources:
            topic, partition, offset = source
            tp = (topic, partition)
            expected = expected_by_tp.get(tp)
            expected_by_tp[tp] = offset + 1
            if expected is not None and offset > expected:
                gaps.append((source, offset - expected))
        return gaps

    def reset(self) -> None:
        """Forget every position (after a rebalance)."""
        self._next.clear()


# ------------------------------------------------------------------ idempotence


class Applied:
    """Which events one key's state already holds, by their origin coordinates.

    A redelivered event (same input topic, partition and offset) that is
    already in the state must be skipped, not learned twice. Every hop reads
    its partitions in order and forwards in order, so the events of one key
    that came from one origin partition along one *path* (the same
    upstream partitions at every hop) arrive in origin-offset order, and a
    redelivered copy travels the same path as its original, after it. Hence
    one number per (origin partition, path) decides exactly: the highest
    origin offset applied; an event at or below it is a redelivery. Events
    on different paths (a user's events from two IPs) may overtake each
    other, which is why the path is part of the key.

    The per-IP stage has a single path (it is fed by the parse stage
    directly); the per-entity stage's path is the pair of partitions of the
    event's IP key and session key. When an entry is added, the entries more
    than :data:`APPLIED_WINDOW` offsets below it in its origin partition are
    dropped: a redelivery reaches back only to the last commit, seconds of
    input.

    Examples
    --------
    >>> a = Applied()
    >>> a.seen(Source("in", 0, 7)), a.add(Source("in", 0, 7)), a.seen(Source("in", 0, 7))
    (False, None, True)
    >>> a.seen(Source("in", 0, 5)), a.seen(Source("in", 0, 5), path=3)
    (True, False)
    >>> Applied.from_wire(a.to_wire()).seen(Source("in", 0, 7))
    True
    """

    __slots__ = ("offsets",)

    def __init__(self, offsets: dict[tuple[str, int, int], int] | None = None) -> None:
        self.offsets: dict[tuple[str, int, int], int] = offsets if offsets is not None else {}

    def seen(self, origin: Source, path: int = 0) -> bool:
        """Return True when the event at ``origin``, come along ``path``, was already applied."""
        top = self.offsets.get((origin.topic, origin.partition, path))
        return top is not None and origin.offset <= top

    def add(self, origin: Source, path: int = 0) -> None:
        """Record that the event at ``origin``, come along ``path``, was applied."""
        slot = (origin.topic, origin.partition, path)
        top = self.offsets.get(slot)
        if top is not None:
            if top < origin.offset:
                self.offsets[slot] = origin.offset
            # An entry moved up: the log did not grow, so the window is
            # applied when a slot is added (an entry may outlive its window
            # until then; it only remembers more). Scanning every entry per
            # event was 2-3 % of a draining worker's CPU.
            return
        self.offsets[slot] = origin.offset
        if len(self.offsets) > 1:
            floor = origin.offset - APPLIED_WINDOW
            stale = [k for k, o in self.offsets.items()
                     if o < floor and k[:2] == slot[:2]]
            for k in stale:
                del self.offsets[k]

    def to_wire(self) -> list[list[Any]]:
        """Return a JSON-ready ``[[topic, partition, path, offset], ...]``."""
        return [[t, p, path, o] for (t, p, path), o in sorted(self.offsets.items())]

    @classmethod
    def from_wire(cls, data: Any) -> Applied:
        """Rebuild from :meth:`to_wire` output; raises ``ValueError`` when malformed."""
        try:
            return cls({(str(t), int(p), int(path)): int(o) for t, p, path, o in data})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed applied log: {type(exc).__name__}") from exc


class StageResult(NamedTuple):
    """What a stateful stage computed for one batch."""

    #: Stage outputs, in input order, for the events that were not duplicates.
    out: list[Any]
    #: Every key whose stored value must be written back, with its state.
    changed: dict[str, Any]
    #: Events skipped because their state already held them (redeliveries).
    duplicates: list[Routed]


def _fresh(
    items: Sequence[Routed],
    keys: Sequence[str | None],
    applied: dict[str, Applied] | None,
    paths: Sequence[int] | None = None,
) -> tuple[list[Routed], list[Routed], set[str]]:
    """Split ``items`` into new events and redeliveries; mark the new ones applied.

    ``keys[i]`` is the state key of ``items[i]`` (None: no state, always
    new) and ``paths[i]`` its path (0 when ``paths`` is None).
    """
    if applied is None:
        return list(items), [], set()
    if _fresh_kernel is not None and type(applied) is dict:
        # The compiled loop (native/src/applied.rs): the same checks and
        # updates, without two Python method calls per event (4-5 % of a
        # draining worker's CPU). None when an item is not a Routed.
        split: tuple[list[Routed], list[Routed], set[str]] | None = _fresh_kernel(
            items if type(items) is list else list(items),
            keys if type(keys) is list else list(keys),
            applied,
            None if paths is None else paths if type(paths) is list else list(paths),
            Applied, Routed, Source)
        if split is not None:
            return split
    fresh: list[Routed] = []
    dups: list[Routed] = []
    touched: set[str] = set()
    for i, r in enumerate(items):
        key = keys[i]
        if key is None:
            fresh.append(r)
            continue
        log = applied.get(key)
        if log is None:
            log = applied[key] = Applied()
        path = paths[i] if paths is not None else 0
        if log.seen(r.origin, path):
            dups.append(r)
            continue
        log.add(r.origin, path)
        touched.add(key)
        fresh.append(r)
    return fresh, dups, touched


def entity_path(event: Event, partitions: int) -> int:
    """Return the path of ``event`` to the per-entity stage: its IP and session partitions."""
    return (
        partition_for(ip_key(event), partitions) * partitions
        + partition_for(session_key(event), partitions)
    )


def entity_routes(events: Sequence[Event], partitions: int) -> tuple[list[str], list[int]]:
    """Return each event's entity key (``entity_key``) and path (:func:`entity_path`).

    The compiled kernel (``native/src/kafka.rs``) computes both in one pass
    over the event tuples: per event, a Python property and two partition
    calls were 5-6 % of a draining worker's CPU. It declines (None) any
    item that is not an event with string keys; those go the Python way.

    Examples
    --------
    >>> from detector.events import parse_event
    >>> e = parse_event(b'{"kind": "auth", "ts": 1, "user": "ana", "src_ip": "10.0.0.1"}')
    >>> entity_routes([e], 4) == (["user:ana"], [entity_path(e, 4)])
    True
    """
    if _entity_routes_kernel is not None and partitions >= 1:
        routes: tuple[list[str], list[int]] | None = _entity_routes_kernel(
            events if type(events) is list else list(events), EventKind.AUTH, partitions)
        if routes is not None:
            return routes
    return [e.entity_key for e in events], [entity_path(e, partitions) for e in events]


def ip_state_key(event: Event) -> str | None:
    """Return the per-IP state key of ``event``: its source IP, for auth events only.

    Mirrors :meth:`Detector.ip_stats`: only they touch IP context.
    """
    return event.src_ip if event.kind is EventKind.AUTH else None


def ip_state_keys(items: Sequence[Routed]) -> list[str | None]:
    """Return :func:`ip_state_key` of each item's event (one call per batch, not per event)."""
    auth = EventKind.AUTH
    return [r.event.src_ip if r.event.kind is auth else None for r in items]


def session_state_keys(items: Sequence[Routed]) -> list[str | None]:
    """Return :func:`session_state_key` of each item's event."""
    auth = EventKind.AUTH
    return [r.event.session_id if r.event.kind is auth else None for r in items]


def session_state_key(event: Event) -> str | None:
    """Return the per-session state key: the session id, for auth events only."""
    return event.session_id if event.kind is EventKind.AUTH else None


def entity_state_key(event: Event) -> str:
    """Return the per-entity state key (the baseline's key)."""
    return event.entity_key


_ROUTED_IP: Final = Routed._fields.index("ip")
_ROUTED_SESSION_CHANGES: Final = Routed._fields.index("session_changes")


def _with_field(
    items: Sequence[Routed], values: Sequence[Any], index: int, key: str | None
) -> list[tuple[str, Routed]] | None:
    """Return ``(key, item with field index set to value)`` per item, compiled; else None.

    Only for a fixed ``key`` (the fused stages' ``""``: nothing is routed),
    and only when the compiled kernel is built and takes the items (one
    tuple per event, without a Python call; the stages' list comprehensions
    were 3 % of a draining worker's CPU). None tells the caller to build
    them in Python.
    """
    if key is None or _rerouted_kernel is None or len(items) != len(values):
        return None
    out: list[tuple[str, Routed]] | None = _rerouted_kernel(
        Routed, items if type(items) is list else list(items),
        values if type(values) is list else list(values), index, key)
    return out


def ip_stage(
    detector: Detector,
    items: Sequence[Routed],
    ips: dict[str, IpContext],
    applied: dict[str, Applied] | None = None,
    route: bool = True,
    keys: Sequence[str | None] | None = None,
) -> StageResult:
    """Advance per-IP context; return (session key, routed) per new item and changed states.

    ``ips`` holds the stored context of every source IP in the batch (absent
    when new); it is updated in place. With ``applied`` (each IP's applied
    log, updated in place), redelivered events already in their IP's context
    are skipped. Without ``route`` (the fused stages: nothing is forwarded)
    the session key of each output is ``""``, not computed. ``keys`` is
    :func:`ip_state_keys` of ``items``, when the caller has it.
    """
    before = dict(ips)
    if applied is not None and keys is None:
        keys = ip_state_keys(items)
    fresh, dups, touched = _fresh(items, keys if keys is not None else (), applied)
    stats = detector.ip_stats([r.event for r in fresh], ips)
    out = _with_field(fresh, stats, _ROUTED_IP, None if route else "")
    if out is None:
        # A new Routed rather than dataclasses.replace (a third of the cost
        # per event); every field is given, so a new field of Routed must be
        # added here (and in parse_stage and session_stage).
        out = [(session_key(r.event) if route else "",
                _new_routed((r.event, r.origin, s, r.session_changes)))
               for r, s in zip(fresh, stats, strict=True)]
    changed = _changed(before, ips)
    changed.update((k, ips[k]) for k in touched if k in ips)
    return StageResult(out, changed, dups)


def session_stage(
    detector: Detector, items: Sequence[Routed], sessions: dict[str, SessionContext],
    route: bool = True,
) -> StageResult:
    """Advance per-session context; return (entity key, routed) per item, changed contexts.

    No applied log: a session's context only changes when an event opens
    (or, after expiry, reopens) it, so applying a redelivered event again
    gives the same changes and leaves the context as it was. Without
    ``route`` the entity key of each output is ``""``, as in :func:`ip_stage`.
    """
    before = dict(sessions)
    changes = detector.session_changes([r.event for r in items], sessions)
    out = _with_field(items, changes, _ROUTED_SESSION_CHANGES, None if route else "")
    if out is None:
        out = [
            (r.event.entity_key if route else "", _new_routed((r.event, r.origin, r.ip, c)))
            for r, c in zip(items, changes, strict=True)
        ]
    return StageResult(out, _changed(before, sessions), [])


def entity_stage(
    detector: Detector,
    items: Sequence[Routed],
    baselines: dict[str, Any],
    applied: dict[str, Applied] | None = None,
    partitions: int = 1,
    routes: tuple[Sequence[str], Sequence[int]] | None = None,
) -> StageResult:
    """Decide every new item against its entity's baseline; return decisions, new baselines.

    ``baselines`` holds the stored baseline of every entity in the batch
    (absent when new); it is updated in place. With the compiled engine the
    new baselines are ``HeldBaseline`` objects (Rust-held, see ``native/src/blmap.rs``:
    ``to_dict()``, ``to_baseline()``), which the next batch takes as they
    are; a ``Baseline`` is taken too. With ``applied`` (each
    entity's applied log, updated in place), redelivered events already
    learned by their baseline are skipped: no second decision, no second
    learning. ``partitions`` is the internal topics' partition count (it
    defines the paths, see :class:`Applied`). ``routes`` is
    ``entity_routes`` of the items' events, when the caller has it.
    """
    before = dict(baselines)
    fresh_keys: Sequence[str] | None = None  # the keys of `fresh`, when known
    fresh: list[Routed]
    dups: list[Routed] = []
    touched: set[str] = set()
    if applied is None:
        fresh = list(items)
        fresh_keys = routes[0] if routes is not None else None
    else:
        keys, paths = (routes if routes is not None
                       else entity_routes([r.event for r in items], partitions))
        fresh, dups, touched = _fresh(items, keys, applied, paths)
        fresh_keys = keys if not dups else None
    contexts = detector.combine_context(
        [r.ip for r in fresh], [r.session_changes for r in fresh]
    )
    events = [r.event for r in fresh]
    state = detector.new_state()
    held: Any = state.baselines
    if type(held) is dict:  # the pure-Python engine: it updates the given dict
        state = EngineState(baselines=baselines)
        decisions = detector.process(events, state, contexts=contexts)
    else:
        # The compiled engine's own table (Detector.new_state): each baseline
        # of the batch enters it once, every event updates it in place, and
        # it leaves once. On a plain dict the engine would build a new
        # Baseline object per event instead (a quarter of a fused worker's
        # CPU, docs/streaming.md). Same decisions either way.
        #
        # A baseline leaves as a HeldBaseline, still Rust (moved out of the
        # table, no Python object built), and the worker holds it so until
        # it writes it: the key's next batch takes it back by a Rust clone.
        # Only baselines read from the store enter as Python Baselines, and
        # are converted.
        batch_keys = (set(fresh_keys) if fresh_keys is not None
                      else {e.entity_key for e in events})
        held.update({k: baselines[k] for k in batch_keys if k in baselines})
        decisions = detector.process(events, state, contexts=contexts)
        pop_held = held.pop_held
        for k in batch_keys:
            baselines[k] = pop_held(k)
    changed = _changed(before, baselines)
    changed.update((k, baselines[k]) for k in touched if k in baselines)
    return StageResult(decisions, changed, dups)


def run_isolated(
    run: Callable[[Sequence[Routed], dict[str, Any], dict[str, Applied] | None], StageResult],
    items: Sequence[Routed],
    states: dict[str, Any],
    applied: dict[str, Applied] | None,
    key_of: Callable[[Event], str | None],
) -> tuple[StageResult, list[tuple[int, BaseException]]]:
    """Run a stage on a batch; when it raises, isolate the events that make it raise.

    The engine raising is a bug, but one poison event must not take its
    batch's good events down with it. The batch is first run whole. If that
    raises, the states and applied logs are restored and the events are run
    one at a time, in order (a batch decides exactly as its events one at a
    time); an event that raises leaves its key's state as it was.

    Returns the combined result and the ``(index in items, exception)`` of
    every event that raised.
    """
    states_before = dict(states)
    logs_before = None if applied is None else {k: dict(v.offsets) for k, v in applied.items()}
    try:
        return run(items, states, applied), []
    except _ENGINE_FAULTS:  # isolated below; the caller reports each failure
        pass
    states.clear()
    states.update(states_before)
    if applied is not None and logs_before is not None:
        applied.clear()
        applied.update({k: Applied(dict(o)) for k, o in logs_before.items()})
    out: list[Any] = []
    changed: dict[str, Any] = {}
    dups: list[Routed] = []
    failures: list[tuple[int, BaseException]] = []
    for i, item in enumerate(items):
        key = key_of(item.event)
        had_state, state = (key in states, states.get(key)) if key is not None else (False, None)
        log = applied.get(key) if applied is not None and key is not None else None
        saved_log = dict(log.offsets) if log is not None else None
        try:
            result = run([item], states, applied)
        except _ENGINE_FAULTS as exc:  # reported by the caller
            failures.append((i, exc))
            if key is not None:
                if had_state:
                    states[key] = state
                else:
                    states.pop(key, None)
                if applied is not None:
                    if saved_log is None:
                        applied.pop(key, None)
                    else:
                        applied[key] = Applied(saved_log)
            continue
        out += result.out
        changed.update(result.changed)
        dups += result.duplicates
    return StageResult(out, changed, dups), failures


def _changed(before: Mapping[str, T], after: Mapping[str, T]) -> dict[str, T]:
    # State values are immutable: a key changed iff it now holds another object.
    return {k: v for k, v in after.items() if before.get(k) is not v}


# ------------------------------------------------------------------ state codec


class StoredState(Protocol):
    """A stage's state: ``Baseline`` (or ``HeldBaseline``), ``IpContext``, ``SessionContext``."""

    def to_dict(self) -> dict[str, Any]:
        """Return the state's versioned dict (what :func:`encode_state` stores)."""
        ...


#: The compiled engine's Rust-held baseline type (``native/src/blmap.rs``), if built.
_HELD_BASELINE: Final[type | None] = _native_function("HeldBaseline")


def encode_state(value: StoredState, applied: Applied | None = None) -> bytes:
    """Return a table value: the state's versioned dict (plus its applied log) as JSON bytes."""
    if _HELD_BASELINE is not None and type(value) is _HELD_BASELINE:
        # Written from the Rust value (the same document as below, held to it
        # by tests/test_native_bljson.py): ~150 µs a baseline less than
        # building its Python Baseline and dict, the bulk of a state write.
        raw: bytes | None = value.to_json()  # type: ignore[attr-defined]
        if raw is not None:
            if applied is not None and applied.offsets:
                return b"".join((raw[:-1], b',"', _APPLIED_FIELD.encode(), b'":',
                                 orjson.dumps(applied.to_wire()), b"}"))
            return raw
    data = value.to_dict()
    if applied is not None and applied.offsets:
        data[_APPLIED_FIELD] = applied.to_wire()
    return orjson.dumps(data)


def load_states(
    keys: Iterable[str],
    get: Callable[[str], bytes | None],
    decode: Callable[[Mapping[str, Any]], T],
    applied: dict[str, Applied] | None = None,
) -> tuple[dict[str, T], list[str]]:
    """Read and decode the stored state of ``keys``; return it and the unreadable keys.

    A stored value that does not decode (corrupt, or a schema version this
    build does not know) is left out, so the key restarts from empty state
    and is overwritten; the caller counts and logs it. When ``applied`` is
    given, each key's applied log is read into it too.

    Examples
    --------
    >>> store = {"a": encode_state(IpContext(((1, "u", False),))), "b": b"{"}
    >>> states, bad = load_states(["a", "b", "c"], store.get, IpContext.from_dict)
    >>> sorted(states), bad
    (['a'], ['b'])
    """
    states: dict[str, T] = {}
    bad: list[str] = []
    for key in keys:
        raw = get(key)
        if raw is None:
            continue
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            log = data.pop(_APPLIED_FIELD, None)
            states[key] = decode(data)
            if applied is not None and log is not None:
                applied[key] = Applied.from_wire(log)
        except (orjson.JSONDecodeError, ValueError):
            bad.append(key)
    return states, bad
