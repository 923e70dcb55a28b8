"""Back-pressure on the real broker (issue 6, section 2): the response topic goes away.

"The response topic is unavailable. Nothing is dropped; lag grows and then
drains." A one-node Kafka cannot make one topic unavailable while the rest
stays up (see ``test_min_insync_cannot_block_a_single_replica_topic``), so this
test runs a two-node cluster of its own (``kafka_two_nodes``): every topic of
the worker lives on node 1, the response topic's only replica on node 2, and
node 2 is SIGKILLed while events flow, then started again.

The worker must ride it out in the same process: its producer gives up after
``--producer-request-timeout-ms``, the entity stage resends the failed
signals with backoff (``detector_delivery_retries_total``), takes no further
batch meanwhile, so the group's lag grows; when node 2 is back the lag drains
to zero, every signal of an uninterrupted replay is on the response topic
(duplicates allowed), and every decision and baseline equals the replay's.
No fail-stop (exit 70) happens: the worker stops with 0 at the end.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaConnectionError

from tests.integration._state import (
    changelog_baselines,
    replay_baselines,
    replay_decisions,
    wait_all_decided_without_gaps,
)
from tests.integration._stream import (
    WorkerProcess,
    create_topics,
    produce_file,
    read_topic,
    running,
    unique,
    wait_for,
)
from tests.integration.conftest import TwoNodeKafka

#: Short, so the outage outlasts several of the producer's own retry windows.
PRODUCER_TIMEOUT_MS = 2000
#: Resend rounds to see while node 2 is down (each spans a producer timeout).
RETRY_ROUNDS = 3


def _slice(events: Path, start: int, stop: int, tmp: Path) -> Path:
    lines = [line for line in events.read_bytes().splitlines() if line.strip()]
    path = tmp / f"events-{start}-{stop}.jsonl"
    path.write_bytes(b"\n".join(lines[start:stop]) + b"\n")
    return path


def _group_lag(bootstrap: str, group: str, topics: list[str]) -> dict[str, int]:
    """Return end offset minus committed offset of ``group`` per topic (partition 0).

    While node 2 is down a client may pick it for a request and get a refused
    connection: such a look is simply taken again (a few times).
    """
    for _ in range(9):
        try:
            return _group_lag_once(bootstrap, group, topics)
        except KafkaConnectionError:
            time.sleep(0.5)
    return _group_lag_once(bootstrap, group, topics)


def _group_lag_once(bootstrap: str, group: str, topics: list[str]) -> dict[str, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tps = [TopicPartition(t, 0) for t in topics]
        committed = admin.list_group_offsets({group: tps}).get(group, {})
        end = consumer.end_offsets(tps)
        lag: dict[str, int] = {}
        for tp in tps:
            meta = committed.get(tp)
            lag[tp.topic] = end[tp] - (meta.offset if meta is not None and meta.offset >= 0
                                       else 0)
        return lag
    finally:
        consumer.close()
        admin.close()


def _replicas(bootstrap: str) -> dict[str, set[int]]:
    """Return every topic's replica brokers (internal topics included)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    try:
        return {d["name"]: {b for p in d["partitions"] for b in p["replica_nodes"]}
                for d in admin.describe_topics()}
    finally:
        admin.close()


def _create_on_node2(bootstrap: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=-1, replication_factor=-1,
                                      replica_assignments={0: [2]})], timeout_ms=15_000)
        admin.wait_for_topics([topic], timeout_ms=15_000)
    finally:
        admin.close()


def _signal_ids(bootstrap: str, topic: str) -> list[str]:
    return [orjson.loads(r.value)["signal_id"]
            for r in read_topic(bootstrap, topic, timeout_s=20, idle_s=1)]


