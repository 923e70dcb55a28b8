"""take_drained: when a micro-batch closes, and that its events are acked only after it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from detector.stream.batching import take_drained

#: Fails a test that hangs (a batch that never closes); never reached when it passes.
HANG_GUARD_S = 20.0


class FakeStream:
    """The part of a Faust ``Stream`` that ``take_events`` and ``take_drained`` use.

    Like Faust's, the passive iteration sets ``current_event``, runs every
    processor per event, and acks only when ``enable_acks`` is on.
    """

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.channel = self  # iterated by _enable_passive
        self.enable_acks = True
        self.current_event: str | None = None
        self._processors: list[Callable[[Any], Awaitable[Any]]] = []
        self.acked: list[str] = []
        self.should_stop = False
        self.log = logging.getLogger("fake-stream")
        self._drainer: asyncio.Task[None] | None = None

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> str:
        return await self.queue.get()

    def add_processor(self, fun: Callable[[Any], Awaitable[Any]]) -> None:
        self._processors.append(fun)

    def _enable_passive(self, channel: Any) -> None:
        async def drain() -> None:
            async for event in channel:
                self.current_event = event
                for p in self._processors:
                    await p(event)
                if self.enable_acks:
                    await self.ack(event)

        self._drainer = asyncio.ensure_future(drain())

    async def ack(self, event: str) -> bool:
        self.acked.append(event)
        return True

    async def wait(self, ev: asyncio.Event) -> None:
        await ev.wait()

    async def wait_for_stopped(self, ev: asyncio.Event, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            pass
        return self.should_stop

    async def crash(self, exc: BaseException) -> None:
        raise exc

    def close(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()


def run(body: Callable[[FakeStream], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        stream = FakeStream()
        try:
            await asyncio.wait_for(body(stream), HANG_GUARD_S)
        finally:
            stream.close()

    asyncio.run(main())


def test_batches_hold_at_most_max_events_in_arrival_order() -> None:
    async def body(stream: FakeStream) -> None:
        for i in range(7):
            stream.queue.put_nowait(f"e{i}")
        got: list[list[str]] = []
        # within and idle far beyond the hang guard: only "full" can close these.
        async for batch in take_drained(stream, 3, within=3600, idle=3600):
            got.append(list(batch))
            if len(got) == 2:
                break
        assert got == [["e0", "e1", "e2"], ["e3", "e4", "e5"]]

    run(body)


def test_a_drained_stream_closes_the_batch_before_the_window() -> None:
    async def body(stream: FakeStream) -> None:
        for i in range(4):
            stream.queue.put_nowait(f"e{i}")
        # A one-hour window: the batch can only close because the stream drained.
        async for batch in take_drained(stream, 500, within=3600, idle=0.01):
            assert list(batch) == ["e0", "e1", "e2", "e3"]
            break

    run(body)


def test_a_continuous_trickle_closes_the_batch_at_the_window() -> None:
    async def body(stream: FakeStream) -> None:
        async def trickle() -> None:
            i = 0
            while True:
                stream.queue.put_nowait(f"e{i}")
                i += 1
                await asyncio.sleep(0.001)

        feeder = asyncio.ensure_future(trickle())
        try:
            # The stream never drains for an hour and never fills 10**9:
            # only the window after the first event can close the batch.
            async for batch in take_drained(stream, 10**9, within=0.05, idle=3600):
                assert batch and batch[0] == "e0"
                break
        finally:
            feeder.cancel()

    run(body)


def test_events_are_acked_only_after_their_batch_is_done() -> None:
    async def body(stream: FakeStream) -> None:
        for i in range(5):
            stream.queue.put_nowait(f"e{i}")
        seen: list[list[str]] = []
        batches = take_drained(stream, 2, within=3600, idle=0.01)
        async for batch in batches:
            # Nothing of this batch is acked while it is processed.
            assert not set(batch) & set(stream.acked)
            await asyncio.sleep(0.02)  # the stream has more events meanwhile
            assert not set(batch) & set(stream.acked)
            seen.append(list(batch))
            if sum(map(len, seen)) == 5:
                break
        assert [e for b in seen for e in b] == [f"e{i}" for i in range(5)]
        # Closing the generator acks the last batch too; Faust's own acks
        # stay off inside the generator and are restored after it.
        assert "e4" not in stream.acked
        await batches.aclose()
        assert sorted(stream.acked) == [f"e{i}" for i in range(5)]
        assert stream.enable_acks is True
        assert stream._processors == []

    run(body)


@pytest.mark.parametrize("args", [(0, 1.0, 0.01), (5, 0.0, 0.01), (5, 1.0, 0.0)])
def test_bounds_are_checked(args: tuple[int, float, float]) -> None:
    async def body(stream: FakeStream) -> None:
        with pytest.raises(ValueError):
            async for _ in take_drained(stream, *args):
                pass

    run(body)


def test_a_busy_loop_is_not_taken_for_a_drained_stream() -> None:
    async def body(stream: FakeStream) -> None:
        stream.queue.put_nowait("e0")

        async def hog_then_feed() -> None:  # noqa: ASYNC251 (the blocking is the point)
            # Another stage's synchronous work holds the loop far beyond
            # `idle`; the next event is only delivered after it.
            await asyncio.sleep(0.01)
            time.sleep(0.2)
            # Delivery takes a few loop iterations (fetch hand-over, conductor,
            # stream queue), which run only after the late timer has fired.
            for _ in range(5):
                await asyncio.sleep(0)
            stream.queue.put_nowait("e1")

        hog = asyncio.ensure_future(hog_then_feed())
        try:
            async for batch in take_drained(stream, 2, within=3600, idle=0.02):
                # Closed by "full" (2 events), not by the idle gap that the
                # blocked loop only appeared to show.
                assert list(batch) == ["e0", "e1"]
                break
        finally:
            await hog

    run(body)
