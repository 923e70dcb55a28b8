"""Keyed outputs sent as one producer batch per partition, not one ``send`` per record.

The entity stage writes one decision record per event to the decisions
topic (the analysts' audit trail), plus its signals. Through the producer's
``send`` each record costs aiokafka's per-message bookkeeping (metadata
check, partitioner, accumulator append, one future) and lands in batches of
the producer's ``max_batch_size`` (16 KiB by default): a 500-event batch's
decisions (about 170 KiB) filled eleven of them, and ``send`` waits for the
previous batch of a partition to leave before it starts the next. Here the
records of one call are grouped by partition with the producer's own
partitioner, each group is appended to a batch of up to :data:`BATCH_BYTES`
and handed over with ``send_batch``: one future per batch, shared by its
records, and one produce request for a stage batch's outputs to a
partition.

Same partitions and the same order per partition as ``send``: the
partition comes from the producer's partitioner over the same key bytes,
and the records of a partition are appended in call order. A record that
does not fit a batch of its own (:data:`SINGLE_BYTES`, a large dead letter)
goes through ``send``, whose size checks apply to it, after the batches
before it in its partition.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

#: At most this many bytes of records per batch: the internal topics' packed
#: record limit, well under the broker's default ``message.max.bytes`` (1 MiB)
#: and the producer's ``max_request_size`` (1 MB).
BATCH_BYTES: Final = 512 * 1024
#: Records larger than this are sent on their own through ``send``.
SINGLE_BYTES: Final = 64 * 1024

#: One record's outcome so far: its delivery future (shared by a batch's
#: records), or the exception raised while handing it to the producer.
Outcome = tuple[Awaitable[Any] | None, BaseException | None]


class KeyedBatches:
    """Send keyed records to a topic as one producer batch per partition.

    ``producer`` is the aiokafka producer underneath Faust's (the worker's
    single producer, so its sender, acks, retries and idempotence apply).
    """

    def __init__(self, producer: AIOKafkaProducer, batch_bytes: int = BATCH_BYTES,
                 single_bytes: int = SINGLE_BYTES) -> None:
        self._producer = producer
        self._batch_bytes = batch_bytes
        self._single_bytes = single_bytes

    @classmethod
    def of(cls, faust_producer: Any) -> KeyedBatches | None:
        """Return batches over a started Faust producer's aiokafka producer, else None.

        None (the caller sends record by record) when the producer is not
        started, not aiokafka's, or transactional (``send_batch`` outside a
        transaction is refused there; an idempotent producer is fine).
        """
        inner = getattr(faust_producer, "_producer", None)
        if not isinstance(inner, AIOKafkaProducer):
            return None
        txn = getattr(inner, "_txn_manager", None)
        if txn is not None and txn.transactional_id is not None:
            return None
        return cls(inner)

    async def send(self, topic: str, records: Sequence[tuple[bytes, bytes]],
                   partitions: Sequence[int] | None = None) -> list[Outcome]:
        """Hand ``records`` (key, value) to the producer; return each record's outcome.

        Each record goes to the partition the producer's partitioner picks
        for its key, or to ``partitions[i]`` when given (a table's
        changelog, whose partition is the table partition's). Records of one
        batch share its delivery future. An exception raised while handing
        a batch over (no room within the producer's timeout, a closed
        producer) is every one of its records' outcome.
        """
        producer = self._producer
        outcomes: list[Outcome] = [(None, None)] * len(records)
        try:
            await producer.client._wait_on_metadata(topic)
        except Exception as exc:  # noqa: BLE001 (classified by the caller, as for send)
            return [(None, exc)] * len(records)
        if partitions is None:
            partitions = self._partitions(topic, records)
        by_partition: dict[int, list[int]] = {}
        for i, partition in enumerate(partitions):
            group = by_partition.get(partition)
            if group is None:
                by_partition[partition] = [i]
            else:
                group.append(i)
        for partition, indexes in by_partition.items():
            await self._send_partition(topic, partition, records, indexes, outcomes)
        return outcomes

    def _partitions(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> list[int]:
        """Return the partition the producer's partitioner picks for each record.

        With the worker's :class:`~detector.stream.stages.KeyPartitioner`,
        the topic's partition list is read once per call rather than once
        per record (aiokafka's ``_partition`` copies the metadata's two
        partition sets for every record: 4 % of a draining worker's CPU),
        and every keyed record is placed as the partitioner would place it
        (``KeyPartitioner.place``). Any other partitioner, or a record
        without a key, goes through the producer's ``_partition``.
        """
        producer = self._producer
        place = getattr(producer._partitioner, "place", None)
        if place is None:
            return [producer._partition(topic, None, None, None, key, value)
                    for key, value in records]
        all_partitions = list(producer._metadata.partitions_for_topic(topic))
        return [place(key, all_partitions) if key is not None
                else producer._partition(topic, None, None, None, key, value)
                for key, value in records]

    async def _send_partition(self, topic: str, partition: int,
                              records: Sequence[tuple[bytes, bytes]], indexes: list[int],
                              outcomes: list[Outcome]) -> None:
        producer = self._producer
        batch: BatchBuilder | None = None
        members: list[int] = []

        async def flush() -> None:
            nonlocal batch, members
            if batch is None:
                return
            try:
                outcome: Outcome = (await producer.send_batch(batch, topic, partition=partition),
                                    None)
            except Exception as exc:  # noqa: BLE001 (classified by the caller)
                outcome = (None, exc)
            for i in members:
                outcomes[i] = outcome
            batch, members = None, []

        for i in indexes:
            key, value = records[i]
            if len(key) + len(value) > self._single_bytes:
                await flush()  # keeps the partition's order
                try:
                    outcomes[i] = (await producer.send(topic, value, key=key,
                                                       partition=partition), None)
                except Exception as exc:  # noqa: BLE001 (classified by the caller)
                    outcomes[i] = (None, exc)
                continue
            if batch is not None and batch.append(key=key, value=value, timestamp=None) is not None:
                members.append(i)
                continue
            await flush()
            batch = self._new_batch()
            # The first record always fits an empty batch.
            batch.append(key=key, value=value, timestamp=None)
            members.append(i)
        await flush()

    def _new_batch(self) -> BatchBuilder:
        # What the producer's create_batch() builds, with a size of our own:
        # its compression (the accumulator's attribute code); producer id and
        # sequence (idempotence) are set by its sender when the batch is
        # drained, as for its own batches.
        compression = self._producer._message_accumulator._compression_type
        return BatchBuilder(self._batch_bytes, compression, is_transactional=False)
