"""Replay event files through the engine: the broker-free path.

``detector replay`` reads JSONL files in order, parses each line with the one
parser, runs accepted events through :class:`~detector.engine.Detector` in
batches, and writes one decision per accepted event, in input order. Rejected
lines go to a rejects file with their reason code, never silently dropped.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from operator import attrgetter
from pathlib import Path
from typing import IO, Any, Final, cast

import orjson

from detector.engine import Decision, Detector, EngineState, decision_json
from detector.events import Event, ParseError, accepted_events, parse_batch, parse_event

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reject:
    """A rejected input line: where it came from and why (never its content)."""

    source: str
    line: int
    reason: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """Return the rejects-file record."""
        return {
            "source": self.source,
            "line": self.line,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass
class ReplayStats:
    """Counts of one replay: in = accepted + rejected."""

    lines: int = 0
    accepted: int = 0
    rejected: int = 0
    reject_reasons: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    signals: int = 0
    seconds: float = 0.0


def iter_lines(paths: Sequence[Path]) -> Iterator[tuple[str, int, bytes]]:
    """Yield (source name, 1-based line number, raw line) for every non-blank line."""
    for path in paths:
        with path.open("rb") as fh:
            for n, line in enumerate(fh, start=1):
                raw = line.rstrip(b"\r\n")
                if raw.strip():
                    yield (str(path), n, raw)


def parse_lines(
    lines: Iterable[tuple[str, int, bytes]],
) -> Iterator[Event | Reject]:
    """Parse raw lines, yielding an :class:`Event` or a :class:`Reject` for each."""
    for source, n, raw in lines:
        try:
            yield parse_event(raw)
        except ParseError as exc:
            yield Reject(source, n, exc.reason, exc.detail)


def event_batches(
    lines: Iterable[tuple[str, int, bytes]],
    batch_size: int,
    on_reject: Callable[[Reject], None],
    on_chunk: Callable[[int], None] | None = None,
) -> Iterator[list[Event]]:
    """Parse raw lines ``batch_size`` at a time; yield each chunk's accepted events.

    What :func:`parse_lines` then :func:`batched_events` give, with one
    :func:`~detector.events.parse_batch` call per chunk instead of Python
    steps per line. A chunk's rejects go to ``on_reject`` (in order) before
    its events are yielded; a batch holds up to ``batch_size`` events, fewer
    where lines were rejected (decisions do not depend on batch sizes).
    ``on_chunk`` is told each chunk's number of lines.
    """
    it = iter(lines)
    while chunk := list(islice(it, batch_size)):
        if on_chunk is not None:
            on_chunk(len(chunk))
        parsed, rejected = parse_batch([raw for _, _, raw in chunk])
        if rejected:
            for i in rejected:
                source, n, _ = chunk[i]
                exc = cast(ParseError, parsed[i])
                on_reject(Reject(source, n, exc.reason, exc.detail))
        events = accepted_events(parsed, rejected)
        if events:
            yield events


def batched_events(
    items: Iterable[Event | Reject], batch_size: int, on_reject: Callable[[Reject], None]
) -> Iterator[list[Event]]:
    """Group parsed items into event batches, handing rejects to ``on_reject``."""
    batch: list[Event] = []
    for item in items:
        if isinstance(item, Reject):
            on_reject(item)
            continue
        batch.append(item)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


_action_of: Final = attrgetter("action")
_signal_of: Final = attrgetter("signal_id")


def replay(
    detector: Detector,
    paths: Sequence[Path],
    decisions_out: IO[bytes] | None,
    rejects_out: IO[bytes] | None,
    batch_size: int = 1000,
    state: EngineState | None = None,
    on_batch: Callable[[list[Decision]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayStats:
    """Replay JSONL files through ``detector``; return the counts.

    Parameters
    ----------
    detector : the engine
    paths : event files, processed in order
    decisions_out : binary stream for one JSON decision per accepted event
    rejects_out : binary stream for one JSON reject record per rejected line
    batch_size : events per engine call (decisions do not depend on it)
    state : starting state (fresh when None); holds the final state afterwards
    on_batch : called with each batch's decisions (the demo's live view)
    progress : called with the number of lines consumed so far

    Returns
    -------
    ReplayStats
    """
    import time

    stats = ReplayStats()
    state = state if state is not None else detector.new_state()

    def on_reject(r: Reject) -> None:
        stats.rejected += 1
        stats.reject_reasons[r.reason] += 1
        logger.debug("reject source=%s line=%d reason=%s", r.source, r.line, r.reason)
        if rejects_out is not None:
            rejects_out.write(orjson.dumps(r.to_dict()) + b"\n")

    def counted(n: int) -> None:
        before = stats.lines
        stats.lines += n
        if progress is not None and stats.lines // 10_000 > before // 10_000:
            progress(stats.lines)

    started = time.perf_counter()
    for batch in event_batches(iter_lines(paths), batch_size, on_reject, counted):
        decisions = detector.process(batch, state)
        stats.accepted += len(decisions)
        for action, k in Counter(map(_action_of, decisions)).items():
            stats.actions[action.value] += k
        stats.signals += len(decisions) - list(map(_signal_of, decisions)).count(None)
        if decisions_out is not None:
            decisions_out.write(b"\n".join(map(decision_json, decisions)) + b"\n")
        if on_batch is not None:
            on_batch(decisions)
    stats.seconds = time.perf_counter() - started
    if progress is not None:
        progress(stats.lines)
    return stats
