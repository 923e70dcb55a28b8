"""The worker's stage logic with no broker: four keyed stages equal the replay."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import orjson
import pytest

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


def _stateful(
    items: list[tuple[str, Routed]],
    store: dict[str, bytes],
    key_of: Callable[[Event], str | None],
    decode: Callable[[Any], Any],
    run: Callable[[dict[str, Any]], tuple[Any, dict[str, Any]]],
) -> tuple[Any, dict[str, Any]]:
    keys = {k for k in (key_of(r.event) for _, r in items) if k is not None}
    states, bad = stages.load_states(keys, store.get, decode)
    assert not bad
    out, changed = run(states)
    for k, v in changed.items():
        store[k] = stages.encode_state(v)
    return out, changed


def _stream(detector: Detector, raws: list[bytes], seed: int) -> list[Decision]:
    """Run the four stages over random micro-batches, state round-tripped through bytes."""
    rng = random.Random(seed)
    msgs = [(r, Source("in", 0, i)) for i, r in enumerate(raws)]
    by_ip: list[tuple[str, Routed]] = []
    for chunk in _chunks(msgs, rng):
        ok, dead = stages.parse_stage(chunk)
        assert not dead
        by_ip += [(k, Routed.from_bytes(r.to_bytes())) for k, r in ok]
    ips: dict[str, bytes] = {}
    by_session: list[tuple[str, Routed]] = []
    for chunk in _chunks(by_ip, rng):
        routed = [r for _, r in chunk]
        out, _ = _stateful(list(chunk), ips, lambda e: e.src_ip, IpContext.from_dict,
                           lambda s, routed=routed: stages.ip_stage(detector, routed, s))
        by_session += out
    sessions: dict[str, bytes] = {}
    by_entity: list[tuple[str, Routed]] = []
    for chunk in _chunks(by_session, rng):
        routed = [r for _, r in chunk]
        out, _ = _stateful(list(chunk), sessions, lambda e: e.session_id,
                           SessionContext.from_dict,
                           lambda s, routed=routed: stages.session_stage(detector, routed, s))
        by_entity += out
    baselines: dict[str, bytes] = {}
    decisions: list[Decision] = []
    for chunk in _chunks(by_entity, rng):
        routed = [r for _, r in chunk]
        out, _ = _stateful(list(chunk), baselines, lambda e: e.entity_key, Baseline.from_dict,
                           lambda s, routed=routed: stages.entity_stage(detector, routed, s))
        decisions += out
    return decisions


@pytest.mark.parametrize("seed", [0, 1])
def test_four_stages_equal_replay(detector: Detector, raws: list[bytes], seed: int) -> None:
    expected = detector.process([parse_event(r) for r in raws], EngineState())
    got = _stream(detector, raws, seed)
    assert [d.to_dict() for d in got] == [d.to_dict() for d in expected]
    assert any(d.signal_id for d in got)


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
