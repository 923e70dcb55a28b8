"""The worker's stage logic with no broker: four keyed stages equal the replay."""

from __future__ import annotations

import base64
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector import native
from detector.baseline import Baseline
from detector.context import IpContext, SessionContext
from detector.engine import Decision, Detector, EngineState
from detector.events import Event, parse_event
from detector.generate import GeneratorConfig, generate
from detector.model import load_model
from detector.stream import stages
from detector.stream.stages import DeadLetter, Routed, Source

T = TypeVar("T")


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(load_model("models/default"))


@pytest.fixture(scope="module")
def raws() -> list[bytes]:
    return [orjson.dumps(e) for e, _ in generate(GeneratorConfig(users=12, days=2, seed=3))]


def _chunks(items: Sequence[T], rng: random.Random) -> Iterator[Sequence[T]]:
    i = 0
    while i < len(items):
        n = rng.randint(1, 300)
        yield items[i:i + n]
        i += n


Topic = list[list[bytes]]  # partition -> records in offset order


class Harness:
    """The worker's topology with plain lists for topics and dicts for tables.

    Each stage reads its input topic's partitions in a seeded random
    interleaving of random micro-batches, decodes internal records, loads
    state with applied logs, runs the stage, forwards packed records and
    writes state back after the outputs are out, as the worker does. With
    ``crash`` > 0 a batch is sometimes processed twice, as after a crash:
    either after its state was written (then its events are redelivered
    duplicates) or before (then the first run's state is lost but its
    outputs were sent). ``learned`` counts, per event id, the runs whose
    state was kept: exactly-once learning means every count is 1.
    """

    def __init__(self, detector: Detector, partitions: int, seed: int, crash: float) -> None:
        self.detector = detector
        self.n = partitions
        self.rng = random.Random(seed)
        self.crash_rng = random.Random(seed + 1000)
        self.crash = crash
        self.learned: Counter[str] = Counter()
        self.decisions: list[Decision] = []
        self.skipped = 0  # redelivered events skipped by the applied logs

    def _schedule(self, topic: Topic) -> Iterator[tuple[int, int, list[bytes]]]:
        cursors = [0] * len(topic)
        live = [p for p in range(len(topic)) if topic[p]]
        while live:
            p = self.rng.choice(live)
            n = self.rng.randint(1, 40)
            chunk = topic[p][cursors[p]:cursors[p] + n]
            yield p, cursors[p], chunk
            cursors[p] += len(chunk)
            if cursors[p] >= len(topic[p]):
                live.remove(p)

    def _runs(self) -> list[bool]:
        """How a batch runs: [True] normally; with a crash, twice (state kept or not)."""
        if self.crash_rng.random() >= self.crash:
            return [True]
        return [self.crash_rng.random() < 0.5, True]

    def parse(self, raws: list[bytes]) -> Topic:
        # The producer keys by entity: origin partition by the entity key.
        origin: Topic = [[] for _ in range(self.n)]
        for raw in raws:
            origin[stages.partition_for(parse_event(raw).entity_key, self.n)].append(raw)
        out: Topic = [[] for _ in range(self.n)]
        for p, first, chunk in self._schedule(origin):
            msgs = [(r, Source("in", p, first + i)) for i, r in enumerate(chunk)]
            for _ in self._runs():  # the parse stage has no state: a rerun resends
                ok, dead = stages.parse_stage(msgs)
                assert not dead
                for part, rec in stages.pack(ok, self.n):
                    out[part].append(rec)
        return out

    def stage(
        self,
        topic: Topic,
        key_of: Callable[[Event], str | None],
        decode: Callable[[Any], Any],
        run: Callable[..., stages.StageResult],
        idempotent: bool,
        forward: bool = True,
    ) -> Topic:
        store: dict[str, bytes] = {}
        out: Topic = [[] for _ in range(self.n)]
        for p, first, chunk in self._schedule(topic):
            msgs = [(r, Source("stage-in", p, first + i)) for i, r in enumerate(chunk)]
            for keep in self._runs():
                items, _, dead = stages.decode_routed(msgs, "test")
                assert not dead
                keys = {k for k in (key_of(r.event) for r in items) if k is not None}
                applied: dict[str, stages.Applied] | None = {} if idempotent else None
                states, bad = stages.load_states(keys, store.get, decode, applied)
                assert not bad
                if applied is None:
                    result = run(self.detector, items, states)
                elif run is stages.entity_stage:
                    result = run(self.detector, items, states, applied, self.n)
                else:
                    result = run(self.detector, items, states, applied)
                self.skipped += len(result.duplicates)
                if forward:
                    for part, rec in stages.pack(result.out, self.n):
                        out[part].append(rec)
                else:
                    self.decisions += result.out
                if keep:
                    for k, v in result.changed.items():
                        store[k] = stages.encode_state(
                            v, applied.get(k) if applied is not None else None)
                    if not forward:
                        self.learned.update(d.event.event_id for d in result.out)
        return out

    def run(self, raws: list[bytes]) -> list[Decision]:
        by_ip = self.parse(raws)
        by_session = self.stage(by_ip, stages.ip_state_key, IpContext.from_dict,
                                stages.ip_stage, idempotent=True)
        by_entity = self.stage(by_session, stages.session_state_key, SessionContext.from_dict,
                               stages.session_stage, idempotent=False)
        self.stage(by_entity, stages.entity_state_key, Baseline.from_dict,
                   stages.entity_stage, idempotent=True, forward=False)
        return self.decisions


