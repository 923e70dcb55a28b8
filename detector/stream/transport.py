"""Faust's aiokafka transport, with a configurable fetch wait and a consumer that loses nothing.

Registered in Faust's transport registry under the URL scheme
:data:`TRANSPORT_SCHEME`; the worker's broker URLs use it. Kept in its own
module because mode logs a service's lifecycle with the logger of the module
that defines its class (this one is kept at WARNING).

Why the consumer is patched (issue 3/6, "input messages skipped by the
consumer"; faust-streaming 0.15.3, paths under ``site-packages``). Faust
fetches a batch of records on the consumer thread and hands them to the
streams one at a time on the main loop (``Consumer._drain_messages``). When a
rebalance's table recovery ends (``faust/tables/recovery.py:649-660``), it
resumes the input partitions, awaits ``Consumer.perform_seek`` (back to the
committed offsets) while the fetch loop keeps handing records over, then
calls ``app.flow_control.resume()``, which empties every stream's queue
(``mode/utils/queues.py:97-101``). Stock Faust then

1. keeps handing over the rest of the batch fetched *before* the seek:
   nothing marks it stale;
2. takes the jump from the read offset the seek reset to such a stale record
   for a hole in the log (``_add_gap``, ``faust/transport/consumer.py:1209-1215``),
   and counts the offsets in between as acknowledged when it commits
   (``_new_offset``, consumer.py:1113-1128); and
3. writes the read offset of a record handed over across the seek over the
   one the seek set (consumer.py:1220-1223), so the records fetched again
   from the committed offset are dropped as already read (consumer.py:1224-1230).

The records that were still queued when the queues were emptied were thus
never processed, yet committed past: a few consecutive offsets per
partition missing at a stage after a restart (seen on the real broker with
``detector_input_gap_offsets_total`` and the "offset gap" log). The fix:

* a position ledger: every seek Faust makes through the consumer thread
  moves aiokafka's position, sets Faust's read offset and is counted per
  partition in one step under a lock; each fetched batch carries the counts
  of its fetch; :meth:`_Consumer._drain_messages` hands a record over only
  while its partition was not sought since (a sought partition is fetched
  again from its new position, so dropping a stale record loses nothing) and
  keeps the read offset a seek set;
* :meth:`_Consumer.perform_seek` and a hand-over exclude each other (a
  hand-over waiting for flow control, which resumes only after the seek, is
  cancelled instead): a record handed over across the seek could reach a
  queue after it was emptied, ahead of the records fetched again, and a
  stage would take those for redeliveries (``stages.Applied``);
* a partition without a committed offset (a new consumer group) is sought
  back to the first record handed over since its assignment: aiokafka
  leaves it where it is, past the records about to be emptied.

A second leak: Faust's ``getmany`` ends a batch early when flow stops or
the consumer generation changes (``faust/transport/consumer.py:745-756``),
and this loop ends one when a hand-over is cut off by a flow stop. The
records never handed over are behind aiokafka's position; with no seek
after (a new group's partition has no committed offset to go back to, and a
rebalance that leaves a partition in place seeks nothing) the next record
read was taken for a hole in the log and committed past. Seen on the real
broker with two workers starting together: a new group's first records on
an internal topic never processed, consumer lag 0. Each batch's first and
last offset per partition is kept, and after the batch every partition not
sought since is sought back to its first record not dealt with
(:meth:`_Consumer._refetch_unhanded`).

A third, independent leak is closed in :meth:`_Consumer.ack`: a stream
drops a message it dequeues while flow control is suspended or that comes
from an older generation, and acks it although it processed nothing
(``Stream._py_aiter``, ``faust/streams.py:1286-1303`` and 1342-1344). Only a
message a stream took in (``tracked``) counts as processed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final

from aiokafka.errors import IllegalStateError
from faust.transport.consumer import CONSUMER_FETCHING, ensure_TP
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types.tuples import ack_lock
from mode.utils.futures import maybe_async

#: Not this module's logger: that one is kept at WARNING (see the module docstring).
logger = logging.getLogger("detector.stream.positions")

#: A partition as a plain (topic, partition) pair (Faust's TP and aiokafka's
#: TopicPartition are both such tuples).
Partition = tuple[str, int]


class PositionLedger:
    """How many times the fetch position of each partition was moved by a seek.

    The seeks run on the consumer thread, the hand-over on the main loop:
    :attr:`lock` makes "move the position, count it, set the read offset" on
    the one side and "check the count, then use or set the read offset" on the
    other indivisible.

    Examples
    --------
    >>> ledger = PositionLedger()
    >>> stamp = ledger.snapshot()
    >>> ledger.moved([("in", 0)])
    >>> ledger.moved_since(stamp, ("in", 0)), ledger.moved_since(stamp, ("in", 1))
    (True, False)
    """

    __slots__ = ("lock", "_moves")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._moves: dict[Partition, int] = {}

    def moved(self, partitions: Iterable[Partition]) -> None:
        """Record that the position of each of ``partitions`` was just moved."""
        with self.lock:
            for tp in partitions:
                key = (tp[0], tp[1])
                self._moves[key] = self._moves.get(key, 0) + 1

    def snapshot(self) -> dict[Partition, int]:
        """Return the current counts (the stamp of a fetch made now)."""
        with self.lock:
            return dict(self._moves)

    def moved_since(self, stamp: Mapping[Partition, int], tp: Partition) -> bool:
        """Return True when ``tp`` was sought after ``stamp`` was taken."""
        key = (tp[0], tp[1])
        return self._moves.get(key, 0) != stamp.get(key, 0)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread: configured fetch wait, seeks recorded in the ledger.

    Faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500``. A fetch
    is not sent for partitions whose records are still buffered, so a
    partition drained just after a long-poll went out waits for that poll to
    expire: up to 1.5 s per hop, on four hops. The consumer is built by
    Faust, then given the configured wait before it starts.

    Every seek that Faust makes through this thread moves aiokafka's
    position, sets Faust's read offset and counts the move in
    :attr:`positions` in one step under the ledger's lock, and every fetch
    stores :attr:`fetch_stamp` in the step its records come back, so no
    fetch can be stamped on the wrong side of a seek.
    """

    consumer: _Consumer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.positions = PositionLedger()
        self.fetch_stamp: dict[Partition, int] = {}

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "zt_fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = int(wait)  # read by AIOKafkaConsumer.start()
        return consumer

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        records = await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )
        self.fetch_stamp = self.positions.snapshot()  # no await since the records came back
        return records

    async def seek_to_committed(self) -> Mapping[Any, int]:
        """Seek every assigned partition to its committed offset; return those offsets."""
        committed: Mapping[Any, int] = await self.call_thread(self._seek_to_committed)
        return committed

    async def _seek_to_committed(self) -> Mapping[Any, int | None]:
        # aiokafka's seek_to_committed plus the read offsets Faust's
        # perform_seek sets, in one step: the committed offsets are read
        # first, then positions, read offsets and ledger change together.
        # aiokafka leaves a partition without a committed offset where it
        # is, past the records handed over since it was assigned (which the
        # caller is about to empty from the queues): it goes back to the
        # first of them instead.
        consumer = self._ensure_consumer()
        committed = {tp: await consumer.committed(tp) for tp in consumer.assignment()}
        # zt: a partition the group never committed goes back to the start of
        # its log, or to its first record handed over if that is earlier.
        # aiokafka may have set its position long before this seek (reset
        # when it was assigned, or fetched ahead meanwhile) and past records
        # nobody handed over; Faust then has no committed offset to tell a
        # lost first record from the start: one was committed past, never
        # processed (two fused workers, docs/streaming.md "Fused stages").
        fresh = [tp for tp, offset in committed.items() if not (offset and offset > 0)]
        starts: Mapping[Any, int] = await consumer.beginning_offsets(fresh) if fresh else {}
        read_offset = self.consumer._read_offset
        first_read = self.consumer._first_read
        with self.positions.lock:
            moved = []
            for tp, offset in committed.items():
                if offset and offset > 0:
                    target: int | None = offset
                else:
                    known = [o for o in (first_read.get((tp[0], tp[1])), starts.get(tp))
                             if o is not None]
                    target = min(known) if known else None
                if target is not None:
                    try:
                        consumer.seek(tp, target)
                    except IllegalStateError:  # revoked meanwhile: its next owner seeks it
                        continue
                    moved.append(tp)
                read_offset[tp] = offset if offset is not None and offset >= 0 else None
            self.positions.moved(moved)
        return committed

    async def _seek_wait(self, consumer: Any, partitions: Mapping[Any, int]) -> None:
        # Faust's _seek_wait (table recovery), its seeks made under the lock.
        read_offset = self.consumer._read_offset
        with self.positions.lock:
            for tp, offset in partitions.items():
                consumer.seek(tp, offset)
                if offset > 0:
                    read_offset[tp] = offset
                else:
                    read_offset.pop(tp, None)
            self.positions.moved(partitions)
        await asyncio.wait_for(
            asyncio.gather(*[consumer.position(tp) for tp in partitions]),
            timeout=self.app.conf.broker_request_timeout,
        )

    async def refetch(self, targets: Mapping[Partition, int], stamp: Mapping[Partition, int]
                      ) -> None:
        """Seek each partition in ``targets`` back to its offset, unless sought since ``stamp``."""
        await self.call_thread(self._refetch, targets, stamp)

    async def _refetch(self, targets: Mapping[Partition, int],
                       stamp: Mapping[Partition, int]) -> None:
        consumer = self._ensure_consumer()
        assigned = {(tp[0], tp[1]): tp for tp in consumer.assignment()}
        with self.positions.lock:
            for key, offset in targets.items():
                tp = assigned.get(key)
                if tp is None or self.positions.moved_since(stamp, key):
                    continue  # revoked, or sought meanwhile: nothing to fetch again
                try:
                    consumer.seek(tp, offset)
                except IllegalStateError:
                    continue
                self.positions.moved([key])
                logger.info(
                    "records fetched but not handed over, fetched again "
                    "topic=%s partition=%d from_offset=%d", key[0], key[1], offset,
                )

    def seek(self, partition: Any, offset: int) -> None:
        """Seek ``partition`` to ``offset``."""
        with self.positions.lock:
            super().seek(partition, offset)
            self.positions.moved([partition])

    async def seek_to_beginning(self, *partitions: Any) -> None:
        """Seek ``partitions`` to the first available offset."""
        await self.call_thread(self._seek_to_beginning, *partitions)

    async def _seek_to_beginning(self, *partitions: Any) -> None:
        # aiokafka requests the reset before its first await: records fetched
        # before are stale, and none are returned while it is pending.
        self.positions.moved(partitions)
        await self._ensure_consumer().seek_to_beginning(*partitions)