@pytest.mark.parametrize("topology", ["staged", "fused"])
def test_unavailable_response_topic_back_pressure_then_drain_nothing_lost(
    kafka_two_nodes: TwoNodeKafka,
    stream_dataset: tuple[Path, list[dict[str, Any]]],
    tmp_path: Path,
    topology: str,
) -> None:
    """Staged, the entity stage holds its batch and the stages before it go on;
    fused (a lone worker's default), the one batch of all stages is held, so the
    input topic keeps the backlog."""
    events, _ = stream_dataset
    # Three slices: before the outage, during it (with signals, so the entity
    # stage blocks on them), and more during it (the lag must keep growing).
    cut = (0, 1000, 2000, 3000)
    before, during_1, during_2 = (_slice(events, a, b, tmp_path)
                                  for a, b in zip(cut, cut[1:], strict=False))
    everything = _slice(events, 0, cut[-1], tmp_path)
    expected = replay_decisions(everything)
    want = {d["signal_id"] for d in expected if d["signal_id"] is not None}
    want_before = {d["signal_id"] for d in expected[:cut[1]] if d["signal_id"] is not None}
    assert want_before and want - want_before, "signals before and during the outage"

    bs = kafka_two_nodes.bootstrap
    inp, resp, dlq, dec = (unique(p) for p in ("in", "resp", "dlq", "dec"))
    create_topics(bs, {inp: 1, dlq: 1, dec: 1})  # node 2 not started yet: on node 1
    app_id = unique("app")
    upstream = [inp, f"{app_id}-by-ip", f"{app_id}-by-session"]
    entity_in = f"{app_id}-by-entity"  # the input of the stage that sends signals
    consumed = [*upstream, entity_in]
    # Where the backlog waits: the held stage's input topic.
    held = entity_in if topology == "staged" else inp

    def lag() -> dict[str, int]:
        # The input topic is read by the direct ingest, in a group of its own.
        return {**_group_lag(bs, app_id, consumed[1:]),
                **_group_lag(bs, f"{app_id}-ingest", [inp])}

    def upstream_done(n: int) -> bool:
        """The first three stages read ``n`` events and committed all they read.

        Fused, no stage passes anything on while the batch is held: the
        events wait in the input topic (checked through its lag below).
        """
        if topology == "fused":
            return lag()[inp] > 0
        return (w.metric("detector_events_in_total") >= n
                and all(lag()[t] == 0 for t in upstream))
    w = WorkerProcess(bs, app_id, tmp_path, [inp], resp, dlq, dec, 1,
                      extra=["--batch-max", "100", "--topology", topology,
                             "--producer-request-timeout-ms", str(PRODUCER_TIMEOUT_MS)])
    with running(w):
        w.wait_ready()  # its internal topics and the group exist, all on node 1
        kafka_two_nodes.start_node2()
        _create_on_node2(bs, resp)
        replicas = _replicas(bs)
        assert replicas[resp] == {2}
        assert all(r == {1} for t, r in replicas.items() if t != resp), (
            f"everything but the response topic on node 1: {replicas}"
        )

        # Healthy: the first slice is decided, its signals delivered, all committed.
        produce_file(bs, before, inp)
        wait_all_decided_without_gaps(bs, dec, {d["event_id"] for d in expected[:cut[1]]},
                                      [w], timeout_s=120)
        wait_for(lambda: want_before <= set(_signal_ids(bs, resp)), 60, "first signals")
        wait_for(lambda: sum(lag().values()) == 0, 60, "lag 0 before the outage")

        # Outage: node 2 (the response topic) crashes; events keep coming.
        kafka_two_nodes.kill_node2()
        produce_file(bs, during_1, inp)
        wait_for(lambda: w.metric("detector_delivery_retries_total") > 0, 90,
                 "a resend of the undeliverable signals", w.log_tail)
        # The upstream stages go on (their outputs are on node 1) and commit;
        # the entity stage holds its batch, so its input's lag keeps the backlog.
        wait_for(lambda: upstream_done(cut[2]), 60, "the upstream stages to pass the "
                 "second slice on", w.log_tail)
        lag_1 = lag()[held]
        produce_file(bs, during_2, inp)
        wait_for(lambda: upstream_done(cut[3]), 60, "the upstream stages to pass the "
                 "third slice on", w.log_tail)
        lag_2 = lag()[held]
        first_retries = w.metric("detector_delivery_retries_total")
        wait_for(lambda: w.metric("detector_delivery_retries_total") >= RETRY_ROUNDS, 90,
                 f"{RETRY_ROUNDS} resends (an outage longer than the producer's retries)",
                 w.log_tail)
        decided_in_outage = {orjson.loads(r.value)["event_id"]
                             for r in read_topic(bs, dec, timeout_s=20, idle_s=1)}
        alive_in_outage = w.alive()
        retries_in_outage = w.metric("detector_delivery_retries_total")

        # Recovery: node 2 comes back with its data; the backlog drains.
        kafka_two_nodes.start_node2()
        wait_all_decided_without_gaps(bs, dec, {d["event_id"] for d in expected}, [w],
                                      timeout_s=120)
        wait_for(lambda: want <= set(_signal_ids(bs, resp)), 90, "every replay signal",
                 w.log_tail)
        wait_for(lambda: sum(lag().values()) == 0, 90, "the lag to drain", w.log_tail)
        alive_after = w.alive()
        w_metrics = w.metrics()
        retries = {k: v for k, v in w_metrics.items()
                   if k.startswith("detector_delivery_retries_total")}
        code = w.stop()

    log = w.log_path.read_text(errors="replace")
    signals = _signal_ids(bs, resp)
    decisions = [orjson.loads(r.value) for r in read_topic(bs, dec, timeout_s=30)]
    repeats = sum(c - 1 for c in Counter(d["event_id"] for d in decisions).values())
    print(f"\nback-pressure ({topology}): {held} lag {lag_1} -> {lag_2} records "
          f"while the response topic was down, 0 after (all topics); "
          f"resends {first_retries:.0f} at first, {retries_in_outage:.0f} "
          f"during the outage, {retries} in all; decided {len(decided_in_outage)}/{cut[-1]} "
          f"during the outage; {len(signals)} signal records for {len(set(signals))} "
          f"signals (replay: {len(want)}); {repeats} repeated decisions")
    assert alive_in_outage and alive_after, "the same process rode the outage out"
    assert code == 0, log[-3000:]
    assert "batch failed" not in log, "no fail-stop"
    assert 0 < lag_1 < lag_2, "the held stage's lag grew while the response topic was down"
    fused = w_metrics.get('detector_stage_path_batches_total{path="fused"}', 0)
    assert (fused > 0) == (topology == "fused"), fused
    assert len(decided_in_outage) < cut[-1], "the entity stage held back (back-pressure)"
    assert set(signals) == want, "every replay signal out, and no other"
    by_id = {d["event_id"]: d for d in expected}
    assert {d["event_id"] for d in decisions} == set(by_id), "every event decided"
    assert all(d == by_id[d["event_id"]] for d in decisions), "decisions equal the replay's"
    assert changelog_baselines(bs, app_id) == replay_baselines(everything)