def _first(decisions: list[Decision]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for d in decisions:
        seen.setdefault(d.event.event_id, d.to_dict())
    return list(seen.values())


@pytest.mark.parametrize("seed", [0, 1])
def test_four_stages_equal_replay(detector: Detector, raws: list[bytes], seed: int) -> None:
    expected = detector.process([parse_event(r) for r in raws], EngineState())
    got = Harness(detector, partitions=1, seed=seed, crash=0.0).run(raws)
    assert [d.to_dict() for d in got] == [d.to_dict() for d in expected]
    assert any(d.signal_id for d in got)


@pytest.mark.parametrize("seed", [0, 1])
def test_redelivery_is_learned_once_and_decided_as_replay(
    detector: Detector, raws: list[bytes], seed: int
) -> None:
    expected = detector.process([parse_event(r) for r in raws], EngineState())
    harness = Harness(detector, partitions=1, seed=seed, crash=0.3)
    got = harness.run(raws)
    assert harness.skipped > 0, "the crash simulation must redeliver"
    assert _first(got) == [d.to_dict() for d in expected]
    by_id = {d.event.event_id: d.to_dict() for d in expected}
    assert all(d.to_dict() == by_id[d.event.event_id] for d in got), "a rerun decides the same"
    assert set(harness.learned) == set(by_id) and set(harness.learned.values()) == {1}


@pytest.mark.parametrize("seed", [0, 1])
def test_many_partitions_decide_every_event_and_learn_it_once(
    detector: Detector, raws: list[bytes], seed: int
) -> None:
    ids = {parse_event(r).event_id for r in raws}
    harness = Harness(detector, partitions=4, seed=seed, crash=0.3)
    got = harness.run(raws)
    assert harness.skipped > 0
    assert {d.event.event_id for d in got} == ids
    assert set(harness.learned) == ids and set(harness.learned.values()) == {1}


def test_without_applied_logs_redelivery_is_learned_twice(
    detector: Detector, raws: list[bytes]
) -> None:
    # The check above can fail: the same crashes, with no applied logs.
    harness = Harness(detector, partitions=1, seed=0, crash=0.3)
    by_ip = harness.parse(raws)
    by_session = harness.stage(by_ip, stages.ip_state_key, IpContext.from_dict,
                               stages.ip_stage, idempotent=False)
    by_entity = harness.stage(by_session, stages.session_state_key, SessionContext.from_dict,
                              stages.session_stage, idempotent=False)
    harness.stage(by_entity, stages.entity_state_key, Baseline.from_dict,
                  stages.entity_stage, idempotent=False, forward=False)
    assert max(harness.learned.values()) > 1


def test_a_poison_event_is_isolated_and_its_batch_still_decided(
    detector: Detector, raws: list[bytes]
) -> None:
    events = [parse_event(r) for r in raws[:120]]
    items = [Routed(e, Source("in", 0, i)) for i, e in enumerate(events)]
    poison = Routed(events[7]._replace(ts_ms="not a time"), Source("in", 0, 999))
    batch = items[:50] + [poison] + items[50:]

    def run(b: Sequence[Routed], st: dict[str, Any], ap: dict[str, stages.Applied] | None
            ) -> stages.StageResult:
        return stages.entity_stage(detector, b, st, ap, 1)

    with pytest.raises(TypeError):
        run(batch, {}, {})
    result, failures = stages.run_isolated(run, batch, {}, {}, stages.entity_state_key)
    assert [(i, type(e).__name__) for i, e in failures] == [(50, "TypeError")]
    clean, none = stages.run_isolated(run, items, {}, {}, stages.entity_state_key)
    assert none == []
    assert [d.to_dict() for d in result.out] == [d.to_dict() for d in clean.out]
    assert {k: v.to_dict() for k, v in result.changed.items()} == {
        k: v.to_dict() for k, v in clean.changed.items()}


def test_a_kernel_panic_is_isolated_like_any_engine_error(
    detector: Detector, raws: list[bytes]
) -> None:
    """A panic in compiled code (a BaseException) fails its event, not the worker."""
    mod = native.load()
    assert mod is not None
    events = [parse_event(r) for r in raws[:40]]
    items = [Routed(e, Source("in", 0, i)) for i, e in enumerate(events)]
    poison_id = events[13].event_id

    def run(b: Sequence[Routed], st: dict[str, Any], ap: dict[str, stages.Applied] | None
            ) -> stages.StageResult:
        if any(r.event.event_id == poison_id for r in b):
            mod._panic("kernel bug")
        return stages.entity_stage(detector, b, st, ap, 1)

    with pytest.raises(mod.PanicException):
        run(items, {}, {})
    assert not issubclass(mod.PanicException, Exception)  # why it needs naming
    result, failures = stages.run_isolated(run, items, {}, {}, stages.entity_state_key)
    assert [(i, type(e).__name__) for i, e in failures] == [(13, "PanicException")]
    assert len(result.out) == 39


@pytest.mark.parametrize(("size", "given_routes"), [(1, False), (37, False), (400, False),
                                                   (37, True), (400, True)])
def test_held_baselines_carried_between_batches_decide_as_replay(
    detector: Detector, raws: list[bytes], size: int, given_routes: bool
) -> None:
    """The worker's path: a batch's new baselines go to the next batch as returned."""
    mod = native.load()
    assert mod is not None
    events = [parse_event(r) for r in raws]
    items = [Routed(e, Source("in", 0, i)) for i, e in enumerate(events)]
    # Against the pure-Python engine, as one batch: Python Baselines throughout.
    python = Detector(detector.model, native=False)
    whole = stages.entity_stage(python, items, {}, {}, 1)
    held: dict[str, Any] = {}
    applied: dict[str, stages.Applied] = {}
    got: list[Decision] = []
    for start in range(0, len(items), size):
        batch = items[start:start + size]
        states = {k: held[k] for k in {r.event.entity_key for r in batch} if k in held}
        routes = stages.entity_routes([r.event for r in batch], 1) if given_routes else None
        result = stages.entity_stage(detector, batch, states, applied, 1, routes)
        assert set(result.changed) == {r.event.entity_key for r in batch}
        held.update(result.changed)
        got += result.out
    assert [d.to_dict() for d in got] == [d.to_dict() for d in whole.out]
    assert {type(v) for v in held.values()} == {mod.HeldBaseline}
    assert {type(v) for v in whole.changed.values()} == {Baseline}
    assert {k: stages.encode_state(v) for k, v in held.items()} == {
        k: stages.encode_state(v) for k, v in whole.changed.items()}


def test_unrouted_context_stages_give_the_same_items_and_states(
    detector: Detector, raws: list[bytes]
) -> None:
    """route=False (the fused stages) only leaves out the next hop's keys."""
    messages = [(r, Source("in", 0, i)) for i, r in enumerate(raws[:300])]
    routed, dead = stages.parse_stage(messages)
    unrouted, dead_u = stages.parse_stage(messages, route=False)
    assert [r for _, r in unrouted] == [r for _, r in routed] and dead_u == dead
    assert {k for k, _ in unrouted} == {""}
    assert [k for k, _ in routed] == [stages.ip_key(r.event) for _, r in routed]
    items = [r for _, r in routed]
    results = []
    for route in (True, False):
        ips: dict[str, Any] = {}
        ip = stages.ip_stage(detector, items, ips, {}, route=route)
        sessions: dict[str, Any] = {}
        session = stages.session_stage(detector, [r for _, r in ip.out], sessions, route=route)
        results.append((ip, session, ips, sessions))
    (ip, session, ips, sessions), (ip_u, session_u, ips_u, sessions_u) = results
    assert [r for _, r in ip_u.out] == [r for _, r in ip.out]
    assert [r for _, r in session_u.out] == [r for _, r in session.out]
    assert ips_u == ips and sessions_u == sessions
    assert {k for k, _ in ip_u.out} == {""} == {k for k, _ in session_u.out}
    assert [k for k, _ in ip.out] == [stages.session_key(r.event) for _, r in ip.out]
    assert [k for k, _ in session.out] == [r.event.entity_key for _, r in session.out]


def test_applied_log_is_exact_per_path_and_bounded_by_its_window() -> None:
    log = stages.Applied()
    for off in range(0, 100, 3):
        log.add(Source("in", 0, off), path=1)
    assert log.seen(Source("in", 0, 99), path=1) and log.seen(Source("in", 0, 4), path=1)
    assert not log.seen(Source("in", 0, 100), path=1), "a higher offset is new"
    assert not log.seen(Source("in", 0, 50), path=2), "paths are separate"
    assert not log.seen(Source("in", 1, 50), path=1), "partitions are separate"
    log.add(Source("in", 0, 50), path=2)
    log.add(Source("in", 1, 7), path=1)
    assert len(log.offsets) == 3
    log.add(Source("in", 0, 99 + stages.APPLIED_WINDOW + 1), path=3)
    assert sorted(log.offsets) == [("in", 0, 3), ("in", 1, 1)], "the window prunes"
    assert stages.Applied.from_wire(log.to_wire()).offsets == log.offsets


def test_pack_keeps_order_per_partition_and_splits_big_records() -> None:
    events = [parse_event(orjson.dumps({"kind": "auth", "ts": i, "user": f"u{i % 5}"}))
              for i in range(200)]
    routed = [(e.entity_key, Routed(e, Source("in", 0, i))) for i, e in enumerate(events)]
    records = stages.pack(routed, 3, max_bytes=2_000)
    assert all(len(rec) <= 2_000 + 1_000 for _, rec in records)
    got: dict[int, list[int]] = {}
    for part, rec in records:
        got.setdefault(part, []).extend(r.origin.offset for r in stages.decode_records(rec))
    for part, offsets in got.items():
        want = [i for i, (k, _) in enumerate(routed) if stages.partition_for(k, 3) == part]
        assert offsets == want
    assert sum(len(v) for v in got.values()) == 200 and len(records) > 3


def test_partition_for_matches_kafkas_default_partitioner() -> None:
    # kafka-python's murmur2 (the Java client's algorithm) and Kafka's
    # positive-modulo rule: a keyed producer would pick the same partitions.
    from kafka.partitioner.default import murmur2

    keys = ["user:alice", "device:cam-1", "203.0.113.7", "s-1", "ü"]
    assert [stages.partition_for(k, 8) for k in keys] == [
        (murmur2(k.encode()) & 0x7FFFFFFF) % 8 for k in keys]
    assert len({stages.partition_for(f"user:{i}", 8) for i in range(100)}) == 8


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=40),
    st.text(st.characters(exclude_categories=()), max_size=20),  # surrogates too
    st.integers(1, 1000),
)
def test_compiled_murmur2_is_kafkas(data: bytes, key: str, partitions: int) -> None:
    """native/src/kafka.rs against aiokafka's pure-Python murmur2, every tail length."""
    from aiokafka.partitioner import murmur2

    mod = native.load()
    assert mod is not None and stages._partition_kernel is not None  # the worker uses it
    assert mod.murmur2(data) == murmur2(data)
    try:
        want = (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
    except UnicodeEncodeError:  # lone surrogates: both refuse the key
        with pytest.raises(UnicodeEncodeError):
            stages.partition_for(key, partitions)
        return
    assert stages.partition_for(key, partitions) == want


def test_keys_route_auth_by_ip_and_session_else_entity() -> None:
    auth = parse_event(b'{"kind":"auth","ts":1,"user":"a","ip":"192.0.2.1","session":"s1"}')
    net = parse_event(b'{"kind":"network","ts":1,"device":"cam-1","ip":"10.0.0.1"}')
    assert (stages.ip_key(auth), stages.session_key(auth)) == ("192.0.2.1", "s1")
    assert (stages.ip_key(net), stages.session_key(net)) == (net.entity_key, net.entity_key)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"{", "not_json"), (None, "not_json"), (b"[]", "not_object"),
     (b'{"kind":"auth","ts":1}', "missing_entity")],
)
def test_parse_stage_dead_letters_with_source_and_bytes(raw: bytes | None, reason: str) -> None:
    ok, dead = stages.parse_stage([(raw, Source("zt.auth", 3, 42))])
    assert ok == []
    (d,) = dead
    rec = orjson.loads(d.to_bytes())
    assert (rec["reason"], rec["topic"], rec["partition"], rec["offset"], rec["stage"]) == (
        reason, "zt.auth", 3, 42, "parse")
    assert base64.b64decode(rec["raw_b64"]) == (raw or b"")


