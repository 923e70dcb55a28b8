"""Direct ingest: the worker's parse stage reading the input topics with aiokafka.

Faust hands every consumed message through its own machinery one at a time:
a task and a ``wait_first`` per message in the fetch loop, the conductor, the
stream's channel and its processors, the sensors and the acking. Measured on
the local broker (``bench/bench_kafka.py``, the "empty Faust agent" row),
that alone caps an agent that does nothing with its events at about 4,000
events/s, at ~0.22 ms of CPU per event, where a bare aiokafka consumer reads
and JSON-decodes the same topic at ~100,000 events/s. The internal hops do
not pay it per event, because their records are packed (one record per batch
and partition); the input topics, with one event per record, do.

The parse stage is stateless, so it needs none of what Faust adds (tables,
changelogs, co-partitioning). :class:`DirectIngest` reads the input topics
with a plain :class:`aiokafka.AIOKafkaConsumer` in micro-batches
(``getmany``) and runs the very same batch code as the Faust parse agent
(``_Pipeline.parse_messages``): validate, dead-letter the rejects, forward
packed records keyed by source IP to ``<app>-by-ip``, and wait until every
output is acknowledged. Only then are the batch's offsets due for commit, so
delivery stays at least once and the downstream applied logs keep learning
once. It runs inside the Faust worker process as one of the app's services,
on the same event loop and producer; the three stateful stages stay Faust
agents over their tables.

Consumer group: ``<app_id>-ingest`` (Faust's own group, ``<app_id>``, uses
its own assignor, which a plain consumer cannot join). A partition with no
committed offset in that group starts where the app's group committed it,
if it did (:func:`adopt_offsets`: an upgrade from the Faust parse agent
continues where it stopped), else from the earliest offset, as the Faust
agent does.

``--ingest faust`` keeps the Faust parse agent (the design before this
module, and the benchmark's side-by-side row).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, NoReturn

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from mode import Service

from detector.stream import stages
from detector.stream.metrics import OffsetMap
from detector.stream.settings import WorkerSettings
from detector.stream.stages import new_source

logger = logging.getLogger(__name__)

#: How long one ``getmany`` waits when nothing is buffered (s); bounds how
#: soon a stop or a due commit is noticed on an idle topic.
POLL_TIMEOUT_S: Final = 0.2

#: The parse batch: (values, sources, record timestamps in ms) -> awaitable
#: that completes once every output of the batch is acknowledged.
ParseBatch = Callable[
    [Sequence[bytes | None], Sequence[stages.Source], Sequence[int | None]], Awaitable[None]
]
#: Runs one batch to its end (shielded, fail-stop on error): ``worker._complete``.
Complete = Callable[[Awaitable[None]], Awaitable[None]]


def ingest_group(settings: WorkerSettings) -> str:
    """Return the consumer group of the direct ingest of ``settings``' app.

    Examples
    --------
    >>> from detector.stream.settings import WorkerSettings
    >>> ingest_group(WorkerSettings(model_dir="m", app_id="zt"))
    'zt-ingest'
    """
    return f"{settings.app_id}-ingest"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commit before partitions leave."""

    def __init__(self, ingest: DirectIngest) -> None:
        self._ingest = ingest

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._ingest.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Nothing to do: positions come from the group's commits (see ``adopt_offsets``)."""


