"""Publish events to the input topics (kafka-python): ``detector produce``.

:class:`EventProducer` validates every event with the one parser before
sending it, routes it to the authentication or network topic by its kind, and
keys it by entity (``user:alice``), so an entity's events keep their order in
one partition. Rejected input is reported with its reason code and never sent.
The original bytes are sent unchanged: the worker parses exactly what the
producer validated.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from detector.events import Event, EventKind, ParseError, parse_event
from detector.stream.settings import KafkaConnection

logger = logging.getLogger(__name__)


@dataclass
class ProduceStats:
    """Counts of one publishing run: read = sent + rejected."""

    read: int = 0
    sent: int = 0
    rejected: int = 0
    reject_reasons: Counter[str] = field(default_factory=Counter)
    failed: int = 0  # sends the broker did not acknowledge
    by_topic: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready summary."""
        return {
            "read": self.read,
            "sent": self.sent,
            "rejected": self.rejected,
            "reject_reasons": dict(self.reject_reasons),
            "failed": self.failed,
            "by_topic": dict(self.by_topic),
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.sent / self.seconds) if self.seconds else 0,
        }


class EventProducer:
    """Validate events and publish them keyed by entity.

    Parameters
    ----------
    connection : how to reach the brokers
    auth_topic : topic for authentication events
    network_topic : topic for network events (default: ``auth_topic``)
    producer : a ``kafka.KafkaProducer``-like object (tests); built when None
    client_id : Kafka client id

    Examples
    --------
    >>> class Fake:
    ...     def __init__(self): self.sent = []
    ...     def send(self, topic, key, value): self.sent.append((topic, key)); return self
    ...     def add_errback(self, fn): return self
    >>> p = EventProducer(KafkaConnection(), "zt.auth", "zt.network", producer=Fake())
    >>> p.send(b'{"kind":"auth","ts":1,"user":"ana"}').entity_key
    'user:ana'
    >>> p._producer.sent
    [('zt.auth', b'user:ana')]
    """

    def __init__(
        self,
        connection: KafkaConnection,
        auth_topic: str,
        network_topic: str | None = None,
        producer: Any = None,
        client_id: str = "detector-produce",
    ) -> None:
        self.topics = {
            EventKind.AUTH: auth_topic,
            EventKind.NETWORK: network_topic or auth_topic,
        }
        self.failed = 0
        if producer is None:
            from kafka import KafkaProducer

            producer = KafkaProducer(
                client_id=client_id,
                acks="all",
                linger_ms=5,
                retries=5,
                # Ordering per entity survives retries only with one request
                # in flight per connection (or idempotence).
                max_in_flight_requests_per_connection=1,
                **connection.kafka_python_config(),
            )
        self._producer = producer

    def _on_error(self, exc: BaseException) -> None:
        self.failed += 1
        logger.error("send failed error=%s", type(exc).__name__)

    def send(self, raw: bytes) -> Event:
        """Validate ``raw`` and send it; return the parsed event.

        Raises :class:`~detector.events.ParseError` (nothing is sent) when the
        event is invalid.
        """
        event = parse_event(raw)
        future = self._producer.send(
            self.topics[event.kind], key=event.entity_key.encode(), value=raw
        )
        future.add_errback(self._on_error)
        return event

    def flush(self, timeout: float | None = 60.0) -> None:
        """Block until every sent event is acknowledged (or failed)."""
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Flush and close the underlying producer."""
        self._producer.close(timeout=timeout)

    def publish(
        self,
        lines: Iterable[bytes],
        rate: float | None = None,
        progress: Callable[[ProduceStats], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> ProduceStats:
        """Send every valid line at ``rate`` events/s (as fast as possible when None).

        Pacing is by schedule (event ``i`` is due at ``start + i / rate``), so
        the offered rate stays exact on average whatever each send costs.
        """
        stats = ProduceStats()
        started = clock()
        for raw in lines:
            stats.read += 1
            if rate:
                delay = started + stats.sent / rate - clock()
                if delay > 0:
                    sleep(delay)
            try:
                event = self.send(raw)
            except ParseError as exc:
                stats.rejected += 1
                stats.reject_reasons[exc.reason] += 1
                logger.info("reject line=%d reason=%s", stats.read, exc.reason)
                continue
            stats.sent += 1
            stats.by_topic[self.topics[event.kind]] += 1
            if progress is not None and stats.read % 1000 == 0:
                progress(stats)
        self.flush()
        stats.failed = self.failed
        stats.seconds = clock() - started
        if progress is not None:
            progress(stats)
        return stats


def iter_jsonl(paths: Iterable[str]) -> Iterator[bytes]:
    """Yield every non-blank line of JSONL files, without its line ending."""
    for path in paths:
        with open(path, "rb") as fh:
            for line in fh:
                raw = line.rstrip(b"\r\n")
                if raw.strip():
                    yield raw


def iter_generated(users: int, days: int, seed: int, attacks: bool = True) -> Iterator[bytes]:
    """Yield the synthetic generator's OCSF events as JSON bytes, in time order."""
    import orjson

    from detector.generate import GeneratorConfig, generate

    for event, _label in generate(GeneratorConfig(users=users, days=days, seed=seed,
                                                  attacks=attacks)):
        yield orjson.dumps(event)