@pytest.mark.parametrize(
    "raw", [b"", b"{}", b'{"v":2,"e":[],"o":["t",0,0],"i":null,"s":null}',
            b'{"v":1,"e":[1,2],"o":["t",0,0],"i":null,"s":null}']
)
def test_bad_internal_records_are_dead_lettered(raw: bytes) -> None:
    items, index, dead = stages.decode_routed([(raw, Source("x-by-ip", 0, 9))], "ip")
    assert items == [] and index == []
    assert [d.reason for d in dead] == [stages.BAD_INTERNAL_RECORD]


def test_undecodable_state_is_reported_not_raised() -> None:
    store = {"ok": stages.encode_state(Baseline()), "bad": b'{"v": 999}', "junk": b"\xff"}
    states, bad = stages.load_states(["ok", "bad", "junk", "new"], store.get,
                                     Baseline.from_dict)
    assert list(states) == ["ok"] and sorted(bad) == ["bad", "junk"]


def test_dead_letter_never_carries_the_raw_event_in_clear() -> None:
    d = DeadLetter("not_json", "x", "parse", Source("t", 0, 0), b'{"password":"hunter2"')
    assert b"hunter2" not in d.to_bytes()


def test_parse_stage_rejects_events_far_after_their_record_time() -> None:
    raw = b'{"kind":"auth","ts":1767225900000,"user":"a"}'  # 300 s after the record below
    msgs = [(raw, Source("in", 0, 0)), (raw, Source("in", 0, 1))]
    ok, dead = stages.parse_stage(msgs, [1767225600000, 1767225600000], 299_000)
    assert ok == [] and [d.reason for d in dead] == ["bad_time", "bad_time"]
    ok, dead = stages.parse_stage(msgs, [1767225600000, None], 300_000)
    assert len(ok) == 2 and dead == [], "within the bound, or no record time: accepted"
    ok, dead = stages.parse_stage(msgs)
    assert len(ok) == 2, "no bound without record times (replay)"