class DirectIngest(Service):
    """The parse stage on a plain aiokafka consumer (see the module docstring).

    Parameters
    ----------
    settings : the worker's settings (topics, batch bounds, connection)
    parse : the parse batch (``_Pipeline.parse_messages``)
    complete : runs a batch to its end, shielded from cancellation, and
        fail-stops the process if it raises (``worker._complete``)
    on_revoked : called after partitions left (the parse stage forgets
        its expected offsets)
    fail_stop : exits the process without committing (``worker._fail_stop``);
        called if the read loop itself raises, so that the input is never
        left unread by a worker that looks healthy
    app_stopping : True once the app's stop began (the loop leaves then,
        also when the stop began before this service was started)
    max_poll_interval_s, session_timeout_s, heartbeat_interval_s : the
        consumer's group timeouts (the app's broker settings, so a batch in
        back-pressure holds its partitions as long as a Faust agent would)
    before_commit : awaited before every commit of input offsets: with fused
        stages (``--topology fused``) it writes the states the batches
        changed, so that no committed offset is ahead of the state holding
        its event (``_Pipeline.flush_fused``; it fail-stops on failure)
    begin_write : the periodic commit's form of ``before_commit``: called
        between two batches, it sets the changed states aside and returns
        their write (or None); the commit then runs in the background, the
        write first, while the next batches run (``_Pipeline.begin_fused_flush``).
        A revocation or a stop first waits for it, then commits the rest
        with ``before_commit``.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        parse: ParseBatch,
        complete: Complete,
        on_revoked: Callable[[], None],
        fail_stop: Callable[[Exception], NoReturn],
        app_stopping: Callable[[], bool],
        max_poll_interval_s: float = 1000.0,
        session_timeout_s: float = 60.0,
        heartbeat_interval_s: float = 3.0,
        before_commit: Callable[[], Awaitable[None]] | None = None,
        begin_write: Callable[[], Awaitable[None] | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self._parse = parse
        self._complete = complete
        self._forget_offsets = on_revoked
        self._fail_stop = fail_stop
        self._app_stopping = app_stopping
        self._before_commit = before_commit
        self._begin_write = begin_write
        # The periodic commit running in the background (its states' write, then the commit).
        self._committing: asyncio.Task[None] | None = None
        self._timeouts = (max_poll_interval_s, session_timeout_s, heartbeat_interval_s)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._halt = asyncio.Event()
        # Held while a batch runs: a rebalance commits only between batches.
        self._batch_lock = asyncio.Lock()
        # Next offset to commit per partition: past batches whose outputs
        # were all acknowledged, not yet committed.
        self._due: dict[TopicPartition, int] = {}
        self._committed_at = 0.0
        self._reading = False  # joined and reading (else: still joining)
        self._read: dict[tuple[str, int], int] = {}  # last offset read per partition

    # ----------------------------------------------------------- lifecycle
    async def on_start(self) -> None:
        """Start joining the ingest group and reading, in a task of its own.

        Joining can take seconds (the group's rebalance); the worker's start
        does not wait for it, and a stop that comes meanwhile ends it
        cleanly (:meth:`on_stop`).
        """
        self._task = asyncio.ensure_future(self._run())

    async def on_stop(self) -> None:
        """Finish the running batch, commit what is due, and leave the group."""
        self._halt.set()
        task, self._task = self._task, None
        if task is not None:
            if not self._reading:
                # Still joining: nothing read yet, nothing to finish.
                task.cancel()
            # Reading: the loop leaves at its next poll, after a running batch.
            await asyncio.wait([task])
        await self._leave()

    async def _leave(self) -> None:
        """Commit what is due and stop the consumer (once; later calls do nothing)."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        if self._reading:
            async with self._batch_lock:
                await self._commit(consumer)
        try:
            await consumer.stop()
        except Exception as exc:  # noqa: BLE001 (leaving the group is best effort)
            logger.warning("ingest consumer stop failed error=%s", type(exc).__name__)
        logger.info("direct ingest stopped")

    def _stopping(self) -> bool:
        return self._halt.is_set() or self._app_stopping()

    # ------------------------------------------------------------ the loop
    async def _run(self) -> None:
        try:
            if self._stopping():
                return
            consumer = await self._join()
            if self._stopping():
                return
            self._reading = True
            logger.info("direct ingest started group=%s topics=%s",
                        ingest_group(self.settings), ",".join(self.settings.input_topics))
            await self._read_loop(consumer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 (stop visibly, never leave the input unread)
            self._fail_stop(exc)
        finally:
            if not self._halt.is_set() and self._app_stopping():
                # The app is stopping. When that began while this service was
                # still starting, its on_stop is never called: leave here.
                await self._leave()

    async def _join(self) -> AIOKafkaConsumer:
        """Adopt the app group's offsets, then join the ingest group; return the consumer."""
        s = self.settings
        poll_ms, session_ms, heartbeat_ms = (int(t * 1000) for t in self._timeouts)
        # Before joining: an upgrade from the Faust parse agent continues
        # where the app's group stopped (blocking admin calls: an executor).
        await asyncio.get_running_loop().run_in_executor(None, adopt_offsets, s)
        consumer = AIOKafkaConsumer(
            group_id=ingest_group(s),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            fetch_min_bytes=s.fetch_min_bytes,
            max_poll_records=s.batch_max,
            max_poll_interval_ms=poll_ms,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=heartbeat_ms,
            client_id=f"{s.app_id}-ingest",
            **s.kafka.aiokafka_config(),
        )
        consumer.subscribe(list(s.input_topics), listener=_Rebalance(self))
        self._consumer = consumer  # on_stop stops it, started or not
        await consumer.start()
        self._committed_at = time.monotonic()
        return consumer

    async def _read_loop(self, consumer: AIOKafkaConsumer) -> None:
        s = self.settings
        poll_ms = int(POLL_TIMEOUT_S * 1000)
        while not self._stopping():
            try:
                fetched = await consumer.getmany(timeout_ms=poll_ms, max_records=s.batch_max)
            except KafkaError as exc:
                # Transient broker trouble: the consumer reconnects by itself.
                logger.warning("ingest fetch failed error=%s", type(exc).__name__)
                await asyncio.sleep(POLL_TIMEOUT_S)
                continue
            if fetched:
                fetched = await self._fill(consumer, fetched)
                async with self._batch_lock:
                    await self._one(fetched)
            if time.monotonic() - self._committed_at >= s.commit_interval_s:
                async with self._batch_lock:
                    await self._commit_in_background(consumer)

    async def _fill(
        self, consumer: AIOKafkaConsumer, fetched: dict[TopicPartition, list[Any]]
    ) -> dict[TopicPartition, list[Any]]:
        """Grow a batch within the worker's batch bounds; return it.

        The same bounds as the Faust stages' batches: at most ``batch_max``
        records, closed ``batch_idle_s`` after the last record arrived (the
        topic is drained) or ``batch_within_s`` after the first; with
        ``batch_idle_s`` 0, the whole ``batch_within_s`` window. Each batch
        costs a produce request and an acknowledgement per output topic, so
        a live feed of single records would otherwise pay them per event.
        """
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.batch_within_s
        idle = s.batch_idle_s if s.batch_idle_s > 0 else s.batch_within_s
        total = sum(len(records) for records in fetched.values())
        while total < s.batch_max and not self._stopping():
            wait = min(idle, deadline - loop.time())
            if wait <= 0:
                break
            try:
                more = await consumer.getmany(timeout_ms=max(1, int(wait * 1000)),
                                              max_records=s.batch_max - total)
            except KafkaError as exc:
                # The records in hand are processed; the next poll retries.
                logger.warning("ingest fetch failed error=%s", type(exc).__name__)
                break
            if not more:
                break
            for tp, records in more.items():
                fetched.setdefault(tp, []).extend(records)
                total += len(records)
        return fetched

    async def _one(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        values: list[bytes | None] = []
        sources: list[stages.Source] = []
        record_ms: list[int | None] = []
        ends: dict[TopicPartition, int] = {}
        for tp, records in fetched.items():
            if not records:
                continue
            topic, partition = tp.topic, tp.partition
            for r in records:
                values.append(r.value)
                sources.append(new_source((topic, partition, r.offset)))
                record_ms.append(r.timestamp if r.timestamp and r.timestamp > 0 else None)
            ends[tp] = records[-1].offset + 1
            self._read[(topic, partition)] = records[-1].offset
        # Runs to its end even if this task is cancelled; exits the process
        # (no commit) if the batch fails for good.
        await self._complete(self._parse(values, sources, record_ms))
        consumer = self._consumer
        assigned = consumer.assignment() if consumer is not None else set()
        # A partition revoked while the batch filled is its new owner's: its
        # offsets are not ours to commit (the new owner reads those records
        # again; the applied logs downstream skip what was already learned).
        self._due.update({tp: end for tp, end in ends.items() if tp in assigned})

    def _take_due(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
        self._committed_at = time.monotonic()
        assigned = consumer.assignment()
        due = {tp: end for tp, end in self._due.items() if tp in assigned}
        self._due = {}
        return due

    async def _commit_in_background(self, consumer: AIOKafkaConsumer) -> None:
        """Start the periodic commit between batches: set states aside, write them, commit.

        Without ``begin_write`` it is the plain commit. If the previous one is
        still writing, this waits for the next check (the offsets stay due).
        """
        if self._begin_write is None:
            await self._commit(consumer)
            return
        running = self._committing
        if running is not None and not running.done():
            return
        await self._settle_commit()  # its outcome, if it ended with an error
        due = self._take_due(consumer)
        if not due:
            return
        write = self._begin_write()
        self._committing = asyncio.ensure_future(self._write_then_commit(consumer, due, write))

    async def _write_then_commit(self, consumer: AIOKafkaConsumer,
                                 due: dict[TopicPartition, int],
                                 write: Awaitable[None] | None) -> None:
        try:
            if write is not None:
                await write  # fail-stops the process itself if the states cannot be written
            await self._commit_offsets(consumer, due)
        except Exception as exc:  # noqa: BLE001 (stop visibly, never commit past lost state)
            self._fail_stop(exc)

    async def _settle_commit(self) -> None:
        """Wait for the background commit, if one is running."""
        task, self._committing = self._committing, None
        if task is not None:
            await task

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit the offsets of the batches whose outputs were acknowledged."""
        await self._settle_commit()
        due = self._take_due(consumer)
        if not due:
            return
        if self._before_commit is not None:
            await self._before_commit()
        await self._commit_offsets(consumer, due)

    async def _commit_offsets(self, consumer: AIOKafkaConsumer,
                              due: dict[TopicPartition, int]) -> None:
        try:
            await consumer.commit(due)
        except (CommitFailedError, KafkaError) as exc:
            # Not fatal: the uncommitted events are read again and skipped
            # (or decided again identically) downstream.
            logger.warning("ingest commit failed partitions=%d error=%s", len(due),
                           type(exc).__name__)

    # ---------------------------------------------------------- rebalances
    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what is due before partitions move, then forget them."""
        consumer = self._consumer
        async with self._batch_lock:
            if consumer is not None:
                await self._commit(consumer)
            for tp in revoked:
                self._due.pop(tp, None)
                self._read.pop((tp.topic, tp.partition), None)
        self._forget_offsets()

    # ------------------------------------------------------------- metrics
    def assigned(self) -> int:
        """Return how many input partitions this worker reads."""
        return len(self._consumer.assignment()) if self._consumer is not None else 0

    def offsets(self) -> tuple[OffsetMap, OffsetMap]:
        """Return (end offsets, last read offsets) of the input partitions."""
        consumer = self._consumer
        end: dict[tuple[str, int], int] = {}
        if consumer is not None:
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is not None:
                    end[(tp.topic, tp.partition)] = high - 1  # last offset, as Faust's
        return end, dict(self._read)


def adopt_offsets(settings: WorkerSettings) -> dict[tuple[str, int], int]:
    """Copy the app group's committed input offsets into the ingest group where it has none.

    Run once before the ingest consumer joins its group (blocking admin
    calls). An input partition the Faust parse agent committed (group
    ``<app_id>``) and the direct ingest never did (group ``<app_id>-ingest``)
    then continues at the same offset: an upgrade from ``--ingest faust``
    reads nothing twice and skips nothing. Kafka accepts such a commit only
    while the ingest group has no members; when another worker has joined it
    first, that worker has already copied them. Failures are logged and
    leave the partitions to ``auto_offset_reset`` (earliest), so the worst
    case is a re-read that the downstream applied logs skip.

    Returns the adopted offsets by (topic, partition).
    """
    from kafka import KafkaAdminClient
    from kafka.structs import OffsetAndMetadata

    app, ingest = settings.app_id, ingest_group(settings)
    inputs = set(settings.input_topics)
    try:
        admin = KafkaAdminClient(**settings.kafka.kafka_python_config())
    except Exception as exc:  # noqa: BLE001 (best effort, logged)
        logger.warning("ingest offsets not adopted error=%s", type(exc).__name__)
        return {}
    try:
        found = admin.list_group_offsets({app: None}).get(app, {})
        have = admin.list_group_offsets({ingest: None}).get(ingest, {})
        copy = {
            tp: OffsetAndMetadata(meta.offset, "", -1)
            for tp, meta in found.items()
            if tp.topic in inputs and meta is not None and meta.offset >= 0
            and (have.get(tp) is None or have[tp].offset < 0)
        }
        if not copy:
            return {}
        errors = admin.alter_group_offsets(ingest, copy)
    except Exception as exc:  # noqa: BLE001 (best effort, logged)
        logger.warning("ingest offsets not adopted error=%s", type(exc).__name__)
        return {}
    finally:
        admin.close()
    adopted: dict[tuple[str, int], int] = {}
    for tp, meta in copy.items():
        error = errors.get(tp)
        if error is not None and getattr(error, "errno", 0) != 0:
            logger.warning("ingest offset not adopted topic=%s partition=%d error=%s",
                           tp.topic, tp.partition, getattr(error, "__name__", error))
            continue
        adopted[(tp.topic, tp.partition)] = meta.offset
        logger.info("ingest starts at the app group's offset topic=%s partition=%d offset=%d",
                    tp.topic, tp.partition, meta.offset)
    return adopted
