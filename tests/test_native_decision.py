"""The compiled decision encoder: ``orjson.dumps(decision.to_dict())``, or None.

``native/src/decision.rs`` (``DecisionEncoder``) writes the decision record
that the worker sends to the decisions topic and ``detector replay`` writes
per line; :func:`detector.engine.decision_json` tries it first. Its contract:
None (a doubt: ``to_dict`` decides), or JSON with the same keys in the same
order and the same values (floats of the same bits: ``round(x, 6)`` exactly as
Python rounds). These tests hold it to that on every decision of replayed
generated data (where its bytes also equal orjson's), on hypothesis decisions
with arbitrary text and floats (exact rounding ties included), and on the
values it must leave to ``to_dict``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector import native
from detector.engine import (
    Decision,
    Detector,
    decision_json,
    keyed_decision_json,
    use_native_decision_json,
)
from detector.events import ParseError, parse_event
from detector.generate import GeneratorConfig, write_dataset
from detector.model import load_model
from detector.policy import Action, Reason
from tests.test_native_parse import FUZZ

MODULE = native.load()
pytestmark = pytest.mark.skipif(MODULE is None, reason="detector._native is not built")


@contextmanager
def python_only() -> Iterator[None]:
    """Within the block, decision_json uses orjson.dumps(to_dict()) only."""
    assert not use_native_decision_json(False)
    try:
        yield
    finally:
        assert use_native_decision_json(True)


def encoder() -> Any:
    assert MODULE is not None
    return MODULE.DecisionEncoder()


def _bits(v: Any) -> Any:
    """A JSON value with floats as their bits (so 0.1 == 0.1 only bit for bit, -0.0 != 0.0)."""
    if type(v) is float:
        return ("float", struct.pack("<d", v))
    if type(v) is dict:
        return ("dict", [(k, _bits(x)) for k, x in v.items()])  # key order matters
    if type(v) is list:
        return ("list", [_bits(x) for x in v])
    return (type(v).__name__, v)


def same_record(compiled: bytes, decision: Decision) -> None:
    assert _bits(orjson.loads(compiled)) == _bits(orjson.loads(orjson.dumps(decision.to_dict())))


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> list[Decision]:
    out = tmp_path_factory.mktemp("gen")
    write_dataset(GeneratorConfig(users=60, days=4, seed=17), out)
    events = []
    for line in (out / "events.jsonl").read_bytes().splitlines():
        try:
            events.append(parse_event(line))
        except ParseError:
            continue
    detector = Detector(load_model("models/default"))
    state = detector.new_state()
    decisions: list[Decision] = []
    for i in range(0, len(events), 200):
        decisions.extend(detector.process(events[i:i + 200], state))
    return decisions


def test_every_replayed_decision_is_written_as_orjson_writes_it(replayed: list[Decision]) -> None:
    enc = encoder()
    assert len(replayed) > 5_000
    assert any(d.reasons for d in replayed) and any(d.signal_id for d in replayed)
    assert {d.action for d in replayed} == set(Action)
    for d in replayed:
        compiled = enc.encode(d)
        assert compiled is not None, d.event_id  # none of these is a doubt
        same_record(compiled, d)
        # On these values the shortest float text is orjson's too.
        assert compiled == orjson.dumps(d.to_dict()), d.event_id
        assert decision_json(d) == compiled


TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=0.0, max_value=1.0),
    # Exact binary ties of the sixth decimal: 15625 * k / 2e6 = k * 2**-7, k odd.
    st.integers(min_value=-10_000, max_value=10_000).map(lambda k: (2 * k + 1) / 128),
    st.integers(min_value=0, max_value=2_000_000).map(lambda n: (n + 0.5) / 1e6),
)


@FUZZ
@given(data=st.data())
def test_hypothesis_decisions_have_the_same_values(replayed: list[Decision], data: Any) -> None:
    d = data.draw(st.sampled_from(replayed))
    reasons = tuple(Reason(data.draw(TEXT), data.draw(TEXT), data.draw(TEXT))
                    for _ in range(data.draw(st.integers(0, 3))))
    event = d.event._replace(
        event_id=data.draw(TEXT), entity=data.draw(TEXT),
        session_id=data.draw(st.none() | TEXT),
        ts_ms=data.draw(st.integers(0, 2**62)),
    )
    changed = d._replace(
        event=event, risk=data.draw(FLOATS), model_risk=data.draw(FLOATS),
        score=data.draw(FLOATS), learn_weight=data.draw(FLOATS | st.integers(0, 1)),
        reasons=reasons, cold_start=data.draw(st.booleans()),
        signal_id=data.draw(st.none() | TEXT), model_version=data.draw(TEXT),
        action=data.draw(st.sampled_from(list(Action))),
    )
    compiled = encoder().encode(changed)
    assert compiled is not None
    same_record(compiled, changed)


def test_ties_of_the_sixth_decimal_round_as_python_rounds(replayed: list[Decision]) -> None:
    """x * 1e6 exactly halfway between two integers: ties to even, as round(x, 6)."""
    enc = encoder()
    ties = [(2 * k + 1) / 128 for k in range(-400, 400)]  # k * 2**-7: exact halves
    assert round(1 / 128, 6) == 0.007812  # a tie, rounded to even
    for x in ties:
        d = replayed[0]._replace(risk=x, model_risk=-x, score=x * 5)
        compiled = enc.encode(d)
        assert compiled is not None
        same_record(compiled, d)
        assert orjson.loads(compiled)["risk"] == round(x, 6)


@pytest.mark.parametrize(
    "change",
    [
        {"risk": float("nan")},  # orjson writes null; to_dict decides
        {"score": float("inf")},
        {"learn_weight": "1"},
        {"cold_start": 1},
        {"reasons": [Reason("a", "b", "c")]},  # a list, not the tuple to_dict is given
        {"signal_id": 5},
    ],
)
def test_values_of_another_type_are_left_to_to_dict(replayed: list[Decision],
                                                    change: dict[str, Any]) -> None:
    d = replayed[0]._replace(**change)
    assert encoder().encode(d) is None
    assert decision_json(d) == orjson.dumps(d.to_dict())


def test_subclasses_and_lone_surrogates_are_doubts(replayed: list[Decision]) -> None:
    class Mine(Decision):
        def to_dict(self) -> dict[str, Any]:
            return {"mine": True}

    mine = Mine(*replayed[0])
    assert encoder().encode(mine) is None
    assert decision_json(mine) == b'{"mine":true}'
    surrogate = replayed[0]._replace(model_version="\udc80")
    assert encoder().encode(surrogate) is None
    with pytest.raises(orjson.JSONEncodeError):  # as before the encoder existed
        decision_json(surrogate)


def test_python_only_switch_writes_the_same_bytes_here(replayed: list[Decision]) -> None:
    compiled = [decision_json(d) for d in replayed[:500]]
    with python_only():
        assert [decision_json(d) for d in replayed[:500]] == compiled


def test_keyed_records_are_the_entity_keys_and_decision_json(replayed: list[Decision]) -> None:
    class Mine(Decision):
        def to_dict(self) -> dict[str, Any]:
            return {"mine": True}

    batch = [*replayed[:400], Mine(*replayed[0]),
             replayed[1]._replace(risk=1),  # an int: a doubt, to_dict decides
             replayed[2]._replace(event=replayed[2].event._replace(entity="zoë 用户"))]
    want = [(d.event.entity_key, decision_json(d)) for d in batch]
    assert want[-3][1] == b'{"mine":true}' and want[-1][0].endswith("zoë 用户")
    got = keyed_decision_json(batch)
    assert got == want and all(type(k) is str for k, _ in got)
    assert keyed_decision_json(tuple(batch)) == want
    with python_only():
        assert keyed_decision_json(batch) == want
    # A key the encoder cannot build (a lone surrogate) is the event's own.
    odd = replayed[3]._replace(event=replayed[3].event._replace(entity="\ud800"))
    [(key, _)] = encoder().encode_keyed([odd], lambda d: b"fallback")
    assert key == odd.event.entity_key
    assert encoder().encode_keyed([], decision_json) == []