def test_applied_log_prunes_when_an_entry_is_added_not_when_one_moves_up() -> None:
    log = stages.Applied()
    log.add(Source("in", 0, 10), path=1)
    log.add(Source("in", 0, 20), path=2)
    far = 20 + stages.APPLIED_WINDOW + 5
    log.add(Source("in", 0, far), path=2)  # moves path 2 up: nothing added, nothing dropped
    assert log.offsets == {("in", 0, 1): 10, ("in", 0, 2): far}
    assert log.seen(Source("in", 0, 10), path=1), "still remembered"
    log.add(Source("in", 0, far + 1), path=3)  # a new entry applies the window
    assert log.offsets == {("in", 0, 2): far, ("in", 0, 3): far + 1}
    assert len(log.offsets) == 2


@pytest.mark.skipif(native.load() is None, reason="compiled kernels not built")
@pytest.mark.parametrize("partitions", [1, 4, 7])
def test_entity_routes_kernel_gives_the_keys_and_paths_of_python(
    raws: list[bytes], partitions: int
) -> None:
    events = [parse_event(r) for r in raws[:3000]]
    # Auth events without a source IP or a session, unicode keys, a device entity.
    events += [
        parse_event(orjson.dumps({"kind": "auth", "ts": 1, "user": "zoë", "session_id": "s1"})),
        parse_event(orjson.dumps({"kind": "auth", "ts": 2, "user": "用户", "src_ip": "10.0.0.9"})),
        parse_event(orjson.dumps({"kind": "auth", "ts": 3, "user": "ana"})),
    ]
    kinds = Counter((e.kind, e.src_ip is None, e.session_id is None) for e in events)
    assert len(kinds) >= 4 and Counter(e.entity_kind for e in events)["device"] > 0, (
        "auth with and without IP and session, network events, device entities")
    kernel = stages._entity_routes_kernel
    assert kernel is not None
    got = kernel(events, stages.EventKind.AUTH, partitions)
    assert got == ([e.entity_key for e in events],
                   [stages.entity_path(e, partitions) for e in events])
    assert stages.entity_routes(events, partitions) == got
    # Not an event: the kernel declines, the Python way decides (here: raises).
    assert kernel([*events[:3], ("not", "an", "event")], stages.EventKind.AUTH, 4) is None
    odd = events[0]._replace(entity="\ud800")  # a lone surrogate has no UTF-8 form
    assert kernel([odd], stages.EventKind.AUTH, 4) is None
    with pytest.raises(AttributeError):
        stages.entity_routes([("not", "an", "event")], 4)  # type: ignore[list-item]


