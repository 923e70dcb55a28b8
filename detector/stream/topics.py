"""Create the worker's internal topics before Faust starts (kafka-python admin).

Faust declares its internal topics itself, but when two workers start
together the group leader can compute the partition assignment before a
topic another worker just created is in its metadata; Faust then logs
"Ignoring missing topic" and that stage gets no partitions until the next
rebalance. Creating every internal topic up front, idempotently, removes the
race. An existing topic with a different partition count is refused: the
tables are keyed by partition, so silently running on it would scatter state.
"""

from __future__ import annotations

import logging
from typing import Final

from detector.stream.settings import WorkerSettings

logger = logging.getLogger(__name__)

REPARTITION_TOPICS: Final = ("by-ip", "by-session", "by-entity")
TABLES: Final = ("ip-context", "session-context", "baselines")


def internal_topics(settings: WorkerSettings) -> dict[str, dict[str, str]]:
    """Return every internal topic of the app and its topic configuration.

    Examples
    --------
    >>> from pathlib import Path
    >>> topics = internal_topics(WorkerSettings(model_dir=Path("m"), app_id="zt"))
    >>> topics["zt-baselines-changelog"]["cleanup.policy"], sorted(topics)[0]
    ('compact', 'zt-baselines-changelog')
    """
    out: dict[str, dict[str, str]] = {}
    for name in REPARTITION_TOPICS:
        out[settings.internal_topic(name)] = {"cleanup.policy": "delete"}
    for table in TABLES:
        # Changelogs keep the latest value of every key, forever.
        out[settings.internal_topic(f"{table}-changelog")] = {"cleanup.policy": "compact"}
    return out


def ensure_topics(settings: WorkerSettings, timeout_ms: int = 30_000) -> list[str]:
    """Create the missing internal topics; return the names created.

    Raises ``ValueError`` when an existing internal topic has another
    partition count than ``settings.partitions``, or when the broker refuses
    the worker's principal (ACLs; docs/kafka-security.md lists what it needs).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import AuthorizationError, TopicAlreadyExistsError

    wanted = internal_topics(settings)
    admin = KafkaAdminClient(
        client_id=f"{settings.app_id}-admin",
        request_timeout_ms=timeout_ms,
        **settings.kafka.kafka_python_config(),
    )
    created: list[str] = []
    try:
        existing = set(admin.list_topics())
    except AuthorizationError as exc:
        admin.close()
        raise ValueError(_denied(settings, exc)) from None
    try:
        missing = [name for name in wanted if name not in existing]
        for name in missing:
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=settings.partitions,
                            replication_factor=settings.replication_factor,
                            topic_configs=wanted[name],
                        )
                    ],
                    timeout_ms=timeout_ms,
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another worker won the race
            except AuthorizationError as exc:
                raise ValueError(_denied(settings, exc)) from None
        if missing:
            admin.wait_for_topics(missing, timeout_ms=timeout_ms)
        for desc in admin.describe_topics(list(wanted)):
            n = len(desc["partitions"])
            if n != settings.partitions:
                raise ValueError(
                    f"internal topic {desc['topic']} has {n} partitions, the worker is "
                    f"configured for {settings.partitions}: state is keyed by partition, "
                    "use the original count (or a new app id)"
                )
    finally:
        admin.close()
    if created:
        logger.info("created internal topics %s", ",".join(created))
    return created


def _denied(settings: WorkerSettings, exc: Exception) -> str:
    return (
        f"the broker refused the worker's principal ({type(exc).__name__}): it needs "
        f"Describe and Create on topics prefixed '{settings.app_id}-' "
        "(see docs/kafka-security.md, 'ACLs')"
    )


class InternalBacklog:
    """Read the repartition topics' end offsets and the app group's committed offsets.

    The fused stages (``--topology fused``) start only when no record waits
    in a repartition topic: records sent there before (by this worker when it
    was staged, or by another before a rebalance) would otherwise be decided
    after newer events of the same keys. Blocking kafka-python admin calls:
    run :meth:`read` in an executor. Read only while a worker waits to fuse
    (at most every ``BACKLOG_CHECK_S``), so each read opens its own client.
    """

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings

    def read(self, partitions: list[tuple[str, int]]
             ) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        """Return (end offset, committed offset of the app group) per partition.

        A partition the group never committed is absent from the second map.
        Raises what kafka-python raises (the caller stays staged then).
        """
        from kafka import KafkaAdminClient, TopicPartition
        from kafka.admin import OffsetSpec

        admin = KafkaAdminClient(**self.settings.kafka.kafka_python_config())
        try:
            tps = [TopicPartition(t, p) for t, p in partitions]
            ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps})
            app = self.settings.app_id
            committed = admin.list_group_offsets({app: tps}).get(app, {})
        finally:
            admin.close()
        return (
            {(tp.topic, tp.partition): int(o.offset) for tp, o in ends.items()},
            {(tp.topic, tp.partition): int(m.offset) for tp, m in committed.items()
             if m is not None and m.offset >= 0},
        )