class _LoopConsumerThread(_ConsumerThread):
    """:class:`_ConsumerThread` run as tasks on the worker's own event loop.

    Faust runs its aiokafka consumer in a thread with an event loop of its
    own and reaches it through method queues: every fetch, commit and seek is
    a cross-thread call, and both threads run Python, so they trade the GIL
    (``strace`` of a worker fed 50 events/s: ~6,000 futex calls a second).
    The worker gains nothing from the thread, as its stages never block the
    loop for long (a 500-event batch is a few ms of CPU), so this class keeps
    Faust's consumer service and its lifecycle but runs it on the worker's
    loop: :meth:`call_thread` is a plain call, :meth:`start` runs the
    service's body as a task. Measured (docs/streaming.md): the same drain
    rate, and at 100 events/s live ~15 % less CPU and a 25 % lower p50 per hop.

    The position ledger's lock is then uncontended; its sections hold no
    ``await``, so they stay indivisible on the one loop.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["thread_loop"] = kwargs["loop"]  # the worker's loop; mode then never closes it
        super().__init__(*args, **kwargs)
        self._serving: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Start the consumer service as a task on this loop; return once it runs."""
        # mode's ServiceThread.start, with a task where it starts a thread.
        if self._thread_started.is_set():
            raise RuntimeError("the consumer service is already started")
        self._thread_started.set()
        self._thread_running = self.parent_loop.create_future()
        self._serving = asyncio.ensure_future(self._serve())
        try:
            await self._thread_running
        finally:
            self._thread_running = None

    async def stop(self) -> None:
        """Stop the consumer service and wait for its body to finish."""
        await super().stop()
        if self._serving is not None:
            await asyncio.shield(self._serving)

    async def call_thread(self, fun: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``fun`` here and return its result (awaited if it is awaitable)."""
        return await maybe_async(fun(*args, **kwargs))

    async def cast_thread(self, fun: Any, *args: Any, **kwargs: Any) -> None:
        """Call ``fun`` here (awaited if it is awaitable)."""
        await maybe_async(fun(*args, **kwargs))

    async def _gather_remaining_tasks(self) -> None:
        # mode cancels every task left on the thread's loop when the thread
        # stops; this loop is the worker's, so its tasks are not ours to end.
        # aiokafka's own tasks end with the consumer (on_thread_stop).
        return None


class _Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer that never hands over a record fetched before a seek.

    See the module docstring for the defect. :meth:`_drain_messages` is
    Faust's (faust-streaming 0.15.3) with the changes marked ``zt:``.
    """

    _thread: _ConsumerThread

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch_stamp: dict[Partition, int] = {}
        self._batch_span: dict[Partition, tuple[int, int]] = {}
        # perform_seek and the hand-over of a record exclude each other.
        self._seeks_running = 0
        self._no_seek = asyncio.Event()
        self._no_seek.set()
        self._idle = asyncio.Event()  # no record being handed over
        self._idle.set()
        self._handing_over: asyncio.Future[bool] | None = None
        # The first offset handed over (or tried) per partition since it was assigned.
        self._first_read: dict[Partition, int] = {}

    def _new_consumer_thread(self) -> _ConsumerThread:
        # The worker sets zt_consumer_in_loop from its faust_consumer setting.
        in_loop = getattr(self.app, "zt_consumer_in_loop", False)
        cls = _LoopConsumerThread if in_loop else _ConsumerThread
        return cls(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout: float) -> Any:
        result = await super()._wait_next_records(timeout)
        # The stamp the thread stored when these records came back.
        self._batch_stamp = self._thread.fetch_stamp
        records = result[0]
        # The first and last offset fetched per partition: what the hand-over
        # must account for (see _refetch_unhanded).
        self._batch_span = {
            (tp[0], tp[1]): (recs[0].offset, recs[-1].offset)
            for tp, recs in (records or {}).items() if recs
        }
        return result

    async def perform_seek(self) -> None:
        """Seek every assigned partition to its committed offset.

        No record is handed over meanwhile: the one being handed over is
        let finish first, the next waits. A hand-over spanning the seek could
        put its (stale) record into a stream's queue after the caller empties
        the queues (``flow_control.resume()``), ahead of the records fetched
        again from the committed offset: processed out of order, which the
        stages' redelivery check would take for redeliveries of the earlier
        ones. Faust also set the read offsets here, after the seek came back;
        the thread sets them with the seek.
        """
        self._seeks_running += 1
        self._no_seek.clear()
        try:
            hand_over = self._handing_over
            if hand_over is not None and not self.app.flow_control.is_active():
                # It waits for flow control (Faust's on_message starts with
                # that wait), which the caller resumes only after this seek:
                # waiting for it would deadlock. Cancelled, its record is
                # fetched again from the committed offset. (Our worker has
                # tables: their recovery resumes flow control first.)
                hand_over.cancel()
            await self._idle.wait()
            committed = await self.seek_to_committed()
            self._committed_offset.update(
                {ensure_TP(tp): offset if offset else None for tp, offset in committed.items()
                 if offset is not None}
            )
        finally:
            self._seeks_running -= 1
            if not self._seeks_running:
                self._no_seek.set()

    async def _commit_offsets(self, offsets: Mapping[Any, int],
                              start_new_transaction: bool = True) -> bool:
        """Commit ``offsets`` after the worker's pending state writes; return Faust's result.

        zt: the worker's stages may hold changed states until the next commit
        (``--state-writes commit``): they are written to their tables first,
        then Faust flushes the producer (changelog records included) and
        commits, so no offset is committed before the state that holds it.
        """
        await self._write_pending_states()
        committed: bool = await super()._commit_offsets(offsets, start_new_transaction)
        return committed

    async def _write_pending_states(self) -> None:
        hook = getattr(self.app, "zt_write_pending_states", None)  # set by the worker's build_app
        if hook is not None:
            await hook()

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        """Count the revoked partitions as moved and forget their first read offsets; revoke."""
        # A new assignment starts from the committed (or reset) position:
        # what was fetched before is stale, and a hand-over finishing after
        # this must not record its offset for the next assignment.
        with self._thread.positions.lock:
            for tp in revoked:
                self._first_read.pop((tp[0], tp[1]), None)
            self._thread.positions.moved(revoked)
        # Pending states go to their tables while the tables still hold these
        # partitions (Faust revokes the tables first thing).
        await self._write_pending_states()
        await super().on_partitions_revoked(revoked)

    def ack(self, message: Any) -> bool:
        """Mark ``message`` processed; return True when its offset may be committed.

        A message that no stream took in (a stream sets ``tracked`` when it
        accepts one) was dropped by the stream during a rebalance, and Faust
        acks it regardless: it is marked acked but never made committable.
        """
        if not message.tracked:
            with ack_lock:
                message.acked = True
            return False
        result: bool = super().ack(message)
        return result

    def _record_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        # Faust's _add_gap without its await, so it runs under the ledger lock.
        committed = self._committed_offset[tp]
        if committed is not None:
            offset_from = max(offset_from, committed + 1)
        if offset_from <= offset_to:
            logger.info(
                "offset gap in the log, committed past topic=%s partition=%d "
                "from_offset=%d to_offset=%d", tp[0], tp[1], offset_from, offset_to,
            )
            gaps = self._gap[tp]
            gaps.addi(offset_from, offset_to + 1)
            gaps.merge_overlaps()

    async def _refetch_unhanded(self, handled: Mapping[Partition, int]) -> None:
        """Seek each partition of the last batch back to its first record not dealt with.

        Records of a batch are left unhanded when the hand-over stops early:
        flow suspended (this loop breaks) or Faust's ``getmany`` ending the
        batch when flow stops or the consumer generation changes
        (``faust/transport/consumer.py:747-756``). aiokafka's position is
        already past them, and unless a seek follows for that partition the
        next record read would be taken for a hole in the log
        (:meth:`_record_gap`) and committed past: records lost with no lag.
        A partition sought since its fetch is fetched again from its new
        position already; a revoked one is its next owner's.
        """
        span = self._batch_span
        if not span:
            return
        stamp = self._batch_stamp
        positions = self._thread.positions
        with positions.lock:
            targets = {}
            for tp, (first, last) in span.items():
                done = handled.get(tp)
                if (done is not None and done >= last) or positions.moved_since(stamp, tp):
                    continue
                targets[tp] = first if done is None else done + 1
        if targets:
            await self._thread.refetch(targets, stamp)

    async def _drain_messages(self, fetcher: Any) -> None:
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        positions = self._thread.positions
        lock = positions.lock
        first_read = self._first_read

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    dropped: set[Any] = set()  # partitions with stale records in this batch
                    # zt: the last offset of this batch dealt with per partition
                    # (handed over, or dropped as read or stale).
                    handled: dict[Partition, int] = {}
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        if commit_every is not None:
                            if self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                        if self._seeks_running:
                            # zt: no hand-over while perform_seek runs.
                            await self._no_seek.wait()
                        stamp = self._batch_stamp
                        offset = message.offset
                        with lock:
                            if positions.moved_since(stamp, tp):
                                # zt: fetched before a seek of its partition,
                                # whose new position is fetched again: drop it.
                                if tp not in dropped:
                                    dropped.add(tp)
                                    logger.info(
                                        "records fetched before a seek dropped, fetched "
                                        "again topic=%s partition=%d first_offset=%d",
                                        tp[0], tp[1], offset,
                                    )
                                continue
                            r_offset = get_read_offset(tp)
                            if r_offset is not None and offset < r_offset:
                                self.log.dev("DROPPED MESSAGE ROFF %r", offset)
                                handled[(tp[0], tp[1])] = offset
                                continue
                            if r_offset and offset - r_offset > 1:
                                # zt: a hole in the log (this record and the
                                # one read before come from one position).
                                if acks_enabled_for(message.topic):
                                    self._record_gap(tp, r_offset + 1, offset)
                            # zt: where a seek without a committed offset goes back to.
                            first_read.setdefault((tp[0], tp[1]), offset)
                        hand_over = asyncio.ensure_future(_hand_over(callback, message))
                        self._handing_over = hand_over
                        self._idle.clear()
                        try:
                            await self.wait_first(hand_over, self.suspend_flow.wait())
                            if not hand_over.done():
                                # zt: flow suspended while the record waits to
                                # be taken: it is withdrawn (and fetched again,
                                # below) rather than left to arrive later.
                                hand_over.cancel()
                                await asyncio.wait([hand_over])
                        finally:
                            self._handing_over = None
                            self._idle.set()
                        with lock:
                            if positions.moved_since(stamp, tp):
                                # zt: sought during the hand-over: the read
                                # offset the seek set stands.
                                continue
                            if not (hand_over.done() and not hand_over.cancelled()
                                    and hand_over.result()):
                                # zt: cancelled (flow suspended, or a seek)
                                # before the message reached its stream: not
                                # read; fetched again below unless sought.
                                break
                            set_read_offset(tp, offset)
                            handled[(tp[0], tp[1])] = offset
                    await self._refetch_unhanded(handled)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


async def _hand_over(callback: Any, message: Any) -> bool:
    """Hand ``message`` to its streams; return False when cancelled before it got there.

    Its own task, so that a seek can cancel it without the cancellation
    reaching (and ending) the fetch loop that waits for it.
    """
    try:
        await callback(message)
    except asyncio.CancelledError:
        return False
    return True


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`_Consumer` (and :class:`_ConsumerThread`)."""

    Consumer = _Consumer


#: Broker URL scheme of :class:`Transport` (Faust's registry of transports).
TRANSPORT_SCHEME: Final = "zt-kafka"
TRANSPORTS.aliases[TRANSPORT_SCHEME] = f"{__name__}:Transport"