def test_the_tuple_builders_of_routed_and_source_give_every_field() -> None:
    # stages builds them from complete tuples (no defaults applied): a field
    # added to either class must be added where they are built too.
    assert Routed._fields == ("event", "origin", "ip", "session_changes")
    assert Source._fields == ("topic", "partition", "offset")
    assert stages.new_source(("t", 1, 2)) == Source("t", 1, 2)
    assert type(stages.new_source(("t", 1, 2))) is Source
    e = parse_event(b'{"kind": "auth", "ts": 1, "user": "ana"}')
    [(_, routed)], _ = stages.parse_stage([(b'{"kind": "auth", "ts": 1, "user": "ana"}',
                                            Source("t", 0, 5))])
    assert routed == Routed(e, Source("t", 0, 5)) and type(routed) is Routed


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 2), st.integers(0, 40)),
                max_size=60))
def test_offset_tracker_observe_all_is_observe_on_each(
    coords: list[tuple[str, int, int]],
) -> None:
    sources = [Source(*c) for c in coords]
    one, many = stages.OffsetTracker(), stages.OffsetTracker()
    want = [(s, skipped) for s in sources if (skipped := one.observe(s))]
    assert many.observe_all(sources) == want
    assert many._next == one._next


@pytest.mark.parametrize("given_routes", [False, True])
def test_a_redelivered_batch_with_its_routes_decides_only_the_new_events(
    detector: Detector, raws: list[bytes], given_routes: bool
) -> None:
    events = [parse_event(r) for r in raws[:600]]
    items = [Routed(e, Source("in", i % 2, i)) for i, e in enumerate(events)]
    held: dict[str, Any] = {}
    applied: dict[str, stages.Applied] = {}

    def run(batch: list[Routed]) -> stages.StageResult:
        states = {k: held[k] for k in {r.event.entity_key for r in batch} if k in held}
        routes = stages.entity_routes([r.event for r in batch], 4) if given_routes else None
        result = stages.entity_stage(detector, batch, states, applied, 4, routes)
        held.update(result.changed)
        return result

    first = run(items[:300])
    again = run(items[200:600])  # 100 redelivered, 300 new
    assert len(first.out) == 300 and len(again.duplicates) == 100
    assert [d.event for d in again.out] == events[300:]
    held_once: dict[str, Any] = {}
    once = stages.entity_stage(detector, items, held_once, {}, 4)
    assert [d.to_dict() for d in first.out + again.out] == [d.to_dict() for d in once.out]
    assert {k: stages.encode_state(v) for k, v in held.items()} == {
        k: stages.encode_state(v) for k, v in once.changed.items()}


