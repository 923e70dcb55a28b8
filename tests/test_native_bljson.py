"""``HeldBaseline.to_json`` (native/src/bljson.rs) against ``orjson.dumps(to_dict())``.

The worker stores a Rust-held baseline from this JSON instead of building
the Python ``Baseline`` and its dict (``stages.encode_state``). It must be
the same document: same keys in the same order, same strings and integers,
floats with the same bits. Compared after a round trip through orjson, so
that an int written for a float (or the reverse) shows as a difference.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector import native
from detector.baseline import DIMENSIONS, EMPTY, TRAFFIC_KEYS, Baseline
from detector.engine import Detector
from detector.events import parse_event
from detector.generate import GeneratorConfig, generate
from detector.model import load_model
from detector.stream import stages

_mod = native.load()
pytestmark = pytest.mark.skipif(_mod is None, reason="compiled module not built")


def _held(b: Baseline) -> Any:
    assert _mod is not None
    m = _mod.BaselineMap()
    m["k"] = b
    return m.pop_held("k")


def _same_document(held: Any) -> bytes:
    expected = orjson.dumps(held.to_dict())
    got: bytes = held.to_json()
    assert got is not None
    assert orjson.dumps(orjson.loads(got)) == expected
    return got


def test_engine_baselines_encode_as_their_dicts() -> None:
    """Every baseline a replay of generated users builds (all shapes the engine writes)."""
    assert _mod is not None
    det = Detector(load_model("models/default"))
    events = [parse_event(orjson.dumps(e))
              for e, _ in generate(GeneratorConfig(users=40, days=4, seed=5))]
    state = det.new_state()
    det.process(events, state)
    keys = list(state.baselines)
    assert len(keys) > 40
    held = [state.baselines.pop_held(k) for k in keys]
    assert {type(h) for h in held} == {_mod.HeldBaseline}
    for h in held:
        assert Baseline.from_dict(orjson.loads(_same_document(h))) == h.to_baseline()
    # Shapes the engine wrote: values with shared affixes, signals, traffic.
    docs = [h.to_dict() for h in held]
    assert any(len(v) > 1 and isinstance(v[1], str) and (v[1] or v[2])
               for d in docs for v in d.get("s", {}).values())
    assert any("tr" in d for d in docs) and any("ls" in d for d in docs)


_text = st.text(alphabet=st.sampled_from(["a", "b", ".", "é", "€", "😀", "\n", '"', "\\", "x"]),
                max_size=8)


@st.composite
def baselines(draw: st.DrawFn) -> Baseline:
    last = draw(st.one_of(st.none(), st.integers(0, 2**42)))
    ref = last or 0
    prefix = draw(_text)
    suffix = draw(_text)
    seen: dict[str, dict[str, tuple[int, int]]] = {}
    for dim in draw(st.lists(st.sampled_from(DIMENSIONS), unique=True, max_size=4)):
        values = draw(st.lists(_text, unique=True, max_size=6))
        seen[dim] = {prefix + v + suffix: (draw(st.integers(0, 10**9)),
                                           draw(st.integers(0, ref // 1000 + 5)))
                     for v in values}
    totals = {d: draw(st.integers(0, 10**9))
              for d in draw(st.lists(st.sampled_from(DIMENSIONS), unique=True, max_size=4))}
    floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
    return Baseline(
        n_seen=draw(st.integers(0, 10**6)),
        n_learned=draw(floats),
        first_ts=draw(st.one_of(st.none(), st.integers(0, ref + 1))),
        last_ts=last,
        t0=draw(st.integers(0, ref + 1)),
        hours=draw(st.dictionaries(st.integers(0, 167), st.integers(0, 10**9), max_size=6)),
        hours_total=draw(st.integers(0, 10**9)),
        seen=seen if seen or draw(st.booleans()) else EMPTY.seen,
        seen_totals=totals,
        last_success=draw(st.one_of(st.none(), st.tuples(
            st.integers(0, ref + 1), floats, floats, st.one_of(st.none(), _text)))),
        fail_rate=draw(st.sampled_from([0.0, -0.0, 0.25, 1e-300])),
        fail_burst=(draw(st.sampled_from([0.0, 1.5, 5e-324])), draw(st.integers(0, ref + 1))),
        new_hosts=(draw(st.sampled_from([0.0, 2.0])), draw(st.integers(0, ref + 1))),
        traffic={k: (draw(floats), draw(floats), draw(floats))
                 for k in draw(st.lists(st.sampled_from(TRAFFIC_KEYS), unique=True, max_size=4))},
        signals=tuple(draw(st.lists(st.tuples(_text, st.integers(0, 3), st.integers(0, ref + 1)),
                                    max_size=3))),
    )


@settings(max_examples=300, deadline=None)
@given(baselines())
def test_any_baseline_the_rust_types_hold_encodes_as_its_dict(b: Baseline) -> None:
    assert _mod is not None
    held = _held(b)
    # Every value drawn fits the Rust types, so each one reaches the encoder.
    assert type(held) is _mod.HeldBaseline
    _same_document(held)


@pytest.mark.parametrize("field,value", [
    ("fail_rate", math.inf),
    ("fail_rate", math.nan),
    ("traffic", {"int_out": (1.0, math.nan, 0.0)}),
])
def test_a_non_finite_float_is_left_to_the_python_path(field: str, value: Any) -> None:
    assert _mod is not None
    held = _held(EMPTY._replace(n_seen=3, **{field: value}))
    if type(held) is _mod.HeldBaseline:
        assert held.to_json() is None
    # The stored form is the Python path's either way.
    assert stages.encode_state(held) == orjson.dumps(held.to_dict())


def test_encode_state_writes_the_rust_json_with_the_applied_log() -> None:
    assert _mod is not None
    b = EMPTY._replace(n_seen=2, n_learned=1.5, last_ts=9_000, first_ts=7_000, t0=7_000,
                       seen={"host": {"srv-1.corp.example": (1000, 9),
                                      "srv-22.corp.example": (2000, 8)}},
                       seen_totals={"host": 3000})
    held = _held(b)
    assert type(held) is _mod.HeldBaseline
    applied = stages.Applied({("in", 0, 0): 41, ("in", 3, 1): 7})
    for log in (None, stages.Applied(), applied):
        got = stages.encode_state(held, log)
        assert orjson.loads(got) == orjson.loads(stages.encode_state(b, log))
    assert orjson.loads(stages.encode_state(held, applied))["s"]["h"][1:3] == [
        "srv-", ".corp.example"]
