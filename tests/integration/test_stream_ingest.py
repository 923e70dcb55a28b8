"""Both ways of reading the input topics, and the switch from one to the other.

``--ingest faust`` reads the input with a Faust agent (offsets committed in the
app's group), ``--ingest direct`` (the default) with a plain aiokafka
consumer in the group ``<app_id>-ingest`` (detector.stream.ingest). A worker
upgraded from the one to the other must continue where the app's group
stopped: nothing read twice, nothing skipped. Both paths decide exactly as
the replay.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from tests.integration._state import (
    changelog_baselines,
    replay_baselines,
    wait_all_decided_without_gaps,
)
from tests.integration._stream import (
    WorkerProcess,
    create_topics,
    produce_file,
    read_topic,
    running,
    set_topic_config,
    unique,
    wait_for,
)


def _committed(bootstrap: str, group: str, topic: str) -> int | None:
    """Return ``group``'s committed offset of ``topic`` partition 0 (None if none)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    try:
        tp = TopicPartition(topic, 0)
        meta = admin.list_group_offsets({group: [tp]}).get(group, {}).get(tp)
        return meta.offset if meta is not None and meta.offset >= 0 else None
    finally:
        admin.close()


def _end(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tp = TopicPartition(topic, 0)
        return int(consumer.end_offsets([tp])[tp])
    finally:
        consumer.close()


def test_upgrade_from_faust_ingest_continues_where_the_app_group_stopped(
    kafka_bootstrap: str,
    stream_dataset: tuple[Path, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    events, expected = stream_dataset
    lines = [line for line in events.read_bytes().splitlines() if line.strip()]
    n = len(lines)
    k = n // 3
    first_half, second_half = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first_half.write_bytes(b"\n".join(lines[:k]) + b"\n")
    second_half.write_bytes(b"\n".join(lines[k:]) + b"\n")
    bs = kafka_bootstrap
    inp, resp, dlq, dec = (unique(p) for p in ("in", "resp", "dlq", "dec"))
    create_topics(bs, {inp: 1, resp: 1, dlq: 1, dec: 1})
    app_id = unique("app")

    produce_file(bs, first_half, inp)
    # The configuration before sessions 7 and 8: input through a Faust agent,
    # Faust's consumer in its own thread, a state write per batch.
    old = WorkerProcess(bs, app_id, tmp_path, [inp], resp, dlq, dec, 1, name="faust",
                        extra=["--ingest", "faust", "--faust-consumer", "thread",
                               "--state-writes", "batch"])
    with running(old):
        old.wait_ready()
        wait_all_decided_without_gaps(bs, dec, {d["event_id"] for d in expected[:k]}, [old])
        read_by_faust = old.metric("detector_events_in_total")
        assert old.stop() == 0, old.log_tail()
    assert read_by_faust == k, "the Faust agent read the first part"
    assert _committed(bs, app_id, inp) == k, "the Faust agent committed in the app's group"
    assert _committed(bs, f"{app_id}-ingest", inp) is None

    produce_file(bs, second_half, inp)
    new = WorkerProcess(bs, app_id, tmp_path, [inp], resp, dlq, dec, 1, name="direct")
    with running(new):
        new.wait_ready()
        wait_all_decided_without_gaps(bs, dec, {d["event_id"] for d in expected}, [new])
        read_direct = new.metric("detector_events_in_total")
        skipped = new.metric("detector_redelivered_skipped_total")
        assert new.stop() == 0, new.log_tail()
    assert "ingest starts at the app group's offset" in new.log_path.read_text(errors="replace")
    assert read_direct == n - k, "the direct ingest started where the app's group stopped"
    assert skipped == 0, "nothing read twice"
    assert _committed(bs, f"{app_id}-ingest", inp) == _end(bs, inp), (
        "the direct ingest committed everything it read, in its own group"
    )

    decisions = [orjson.loads(r.value) for r in read_topic(bs, dec, want=n, timeout_s=15)]
    assert Counter(d["event_id"] for d in decisions) == Counter(d["event_id"] for d in expected)
    by_id = {d["event_id"]: d for d in expected}
    assert [d["event_id"] for d in decisions if d != by_id[d["event_id"]]] == [], (
        "both ingest paths decide as the replay"
    )
    assert changelog_baselines(bs, app_id) == replay_baselines(events)


@pytest.mark.parametrize("topology", ["staged", "fused"])
def test_direct_ingest_commits_nothing_before_its_outputs_are_delivered(
    kafka_bootstrap: str,
    stream_dataset: tuple[Path, list[dict[str, Any]]],
    tmp_path: Path,
    topology: str,
) -> None:
    """The ingest batch's output topic refuses its records: fail-stop, nothing committed.

    ``max.message.bytes`` on the topic is set below a record's size, so the
    broker refuses (MESSAGE_TOO_LARGE, not retriable) every output there:
    staged, ``<app>-by-ip`` (the parse stage's packed records); fused, the
    decisions topic (the fused batch's own outputs). The worker must exit 70
    before its ingest group commits the batch; once the topic accepts
    records again, a new process reads the input from the start and
    decides every event as the replay.
    """
    events, expected = stream_dataset
    lines = [line for line in events.read_bytes().splitlines() if line.strip()]
    k = 600
    chunk = tmp_path / "chunk.jsonl"
    chunk.write_bytes(b"\n".join(lines[:k]) + b"\n")
    bs = kafka_bootstrap
    inp, resp, dlq, dec = (unique(p) for p in ("in", "resp", "dlq", "dec"))
    create_topics(bs, {inp: 1, resp: 1, dlq: 1, dec: 1})
    app_id = unique("app")
    refusing = f"{app_id}-by-ip" if topology == "staged" else dec
    flags = ["--topology", topology]
    first = WorkerProcess(bs, app_id, tmp_path, [inp], resp, dlq, dec, 1, name="first",
                          extra=flags)
    with running(first):
        first.wait_ready()
        set_topic_config(bs, refusing, {"max.message.bytes": "64"})
        produce_file(bs, chunk, inp)
        assert first.proc is not None
        code = first.proc.wait(90)
    log = first.log_path.read_text(errors="replace")
    assert code == 70, log[-3000:]
    assert "MessageSizeTooLargeError" in log
    assert _committed(bs, f"{app_id}-ingest", inp) is None, "the failed batch is not committed"
    assert read_topic(bs, dec, timeout_s=3, idle_s=1) == [], "nothing got past the parse stage"

    set_topic_config(bs, refusing, {"max.message.bytes": "1048588"})
    second = WorkerProcess(bs, app_id, tmp_path, [inp], resp, dlq, dec, 1, name="second",
                           extra=flags)
    with running(second):
        second.wait_ready()
        wait_all_decided_without_gaps(bs, dec, {d["event_id"] for d in expected[:k]}, [second])
        read_second = second.metric("detector_events_in_total")
        assert second.stop() == 0, second.log_tail()
    assert read_second == k, "the second process read the whole input again"
    assert _committed(bs, f"{app_id}-ingest", inp) == k
    decisions = [orjson.loads(r.value) for r in read_topic(bs, dec, want=k, timeout_s=15)]
    by_id = {d["event_id"]: d for d in expected}
    assert sorted(d["event_id"] for d in decisions) == sorted(d["event_id"] for d in expected[:k])
    assert [d["event_id"] for d in decisions if d != by_id[d["event_id"]]] == []


def test_a_stop_while_the_ingest_joins_its_group_is_clean(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """SIGTERM as soon as the web server answers: the ingest is still joining its group.

    The web server starts right before the app's services, so the ingest's
    group join (seconds: the group's rebalance) is under way when /health
    first answers. The stop must end the join and exit 0, not start the read
    loop after the consumer was stopped (a fail-stop, exit 70, before the fix),
    nor leave the consumer unclosed when the stop began before the service
    had started (its on_stop is then never called).
    """
    bs = kafka_bootstrap
    inp, resp, dlq, dec = (unique(p) for p in ("in", "resp", "dlq", "dec"))
    create_topics(bs, {inp: 4, resp: 1, dlq: 1, dec: 1})
    for attempt in range(3):
        w = WorkerProcess(bs, unique("app"), tmp_path, [inp], resp, dlq, dec, 4,
                          name=f"w{attempt}")
        with running(w):
            wait_for(lambda w=w: w.health() is not None or not w.alive(), 120,
                     "the web server", w.log_tail)
            code = w.stop()
        log = w.log_path.read_text(errors="replace")
        assert code == 0, log[-3000:]
        assert "Unclosed AIOKafkaConsumer" not in log, "the ingest left its group"
        assert '"level":"CRITICAL"' not in log, log[-3000:]