def test_state_keys_per_batch_are_the_per_event_ones_and_ip_stage_takes_them(
    detector: Detector, raws: list[bytes]
) -> None:
    events = [parse_event(r) for r in raws[:800]]
    items = [Routed(e, Source("in", 0, i)) for i, e in enumerate(events)]
    assert stages.ip_state_keys(items) == [stages.ip_state_key(e) for e in events]
    assert stages.session_state_keys(items) == [stages.session_state_key(e) for e in events]
    assert {k for k in stages.ip_state_keys(items) if k is not None}, "some auth events"
    assert None in stages.ip_state_keys(items), "and some others"
    given_ips: dict[str, IpContext] = {}
    given_applied: dict[str, stages.Applied] = {}
    given = stages.ip_stage(detector, items[:500], given_ips, given_applied,
                            keys=stages.ip_state_keys(items[:500]))
    again = stages.ip_stage(detector, items[400:], given_ips, given_applied,
                            keys=stages.ip_state_keys(items[400:]))
    plain_ips: dict[str, IpContext] = {}
    plain_applied: dict[str, stages.Applied] = {}
    plain = stages.ip_stage(detector, items[:500], plain_ips, plain_applied)
    plain_again = stages.ip_stage(detector, items[400:], plain_ips, plain_applied)
    assert given.out == plain.out and again.out == plain_again.out
    assert given.changed == plain.changed and again.changed == plain_again.changed
    assert len(again.duplicates) == len(plain_again.duplicates) > 0
    assert given_ips == plain_ips
    assert {k: v.offsets for k, v in given_applied.items()} == {
        k: v.offsets for k, v in plain_applied.items()}


