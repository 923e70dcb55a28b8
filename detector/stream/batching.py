"""Micro-batches that close as soon as the stream is drained (``take_drained``).

Faust's ``Stream.take_events(max_, within)`` closes a batch only when it is
full or when ``within`` seconds have passed since the *previous* batch was
handed on, even if every event that had arrived was already in the buffer.
With four stages in a row, an idle worker therefore holds every event for
up to a whole window at each hop; worse, the stages' windows phase-lock
(each restarts right after its batch, and the next stage's input arrives
right after that), so an event commonly waits most of a window at every hop
(measured: p50 about 180 ms per hop at 20 events/s with a 200 ms window,
720 ms end to end; see docs/streaming.md, "Latency").

:func:`take_drained` keeps Faust's buffering, acking and back-pressure, and
changes only when a batch closes: when it holds ``max_`` events, when
``within`` seconds have passed since its *first* event arrived, or when no
event arrived for ``idle`` seconds while the event loop was free to deliver
one (the stream is drained). Under a backlog, or while the loop is busy with
other stages' batches, batches still fill to ``max_`` or ``within``; on a
live feed with CPU to spare, an event waits about ``idle`` at a hop instead
of up to ``within``.

No ``faust`` import: the stream is used through the methods and attributes
``Stream.take_events`` itself uses (``add_processor``, ``_enable_passive``,
``current_event``, ``enable_acks``, ``ack``, ``wait_for_stopped``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any


async def take_drained(
    stream: Any, max_: int, within: float, idle: float
) -> AsyncGenerator[Sequence[Any], None]:
    """Yield the stream's events in batches, acking each batch after its consumer is done.

    A batch closes when it holds ``max_`` events, ``within`` seconds after
    its first event arrived, or once no event arrived for ``idle`` seconds.
    Like ``take_events``, the events of a batch are acked only when the
    consumer asks for the next batch (or leaves the loop), so offsets are
    never committed past an event whose batch is not finished.

    Yields
    ------
    list of Faust events, in arrival order, 1 to ``max_`` of them.
    """
    if max_ < 1 or within <= 0 or idle <= 0:
        raise ValueError("max_ >= 1, within > 0 and idle > 0 are required")
    loop = asyncio.get_running_loop()
    events: list[Any] = []
    full = asyncio.Event()
    arrived = asyncio.Event()
    consumed = asyncio.Event()
    consuming: asyncio.Future[None] | None = None
    first_at = 0.0
    enable_acks: bool = stream.enable_acks

    async def add(value: Any) -> Any:
        # A processor of the stream's passive iteration: runs once per event.
        nonlocal consuming, first_at
        try:
            if consuming is not None:
                # A batch is being processed: hold this event until it is done.
                try:
                    await consuming
                finally:
                    consuming = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("take buffer found current_event is None")
            if not events:
                first_at = loop.time()
            events.append(event)
            arrived.set()
            if len(events) >= max_:
                full.set()
                consumed.clear()
                # Never more than max_ events in a batch: wait until it is taken.
                await stream.wait(consumed)
        except asyncio.CancelledError:  # pragma: no cover
            raise
        except Exception as exc:  # noqa: BLE001 (as take_events: crash the stream)
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    # The batch's events are acked here, after the consumer is done with them.
    stream.enable_acks = False
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            if not events:
                arrived.clear()
                # Poll the stop flag at least every second while idle.
                await stream.wait_for_stopped(arrived, timeout=1.0)
                continue
            # Fill until full, drained (no arrival for `idle`) or `within` after the first.
            while not full.is_set():
                started = loop.time()
                left = first_at + within - started
                if left <= 0:
                    break
                seen = len(events)
                wait = min(idle, left)
                await stream.wait_for_stopped(full, timeout=wait)
                if stream.should_stop:
                    break
                # Drained only if nothing arrived while the loop was free to
                # deliver it: a wake-up late by more than `idle` means other
                # work held the loop (another stage's batch), and events
                # fetched meanwhile are not in the buffer yet. Closing then
                # would make ever smaller batches under load (more CPU per
                # event, a growing backlog); wait again instead.
                if len(events) == seen and loop.time() - started <= wait + idle:
                    break
            consuming = loop.create_future()
            try:
                yield list(events)
            finally:
                batch = list(events)
                events.clear()
                for event in batch:
                    await stream.ack(event)
                if not consuming.done():
                    consuming.set_result(None)
                full.clear()
                consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add)
