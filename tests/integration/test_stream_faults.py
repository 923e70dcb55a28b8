"""Fault tolerance on the real broker (issue 6, section 2).

Every test here breaks something on purpose, with real processes on a real
Apache Kafka, waits with deadlines (never blindly), and then checks that
nothing was lost:

* **SIGKILL** a worker mid-stream while events flow, then start another
  process with the same app id: every signal of the uninterrupted run is on
  the response topic, and (one partition) every decision and every baseline
  equals the replay's; (four partitions) every event is decided and held
  exactly once by the baselines.
* **Broker restart** under load, on a broker of the test's own
  (``scripts/kafka-local restart``): the worker reconnects by itself and no
  accepted event is lost.
* **Refused output**: the response topic refuses the worker's signals
  (``max.message.bytes`` below a signal's size); the worker fail-stops
  (exit 70) without committing the failed batch, no signal gets out, and a
  new process decides everything once the topic accepts signals again.
  (The retriable variant, ``min.insync.replicas=2`` on one replica, cannot
  refuse anything on Kafka >= 3.7: a test pins that.)
* **Slow revocation consumer**: the response topic's lag grows while the
  handler hangs, then drains, every signal handled once.
* **Poison**: an internal record the engine raises on, between good events
  of the same batch, is dead-lettered with ``engine_error:<Type>`` and its
  origin coordinates, counted, and the events around it are decided.

The expected outputs come from ``detector replay`` on the same events
(``stream_dataset``). Figures are printed (``pytest -s``).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from detector.events import parse_event
from detector.stream.responses import ResponseConsumer
from detector.stream.settings import KafkaConnection
from detector.stream.stages import Routed, Source, decode_records, encode_records
from tests.integration._state import (
    changelog_baselines,
    events_seen,
    replay_baselines,
    replay_decisions,
    wait_all_decided_without_gaps,
)
from tests.integration._stream import (
    DETECTOR,
    REPO,
    WorkerProcess,
    create_topics,
    free_port,
    produce_file,
    read_topic,
    running,
    set_topic_config,
    unique,
    wait_all_decided,
    wait_for,
)

KAFKA_LOCAL = REPO / "scripts" / "kafka-local"


# ------------------------------------------------------------------ helpers


@contextmanager
def _producing(bootstrap: str, events: Path, topic: str, rate: int, log: Path
               ) -> Iterator[subprocess.Popen[bytes]]:
    """``detector produce --rate`` in the background; it must finish cleanly."""
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [DETECTOR, "produce", "--bootstrap-servers", bootstrap, "--events", str(events),
             "--auth-topic", topic, "--network-topic", topic, "--rate", str(rate)],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
        )
        try:
            yield proc
            assert proc.wait(120) == 0, log.read_text(errors="replace")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _prefix(events: Path, n: int, tmp: Path) -> Path:
    """Write the first ``n`` events of ``events`` to a file of their own."""
    lines = [line for line in events.read_bytes().splitlines() if line.strip()]
    path = tmp / f"first-{n}.jsonl"
    path.write_bytes(b"\n".join(lines[:n]) + b"\n")
    return path


def _decisions(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in read_topic(bootstrap, topic, timeout_s=30)]


def _signal_ids(bootstrap: str, topic: str) -> list[str]:
    return [orjson.loads(r.value)["signal_id"] for r in read_topic(bootstrap, topic,
                                                                   timeout_s=20)]


def _wait_signals(bootstrap: str, topic: str, want: set[str], timeout_s: float = 60) -> None:
    wait_for(lambda: want <= set(_signal_ids(bootstrap, topic)), timeout_s,
             f"all {len(want)} expected signals on {topic}")


def _group_lag(bootstrap: str, group: str, topics: dict[str, int]) -> int:
    """Return end offset minus committed offset of ``group``, summed over ``topics``' partitions."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tps = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
        committed = admin.list_group_offsets({group: tps}).get(group, {})
        end = consumer.end_offsets(tps)
        lag = 0
        for tp in tps:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            lag += end[tp] - done
        return lag
    finally:
        consumer.close()
        admin.close()