def _python_fresh(items: Sequence[Routed], keys: Sequence[str | None],
                  applied: dict[str, stages.Applied], paths: Sequence[int] | None
                  ) -> tuple[list[Routed], list[Routed], set[str]]:
    """``stages._fresh`` with its compiled loop switched off."""
    kernel = stages._fresh_kernel
    try:
        stages._fresh_kernel = None  # type: ignore[misc]
        return stages._fresh(items, keys, applied, paths)
    finally:
        stages._fresh_kernel = kernel  # type: ignore[misc]


_coords = st.lists(
    st.tuples(st.sampled_from([None, "a", "b", "c"]), st.sampled_from(["in", "x"]),
              st.integers(0, 2), st.integers(0, 3) | st.just(stages.APPLIED_WINDOW * 3),
              st.integers(0, 2)),
    max_size=50)


@pytest.mark.skipif(native.load() is None, reason="compiled kernels not built")
@settings(max_examples=300, deadline=None)
@given(st.lists(_coords, min_size=1, max_size=4), st.booleans())
def test_fresh_kernel_splits_and_applies_as_the_python_loop(
    batches: list[list[tuple[str | None, str, int, int, int]]], with_paths: bool
) -> None:
    assert stages._fresh_kernel is not None
    e = parse_event(b'{"kind": "auth", "ts": 1, "user": "ana"}')
    compiled: dict[str, stages.Applied] = {}
    python: dict[str, stages.Applied] = {}
    offset = 0
    for batch in batches:
        items, keys, paths = [], [], []
        for key, topic, partition, step, path in batch:
            # Mostly rising offsets, with redeliveries (a step of 0 repeats
            # one) and jumps past the window (old entries dropped).
            offset = max(0, offset + step - 1)
            items.append(Routed(e, Source(topic, partition, offset)))
            keys.append(key)
            paths.append(path)
        given_paths = paths if with_paths else None
        got = stages._fresh(items, keys, compiled, given_paths)
        want = _python_fresh(items, keys, python, given_paths)
        assert got == want
        assert all(r is w for r, w in zip(got[0] + got[1], want[0] + want[1], strict=True))
        assert {k: v.offsets for k, v in compiled.items()} == {
            k: v.offsets for k, v in python.items()}
        assert all(type(v) is stages.Applied for v in compiled.values())


