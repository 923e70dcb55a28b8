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
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

import orjson

from detector.baseline import Baseline
from detector.context import IpContext, IpStats, SessionContext
from detector.engine import Decision, Detector, EngineState, combine_context
from detector.events import (
    MAX_EVENT_BYTES,
    EntityClass,
    EntityKind,
    Event,
    EventKind,
    ParseError,
    parse_event,
)

ROUTED_VERSION: Final = 1
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
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Source:
    """Coordinates of a Kafka message."""

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


@dataclass(frozen=True, slots=True)
class Routed:
    """A validated event between stages, with the context computed so far."""

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
        ip = self.ip
        return orjson.dumps(
            {
                "v": ROUTED_VERSION,
                "e": list(self.event),  # the fields in Event._fields order
                "o": [self.origin.topic, self.origin.partition, self.origin.offset],
                "i": None if ip is None else [ip.users, ip.failures, ip.fail_users],
                "s": self.session_changes,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> Routed:
        """Decode :meth:`to_bytes` output; raise ``ValueError`` when malformed."""
        try:
            data = orjson.loads(raw)
            if data["v"] != ROUTED_VERSION:
                raise ValueError(f"unsupported routed record version {data['v']!r}")
            fields = data["e"]
            if not isinstance(fields, list) or len(fields) != _N_FIELDS:
                raise ValueError("event field count mismatch")
            fields[_KIND] = EventKind(fields[_KIND])
            fields[_ENTITY_KIND] = EntityKind(fields[_ENTITY_KIND])
            fields[_ENTITY_CLASS] = EntityClass(fields[_ENTITY_CLASS])
            topic, partition, offset = data["o"]
            ip = data["i"]
            changes = data["s"]
            return cls(
                event=Event._make(fields),
                origin=Source(str(topic), int(partition), int(offset)),
                ip=None if ip is None else IpStats(int(ip[0]), int(ip[1]), int(ip[2])),
                session_changes=None
                if changes is None
                else tuple((str(a), str(b), str(c)) for a, b, c in changes),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"malformed routed record: {type(exc).__name__}") from exc


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
) -> tuple[list[tuple[str, Routed]], list[DeadLetter]]:
    """Validate raw input messages; return (key, routed) per accepted event, and rejects.

    Examples
    --------
    >>> ok, bad = parse_stage([(b'{"kind":"auth","ts":1,"user":"a"}', Source("t", 0, 0)),
    ...                        (b"nope", Source("t", 0, 1))])
    >>> [k for k, _ in ok], [d.reason for d in bad]
    (['user:a'], ['not_json'])
    """
    out: list[tuple[str, Routed]] = []
    dead: list[DeadLetter] = []
    for raw, source in messages:
        data = raw if raw is not None else b""
        try:
            event = parse_event(data)
        except ParseError as exc:
            dead.append(DeadLetter(exc.reason, exc.detail, "parse", source, data))
            continue
        out.append((ip_key(event), Routed(event, source)))
    return out, dead


def decode_routed(
    messages: Sequence[tuple[bytes | None, Source]], stage: str
) -> tuple[list[Routed], list[int], list[DeadLetter]]:
    """Decode internal records; return them, the index of each in ``messages``, and rejects."""
    items: list[Routed] = []
    index: list[int] = []
    dead: list[DeadLetter] = []
    for i, (raw, source) in enumerate(messages):
        data = raw if raw is not None else b""
        try:
            items.append(Routed.from_bytes(data))
        except ValueError as exc:
            dead.append(DeadLetter(BAD_INTERNAL_RECORD, str(exc), stage, source, data))
            continue
        index.append(i)
    return items, index, dead


def ip_stage(
    detector: Detector, items: Sequence[Routed], ips: dict[str, IpContext]
) -> tuple[list[tuple[str, Routed]], dict[str, IpContext]]:
    """Advance per-IP context; return (session key, routed) per item and the changed contexts.

    ``ips`` holds the stored context of every source IP in the batch (absent
    when new); it is updated in place.
    """
    before = dict(ips)
    stats = detector.ip_stats([r.event for r in items], ips)
    out = [(session_key(r.event), replace(r, ip=s)) for r, s in zip(items, stats, strict=True)]
    return out, _changed(before, ips)


def session_stage(
    detector: Detector, items: Sequence[Routed], sessions: dict[str, SessionContext]
) -> tuple[list[tuple[str, Routed]], dict[str, SessionContext]]:
    """Advance per-session context; return (entity key, routed) per item, changed contexts."""
    before = dict(sessions)
    changes = detector.session_changes([r.event for r in items], sessions)
    out = [
        (r.event.entity_key, replace(r, session_changes=c))
        for r, c in zip(items, changes, strict=True)
    ]
    return out, _changed(before, sessions)


def entity_stage(
    detector: Detector, items: Sequence[Routed], baselines: dict[str, Baseline]
) -> tuple[list[Decision], dict[str, Baseline]]:
    """Decide every item against its entity's baseline; return decisions and new baselines.

    ``baselines`` holds the stored baseline of every entity in the batch
    (absent when new); it is updated in place.
    """
    before = dict(baselines)
    contexts = combine_context([r.ip for r in items], [r.session_changes for r in items])
    state = EngineState(baselines=baselines)
    decisions = detector.process([r.event for r in items], state, contexts=contexts)
    return decisions, _changed(before, baselines)


def _changed(before: Mapping[str, T], after: Mapping[str, T]) -> dict[str, T]:
    # State values are immutable: a key changed iff it now holds another object.
    return {k: v for k, v in after.items() if before.get(k) is not v}


# ------------------------------------------------------------------ state codec


def encode_state(value: Baseline | IpContext | SessionContext) -> bytes:
    """Return a table value: the state's versioned dict as JSON bytes."""
    return orjson.dumps(value.to_dict())


def load_states(
    keys: Iterable[str],
    get: Callable[[str], bytes | None],
    decode: Callable[[Mapping[str, Any]], T],
) -> tuple[dict[str, T], list[str]]:
    """Read and decode the stored state of ``keys``; return it and the unreadable keys.

    A stored value that does not decode (corrupt, or a schema version this
    build does not know) is left out, so the key restarts from empty state
    and is overwritten; the caller counts and logs it.

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
            states[key] = decode(data)
        except (orjson.JSONDecodeError, ValueError):
            bad.append(key)
    return states, bad