def _check_replay_equal(decisions: list[dict[str, Any]], expected: list[dict[str, Any]]
                        ) -> None:
    """Exact replay equality (single-partition topology): nothing lost, every copy equal."""
    assert {d["event_id"] for d in decisions} == {d["event_id"] for d in expected}, (
        "every event decided"
    )
    by_id = {d["event_id"]: d for d in expected}
    differ = [d["event_id"] for d in decisions if d != by_id[d["event_id"]]]
    assert differ == [], f"decisions (repeats included) equal the replay's: {differ[:5]}"


# --------------------------------------------------------------- 1. SIGKILL


@pytest.mark.parametrize("partitions", [1, 4])
def test_sigkill_mid_stream_then_restart_loses_nothing_and_learns_nothing_twice(
    kafka_bootstrap: str,
    stream_dataset: tuple[Path, list[dict[str, Any]]],
    tmp_path: Path,
    partitions: int,
) -> None:
    """SIGKILL while events flow (no graceful anything), then a new process resumes.

    One partition: every decision (repeats included) and every baseline in
    the changelog equal the replay's; every replay signal is on the response
    topic. Four partitions (replay equality not claimed, see
    docs/streaming.md): every event is decided, every decided signal is on
    the response topic, and the baselines hold every event exactly once (the
    sum of the entities' ``n`` equals the number of events: a redelivered
    event applied twice, or a lost one, changes the sum).
    """
    events, expected = stream_dataset
    n = len(expected)
    bs = kafka_bootstrap
    inp, resp, dlq, dec = (unique(p) for p in ("in", "resp", "dlq", "dec"))
    create_topics(bs, {inp: partitions, resp: 1, dlq: 1, dec: 1})
    app_id = unique("app")
    # Small batches: the kill lands in the middle of the stream.
    first = WorkerProcess(bs, app_id, tmp_path, [inp], resp, dlq, dec, partitions,
                          name="first", extra=["--batch-max", "100"])
    with running(first):
        first.wait_ready()
        # Events keep arriving while the worker dies and while nobody runs.
        with _producing(bs, events, inp, 400, tmp_path / "produce.log") as producer:
            # A precondition, not a figure: on a loaded machine the first
            # sixth took from 3 s to over 100 s (once past the 120 s default).
            first.wait_decided(n // 6, timeout_s=300)
            producing_at_kill = producer.poll() is None
            first.proc.kill()  # type: ignore[union-attr]
            assert first.proc.wait(30) == -9  # type: ignore[union-attr]
    decided_first = {d["event_id"] for d in _decisions(bs, dec)}
    assert 0 < len(decided_first) < n, (
        f"the kill must land mid-stream (decided {len(decided_first)} of {n})"
    )

    second = WorkerProcess(bs, app_id, tmp_path, [inp], resp, dlq, dec, partitions,
                           name="second")
    with running(second):
        second.wait_ready()
        wait_all_decided_without_gaps(bs, dec, {d["event_id"] for d in expected}, [second],
                                      timeout_s=150)
        skipped = second.metric("detector_redelivered_skipped_total")
        assert second.metric("detector_engine_errors_total") == 0
        assert second.stop() == 0, second.log_tail()

    decisions = _decisions(bs, dec)
    repeats = sum(c - 1 for c in Counter(d["event_id"] for d in decisions).values())
    signals = _signal_ids(bs, resp)
    baselines = changelog_baselines(bs, app_id)
    print(f"\nSIGKILL partitions={partitions}: decided before the kill {len(decided_first)}/{n} "
          f"(producer still running: {producing_at_kill}); decisions {len(decisions)} "
          f"(repeats {repeats}); redeliveries skipped by the restarted worker {skipped:.0f}; "
          f"signals on topic {len(signals)} ({len(set(signals))} distinct)")
    assert {d["event_id"] for d in decisions} == {d["event_id"] for d in expected}, (
        "no event lost"
    )
    assert events_seen(baselines) == n, "every event held by the baselines exactly once"
    if partitions == 1:
        _check_replay_equal(decisions, expected)
        want = {d["signal_id"] for d in expected if d["signal_id"] is not None}
        assert want <= set(signals), f"replay signals missing: {sorted(want - set(signals))}"
        assert set(signals) <= want, "no signal the uninterrupted run does not emit"
        assert baselines == replay_baselines(events), "baselines equal the replay's"
    else:
        decided_signals = {d["signal_id"] for d in decisions if d["signal_id"] is not None}
        assert decided_signals, "the run decided signals"
        assert decided_signals == set(signals), "every decided signal, and only those, is out"
        assert set(baselines) == set(replay_baselines(events)), "the same entities"


# ------------------------------------------------------- 2. broker restart


@contextmanager
def _own_broker(home: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A broker of this test's own (never the session broker); stopped and wiped at the end."""
    port = free_port()
    cport = free_port()
    while cport == port:
        cport = free_port()
    env = {
        **os.environ,
        "KAFKA_LOCAL_HOME": str(home),
        "KAFKA_LOCAL_PORT": str(port),
        "KAFKA_LOCAL_CONTROLLER_PORT": str(cport),
        "KAFKA_LOCAL_PYTHON": sys.executable,
        "KAFKA_LOCAL_SECURITY": "PLAINTEXT",
    }

    def run(cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(KAFKA_LOCAL), cmd], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300, check=False, stdin=subprocess.DEVNULL)

    try:
        started = run("start")
        assert started.returncode == 0, started.stderr
        yield started.stdout.strip().splitlines()[-1], env
    finally:
        stopped = run("stop")
        assert stopped.returncode == 0, stopped.stderr


def test_broker_restart_under_load_worker_reconnects_and_loses_nothing(
    stream_dataset: tuple[Path, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    """Restart the broker (same data, same port) while the worker works through a backlog.

    The worker must ride it out by itself (no restart), and every accepted
    event (acknowledged by the broker before or after the restart) is decided,
    with the replay's decisions (single partition) and every replay signal out.
    """
    events, _ = stream_dataset
    # The restart must land while the worker still has a backlog. The first
    # half is most of the dataset and the worker takes small batches (10
    # events: more fixed cost per event, so a slower drain); the restart
    # follows the first decision (polled every 20 ms). With 100-event
    # batches a faster worker once had all 3,000 decided at the first look:
    # /metrics answers only between batches.
    k = 6000
    part1, part2 = _prefix(events, k // 2, tmp_path), _prefix(events, k, tmp_path)
    second_half = tmp_path / "second-half.jsonl"
    second_half.write_bytes(b"\n".join(part2.read_bytes().splitlines()[k // 2:]) + b"\n")
    expected = replay_decisions(part2)
    assert len(expected) == k

    with _own_broker(tmp_path / "kafka") as (bs, env):
        inp, resp, dlq, dec = (unique(p) for p in ("in", "resp", "dlq", "dec"))
        create_topics(bs, {inp: 1, resp: 1, dlq: 1, dec: 1})
        app_id = unique("app")
        w = WorkerProcess(bs, app_id, tmp_path, [inp], resp, dlq, dec, 1,
                          extra=["--batch-max", "10"])
        with running(w):
            w.wait_ready()
            produce_file(bs, part1, inp)
            deadline = time.monotonic() + 120
            while w.decided() < 1:
                assert w.alive() and time.monotonic() < deadline, w.log_tail()
                time.sleep(0.02)
            before = w.decided()
            restart = subprocess.run([str(KAFKA_LOCAL), "restart"], cwd=REPO, env=env,
                                     capture_output=True, text=True, timeout=300, check=False,
                                     stdin=subprocess.DEVNULL)
            assert restart.returncode == 0, restart.stderr
            assert restart.stdout.strip() == bs, "same address after the restart"
            assert w.alive(), f"worker died with the broker:\n{w.log_tail()}"
            produce_file(bs, second_half, inp)
            wait_all_decided_without_gaps(bs, dec, {d["event_id"] for d in expected}, [w],
                                          timeout_s=150)
            assert w.alive(), "the same worker process continued"
            assert w.metric("detector_engine_errors_total") == 0
            after = w.decided()
            assert w.stop() == 0, w.log_tail()
        decisions = _decisions(bs, dec)
        signals = set(_signal_ids(bs, resp))
        repeats = sum(c - 1 for c in Counter(d["event_id"] for d in decisions).values())
        print(f"\nbroker restart: decided {before:.0f}/{k // 2} when the broker went down, "
              f"{after:.0f} by the same process in all; {len(decisions)} decisions "
              f"(repeats {repeats}); {len(signals)} distinct signals")
        assert before < k // 2, "the restart landed while the worker had a backlog"
        _check_replay_equal(decisions, expected)
        want = {d["signal_id"] for d in expected if d["signal_id"] is not None}
        assert want, "the slice has signals"
        assert want == signals, "every replay signal out, and no other"
        assert changelog_baselines(bs, app_id) == replay_baselines(part2)


# ---------------------------------------------------------- 3. back-pressure


def test_min_insync_cannot_block_a_single_replica_topic(kafka_bootstrap: str) -> None:
    """Why the unwritable-topic test below does not use ``min.insync.replicas``.

    Since Apache Kafka 3.7 the broker caps the effective minimum ISR at the
    replica count, so on a one-broker cluster ``min.insync.replicas=2`` does
    not refuse ``acks=all`` writes (no retriable NOT_ENOUGH_REPLICAS), and a
    replica cannot be assigned to a broker that does not exist. If this test
    fails, the broker enforces it again and the retriable back-pressure case
    can be tested that way.
    """
    bs = kafka_bootstrap
    topic = unique("isr")
    create_topics(bs, {topic: 1})
    set_topic_config(bs, topic, {"min.insync.replicas": "2"})
    probe = KafkaProducer(bootstrap_servers=bs, acks="all", retries=0)
    try:
        assert probe.send(topic, b"probe").get(timeout=15).offset == 0
    finally:
        probe.close(5)


def test_refused_response_topic_fails_stop_without_committing_then_nothing_lost(
    kafka_bootstrap: str,
    stream_dataset: tuple[Path, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    """The response topic refuses the worker's signals: fail-stop, then nothing is lost.

    The topic's ``max.message.bytes`` is set below a signal's size, so the
    broker refuses every signal (MESSAGE_TOO_LARGE, not retriable). The worker
    must stop (exit 70) without committing the failed batch: no signal got
    out, and its input stays uncommitted (the group's lag holds the backlog).
    Once the topic accepts signals again, a new process with the same app id
    decides every event exactly as the replay, sends every signal, and the
    baselines equal the replay's.
    """
    events, _ = stream_dataset
    k = 1500
    chunk = _prefix(events, k, tmp_path)
    expected = replay_decisions(chunk)
    want = {d["signal_id"] for d in expected if d["signal_id"] is not None}
    assert want, "the slice has signals"
    bs = kafka_bootstrap
    inp, resp, dlq, dec = (unique(p) for p in ("in", "resp", "dlq", "dec"))
    create_topics(bs, {inp: 1, resp: 1, dlq: 1, dec: 1})
    app_id = unique("app")
    lag_topics = {f"{app_id}-by-ip": 1, f"{app_id}-by-session": 1, f"{app_id}-by-entity": 1}
    first = WorkerProcess(bs, app_id, tmp_path, [inp], resp, dlq, dec, 1, name="first")
    with running(first):
        first.wait_ready()
        set_topic_config(bs, resp, {"max.message.bytes": "64"})
        produce_file(bs, chunk, inp)
        try:
            code = first.proc.wait(90)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker kept running with a refused output:\n{first.log_tail()}")
    log = first.log_path.read_text(errors="replace")
    assert code == 70, log[-3000:]
    assert "MessageSizeTooLargeError" in log
    decided_first = {d["event_id"] for d in _decisions(bs, dec)}
    # The input topic is read by the direct ingest, in a group of its own.
    lag = _group_lag(bs, app_id, lag_topics) + _group_lag(bs, f"{app_id}-ingest", {inp: 1})
    assert read_topic(bs, resp, timeout_s=5, idle_s=1) == [], "no signal got out"
    assert len(decided_first) < k, "the failed batch and those after it are undecided"
    assert lag > 0, "the undecided events are not committed past"

    set_topic_config(bs, resp, {"max.message.bytes": "1048588"})
    second = WorkerProcess(bs, app_id, tmp_path, [inp], resp, dlq, dec, 1, name="second")
    with running(second):
        second.wait_ready()
        wait_all_decided_without_gaps(bs, dec, {d["event_id"] for d in expected}, [second],
                                      timeout_s=120)
        _wait_signals(bs, resp, want)
        assert second.stop() == 0, second.log_tail()
    print(f"\nrefused response topic: exit {code}; decided {len(decided_first)}/{k} before "
          f"the stop, uncommitted backlog (group lag) {lag} records")
    _check_replay_equal(_decisions(bs, dec), expected)
    assert set(_signal_ids(bs, resp)) == want, "every signal out after the fix, no other"
    assert changelog_baselines(bs, app_id) == replay_baselines(chunk)


def test_slow_revocation_consumer_lag_grows_then_drains_each_signal_once(
    kafka_bootstrap: str,
) -> None:
    """A revocation consumer slower than the signals: lag grows, then drains; no loss, no repeat.

    The handler first hangs (until the test releases it), then takes 50 ms
    per signal. Signals keep being published meanwhile, including redelivered
    copies (same ``signal_id``), as a restarted worker produces them. The
    group's lag grows while the handler hangs, drains to zero afterwards, and
    the handler sees every distinct signal exactly once.
    """
    bs = kafka_bootstrap
    topic, group = unique("resp"), unique("revoker")
    create_topics(bs, {topic: 1})
    distinct = [f"sig-{i:03d}" for i in range(40)]
    burst_1 = distinct[:20] + distinct[:5]  # five redelivered copies
    burst_2 = distinct[20:] + distinct[20:25]
    released = threading.Event()
    entered = threading.Event()
    handled: list[str] = []

    def handler(signal: dict[str, Any]) -> None:
        entered.set()
        released.wait(120)
        time.sleep(0.05)
        handled.append(signal["signal_id"])

    def publish(ids: list[str]) -> None:
        producer = KafkaProducer(bootstrap_servers=bs, acks="all")
        try:
            for sid in ids:
                record = {"schema": "zt-detector.signal/1", "signal_id": sid,
                          "action": "revoke", "entity": "u", "entity_kind": "user"}
                producer.send(topic, key=b"user:u", value=orjson.dumps(record))
            producer.flush(30)
        finally:
            producer.close(10)

    consumer = ResponseConsumer(KafkaConnection(bootstrap_servers=bs), topic, group, handler,
                                allow_unsigned=True)
    stop = threading.Event()
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            consumer.run(stop)
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append(exc)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        publish(burst_1)
        assert entered.wait(60), "the consumer got the first signal"
        lag_1 = _group_lag(bs, group, {topic: 1})
        publish(burst_2)
        lag_2 = _group_lag(bs, group, {topic: 1})
        released.set()
        wait_for(lambda: _group_lag(bs, group, {topic: 1}) == 0, 90,
                 "the response topic's lag to drain")
    finally:
        released.set()
        stop.set()
        thread.join(30)
        consumer.close()
    print(f"\nslow consumer: lag {lag_1} -> {lag_2} while slow, 0 after; handled "
          f"{len(handled)}, duplicates skipped {consumer.stats.duplicates}")
    assert not errors, errors
    assert lag_1 == len(burst_1) and lag_2 == len(burst_1) + len(burst_2), "lag grew"
    assert sorted(handled) == sorted(distinct), "every signal handled exactly once"
    assert consumer.stats.duplicates == 10


# ------------------------------------------------------------------ 4. poison


def _routed(line: bytes, origin: Source) -> Routed:
    return Routed(parse_event(line), origin)


def test_poison_internal_record_is_dead_lettered_counted_and_neighbours_decided(
    kafka_bootstrap: str,
    stream_dataset: tuple[Path, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    """An event the engine raises on, between good events of one batch, then normal input.

    The poison is a routed event with a string ``ts_ms`` (a record no
    upstream stage writes: a version skew or a foreign producer), sent into
    ``<app>-by-entity`` in one internal record with good events of the same
    entity before and after it. It must be dead-lettered with reason
    ``engine_error:TypeError`` and its origin coordinates, counted in
    ``detector_engine_errors_total``, and the worker must decide its
    neighbours and the input that follows.
    """
    events, expected = stream_dataset
    k = 300
    after = _prefix(events, k, tmp_path)
    bs = kafka_bootstrap
    inp, resp, dlq, dec = (unique(p) for p in ("in", "resp", "dlq", "dec"))
    create_topics(bs, {inp: 1, resp: 1, dlq: 1, dec: 1})
    app_id = unique("app")
    origin = "fault-injection"

    def good(i: int) -> Routed:
        line = orjson.dumps({"kind": "auth", "id": f"good-{i}", "ts": 1767225600000 + i * 1000,
                             "user": "poison-neighbour", "ip": "192.0.2.7", "ok": True})
        return _routed(line, Source(origin, 0, i))

    poison_at = Source(origin, 0, 2)
    bad = good(2)
    # A wrong-typed field on purpose: the engine raises TypeError on it.
    wrong: Any = "1767225602000"
    bad = Routed(bad.event._replace(ts_ms=wrong, event_id="poison-1"), poison_at)
    batch = [good(0), good(1), bad, good(3)]
    later = [good(4)]

    w = WorkerProcess(bs, app_id, tmp_path, [inp], resp, dlq, dec, 1)
    with running(w):
        w.wait_ready()
        producer = KafkaProducer(bootstrap_servers=bs, acks="all")
        try:
            for record in (encode_records(batch), encode_records(later)):
                producer.send(f"{app_id}-by-entity", value=record, partition=0)
            producer.flush(30)
        finally:
            producer.close(10)
        produce_file(bs, after, inp)
        good_ids = {r.event.event_id for r in batch + later if r is not bad}
        wait_all_decided(bs, dec, good_ids | {d["event_id"] for d in expected[:k]},
                         timeout_s=120)
        errors = {key: v for key, v in w.metrics().items()
                  if key.startswith("detector_engine_errors_total")}
        alive = w.alive()
        assert w.stop() == 0, w.log_tail()

    print(f"\npoison: engine error metrics {errors}")
    assert alive, "the worker kept running"
    assert errors == {
        'detector_engine_errors_total{error="TypeError",stage="entity"}': 1.0
    }, "counted once, by stage and error type"
    decisions = _decisions(bs, dec)
    decided = Counter(d["event_id"] for d in decisions)
    assert "poison-1" not in decided, "the poison event is not decided"
    assert all(decided[i] == 1 for i in good_ids), "its neighbours decided, once each"
    dead = [orjson.loads(r.value) for r in read_topic(bs, dlq, timeout_s=20)]
    engine = [d for d in dead if d["reason"].startswith("engine_error:")]
    assert len(engine) == 1, dead
    letter = engine[0]
    assert letter["reason"] == "engine_error:TypeError"
    assert letter["stage"] == "entity"
    assert (letter["topic"], letter["partition"], letter["offset"]) == (
        poison_at.topic, poison_at.partition, poison_at.offset
    ), "the poison's origin coordinates"
    assert letter["event_id"] == "poison-1"
    held = decode_records(base64.b64decode(letter["raw_b64"]))
    assert [r.event.event_id for r in held] == ["poison-1"], "the letter holds the poison only"
    # The good neighbour after the poison was decided with the good events
    # before it in its state: the poison left no trace in the baseline.
    baseline = changelog_baselines(bs, app_id)["user:poison-neighbour"]
    assert baseline["n"] == len(good_ids)