@pytest.mark.skipif(native.load() is None, reason="compiled kernels not built")
def test_fresh_kernel_declines_other_items_and_uses_a_logs_own_methods() -> None:
    kernel = stages._fresh_kernel
    assert kernel is not None
    e = parse_event(b'{"kind": "auth", "ts": 1, "user": "ana"}')
    plain = [(e, Source("in", 0, 1))]  # a tuple, not a Routed: nothing touched
    applied: dict[str, stages.Applied] = {}
    assert kernel(plain, ["k"], applied, None, stages.Applied, Routed, Source) is None
    assert applied == {}

    class Logged(stages.Applied):
        __slots__ = ("calls",)

        def __init__(self) -> None:
            super().__init__(None)
            self.calls: list[str] = []

        def seen(self, origin: Source, path: int = 0) -> bool:
            self.calls.append("seen")
            return super().seen(origin, path)

        def add(self, origin: Source, path: int = 0) -> None:
            self.calls.append("add")
            super().add(origin, path)

    log = Logged()
    log.offsets = {("in", 0, 0): 5}
    class Origin(Source):
        pass

    # An origin that is not exactly a Source: the log's own methods decide.
    odd = Routed(e, Origin("in", 0, 9))
    fresh, dups, touched = stages._fresh([odd, odd], ["k", "k"], {"k": log})
    assert (fresh, dups, touched) == ([odd], [odd], {"k"})
    assert log.calls == ["seen", "add", "seen"]
    assert log.offsets == {("in", 0, 0): 9}
    # A log of a subclass of Applied, with plain Sources: its methods still decide.
    log.calls.clear()
    again, later = Routed(e, Source("in", 0, 9)), Routed(e, Source("in", 0, 12))
    fresh, dups, touched = stages._fresh([again, later], ["k", "k"], {"k": log})
    assert (fresh, dups, touched) == ([later], [again], {"k"})
    assert log.calls == ["seen", "seen", "add"]
    assert log.offsets == {("in", 0, 0): 12}
    with pytest.raises(IndexError):
        stages._fresh([Routed(e, Source("in", 0, 1))], [], {})


@pytest.mark.skipif(native.load() is None, reason="compiled kernels not built")
@pytest.mark.parametrize("route", [False, True])
def test_ip_and_session_stages_build_their_outputs_as_python(
    detector: Detector, raws: list[bytes], route: bool
) -> None:
    assert stages._rerouted_kernel is not None
    events = [parse_event(r) for r in raws[:700]]
    items = [Routed(e, Source("in", 0, i)) for i, e in enumerate(events)]

    def both(run: Callable[[], stages.StageResult]) -> tuple[stages.StageResult, ...]:
        kernel = stages._rerouted_kernel
        got = run()
        try:
            stages._rerouted_kernel = None  # type: ignore[misc]
            want = run()
        finally:
            stages._rerouted_kernel = kernel  # type: ignore[misc]
        return got, want

    ip_got, ip_want = both(lambda: stages.ip_stage(detector, items, {}, {}, route=route))
    assert ip_got == ip_want and len(ip_got.out) == len(items)
    assert all(type(r) is Routed for _, r in ip_got.out)
    assert any(r.ip is not None for _, r in ip_got.out)
    assert [k for k, _ in ip_got.out] == (
        [stages.session_key(e) for e in events] if route else [""] * len(events))
    routed = [r for _, r in ip_got.out]
    s_got, s_want = both(lambda: stages.session_stage(detector, routed, {}, route=route))
    assert s_got == s_want and all(type(r) is Routed for _, r in s_got.out)
    assert any(r.session_changes is not None for _, r in s_got.out), "some sessions"
    assert [r.ip for _, r in s_got.out] == [r.ip for r in routed]
    # A length mismatch is the caller's: the kernel declines, zip(strict) raises.
    assert stages._with_field(items, [None], stages._ROUTED_IP, "") is None
    assert stages._rerouted_kernel(Routed, items[:2], [1, 2], 2, "") == [
        ("", items[0]._replace(ip=1)), ("", items[1]._replace(ip=2))]
    assert stages._rerouted_kernel(Routed, [tuple(items[0])], [1], 2, "") is None
