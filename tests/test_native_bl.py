"""Rust-owned baselines (``native/src/blcore.rs``) against their Python specification.

* ``_bl_roundtrip``: ``Baseline -> Bl -> Baseline`` is the identity (types,
  float bits, dict key order, ``_NO_MAP`` identity) on every baseline of a
  replayed generated organisation with attacks, on ``EMPTY``, on
  ``Baseline.from_dict`` outputs and on hypothesis-built baselines; values
  ``Bl`` does not model give None.
* ``_bl_update``: the in-place ``Bl::update`` equals ``detector.baseline.update``
  on every (baseline, event) of the replay at every learning weight the engine
  uses, on long-horizon replays (renormalisation), on chains past every cap
  (evictions with ties) and on hypothesis edge cases.
"""

from __future__ import annotations

import math
import struct
import tempfile
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector import baseline as baseline_module
from detector import native
from detector.baseline import EMPTY, Baseline
from detector.config import DetectorConfig
from detector.engine import Detector, EngineState
from detector.events import Event, parse_event
from detector.generate import GeneratorConfig, write_dataset
from detector.model import Model, load_model
from tests.conftest import DEFAULT_MODEL

# Part of every install: a missing build fails here instead of skipping.
_native: Any = native.load()
assert _native is not None

_NO_MAP: Any = baseline_module._NO_MAP
Call = tuple[Baseline, Event]


# ------------------------------------------------------------------ comparison
def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def deep_same(a: Any, b: Any, path: str = "b") -> None:
    """Assert ``a`` and ``b`` are the same value: types, float bits, key order."""
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, float):
        assert _bits(a) == _bits(b), (path, a, b)
    elif isinstance(a, (dict, MappingProxyType)):
        ka, kb = list(a), list(b)
        assert len(ka) == len(kb), (path, ka, kb)
        for x, y in zip(ka, kb, strict=True):
            deep_same(x, y, f"{path}.key")
            deep_same(a[x], b[y], f"{path}[{x!r}]")
    elif isinstance(a, tuple):
        assert len(a) == len(b), (path, a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            deep_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def assert_same_baseline(got: Any, want: Baseline) -> None:
    """Assert ``got`` is ``want`` in every observable respect (``_NO_MAP`` identity too)."""
    assert type(got) is Baseline
    deep_same(got, want)
    assert repr(got) == repr(want)
    for g, w in zip(got, want, strict=True):
        assert (g is _NO_MAP) == (w is _NO_MAP)


def check_roundtrip(b: Baseline) -> None:
    got = _native._bl_roundtrip(b)
    assert got is not None
    assert_same_baseline(got, b)
    # Both ways: the rebuilt value reads back as the same Bl.
    assert_same_baseline(_native._bl_roundtrip(got), b)


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def model() -> Model:
    return load_model(DEFAULT_MODEL)


def _events(users: int, days: int, seed: int) -> list[Event]:
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(GeneratorConfig(users=users, days=days, seed=seed, attacks=True), Path(tmp))
        lines = (Path(tmp) / "events.jsonl").read_bytes().splitlines()
    return [parse_event(line) for line in lines]


def _record(model: Model, events: list[Event], batch: int = 1000) -> list[Call]:
    """Replay ``events`` through the pure-Python engine; return every update's input."""
    det = Detector(model, native=False)
    calls: list[Call] = []
    python_update = det._update

    def recorder(b: Baseline, e: Event, cfg: DetectorConfig, w: float) -> Baseline:
        calls.append((b, e))
        return python_update(b, e, cfg, w)

    det._update = recorder  # type: ignore[method-assign]
    state = EngineState()
    for i in range(0, len(events), batch):
        det.process(events[i : i + batch], state)
    return calls


@pytest.fixture(scope="module")
def replay_calls(model: Model) -> list[Call]:
    return _record(model, _events(users=120, days=2, seed=11))


# ------------------------------------------------------------------ round trip
def test_roundtrip_replay_baselines(replay_calls: list[Call]) -> None:
    assert len(replay_calls) > 10_000, len(replay_calls)
    seen_ids: set[int] = set()
    for b, _ in replay_calls:
        if id(b) not in seen_ids:
            seen_ids.add(id(b))
            check_roundtrip(b)


def test_roundtrip_empty_and_from_dict(replay_calls: list[Call]) -> None:
    check_roundtrip(EMPTY)
    assert _native._bl_roundtrip(EMPTY).seen is _NO_MAP
    # from_dict builds plain (possibly empty) dicts where EMPTY has _NO_MAP.
    fresh = Baseline.from_dict(EMPTY.to_dict())
    assert type(fresh.hours) is dict and not fresh.hours
    check_roundtrip(fresh)
    assert type(_native._bl_roundtrip(fresh).hours) is dict
    for b, _ in replay_calls[::97]:
        check_roundtrip(Baseline.from_dict(b.to_dict()))


_I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_TEXT = st.text(max_size=6)
_FLOAT = st.floats(allow_nan=True, allow_infinity=True)


def _map(keys: Any, values: Any) -> Any:
    return st.one_of(st.just(_NO_MAP), st.dictionaries(keys, values, max_size=5))


_BASELINES = st.builds(
    Baseline,
    n_seen=_I64,
    n_learned=_FLOAT,
    first_ts=st.none() | _I64,
    last_ts=st.none() | _I64,
    t0=_I64,
    hours=_map(st.integers(0, 167), _I64),
    hours_total=_I64,
    seen=_map(_TEXT, st.dictionaries(_TEXT, st.tuples(_I64, _I64), max_size=4)),
    seen_totals=_map(_TEXT, _I64),
    last_success=st.none() | st.tuples(_I64, _FLOAT, _FLOAT, st.none() | _TEXT),
    fail_rate=_FLOAT,
    fail_burst=st.tuples(_FLOAT, _I64),
    new_hosts=st.tuples(_FLOAT, _I64),
    traffic=_map(_TEXT, st.tuples(_FLOAT, _FLOAT, _FLOAT)),
    signals=st.lists(st.tuples(_TEXT, _I64, _I64), max_size=4).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(_BASELINES)
def test_roundtrip_hypothesis(b: Baseline) -> None:
    if any(not _utf8(s) for s in _strings(b)):
        assert _native._bl_roundtrip(b) is None
    else:
        check_roundtrip(b)


def _strings(x: Any) -> list[str]:
    if isinstance(x, str):
        return [x]
    if isinstance(x, (dict, MappingProxyType)):
        return [s for k, v in x.items() for s in _strings(k) + _strings(v)]
    if isinstance(x, tuple):
        return [s for v in x for s in _strings(v)]
    return []


def _utf8(s: str) -> bool:
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


class _SubDict(dict[Any, Any]):
    pass


class _SubBaseline(Baseline):
    pass


_GOOD = Baseline(
    n_seen=3, n_learned=2.25, first_ts=1, last_ts=5, t0=1, hours={72: 1000, 3: 5},
    hours_total=1005, seen={"country": {"US": (1000, 9), "FR": (5, 1)}},
    seen_totals={"country": 1005}, last_success=(5, 1.5, -2.0, "US"), fail_rate=0.25,
    fail_burst=(1.0, 4), new_hosts=(0.0, 0), traffic={"int_out": (1.0, 2.0, 0.0)},
    signals=(("k", 2, 5),),
)

_ODD: list[Baseline] = [
    _GOOD._replace(n_seen=2**63),
    _GOOD._replace(n_seen=-(2**63) - 1),
    _GOOD._replace(hours_total=2**70),
    _GOOD._replace(n_seen=True),
    _GOOD._replace(t0=1.0),
    _GOOD._replace(first_ts=1.0),
    _GOOD._replace(n_learned=2),
    _GOOD._replace(fail_rate=0),
    _GOOD._replace(fail_rate=True),
    _GOOD._replace(hours=_SubDict(_GOOD.hours)),
    _GOOD._replace(hours=MappingProxyType(dict(_GOOD.hours))),
    _GOOD._replace(hours=MappingProxyType({})),  # another empty proxy is not _NO_MAP
    _GOOD._replace(hours={168: 1}),
    _GOOD._replace(hours={-1: 1}),
    _GOOD._replace(hours={True: 1}),
    _GOOD._replace(hours={"3": 1}),
    _GOOD._replace(hours={3: 1.0}),
    _GOOD._replace(seen=_SubDict(_GOOD.seen)),
    _GOOD._replace(seen={"country": _SubDict({"US": (1, 1)})}),
    _GOOD._replace(seen={"country": _NO_MAP}),
    _GOOD._replace(seen={"country": {"US": [1, 1]}}),
    _GOOD._replace(seen={"country": {"US": (1, 1, 1)}}),
    _GOOD._replace(seen={"country": {"US": (1, 1.0)}}),
    _GOOD._replace(seen={"country": {"\udc80": (1, 1)}}),
    _GOOD._replace(seen={1: {"US": (1, 1)}}),
    _GOOD._replace(seen_totals={"country": 2**64}),
    _GOOD._replace(seen_totals=_SubDict(country=1)),
    _GOOD._replace(last_success=(5, 1, -2.0, "US")),
    _GOOD._replace(last_success=[5, 1.5, -2.0, "US"]),
    _GOOD._replace(last_success=(5, 1.5, -2.0)),
    _GOOD._replace(last_success=(5, 1.5, -2.0, 7)),
    _GOOD._replace(fail_burst=(1, 4)),
    _GOOD._replace(fail_burst=[1.0, 4]),
    _GOOD._replace(new_hosts=(0.0, 0.0)),
    _GOOD._replace(traffic={"int_out": (1.0, 2.0)}),
    _GOOD._replace(traffic={"int_out": (1.0, 2.0, 0)}),
    _GOOD._replace(traffic=_SubDict(_GOOD.traffic)),
    _GOOD._replace(signals=[("k", 2, 5)]),
    _GOOD._replace(signals=(["k", 2, 5],)),
    _GOOD._replace(signals=(("k", 2.0, 5),)),
    _GOOD._replace(signals=(("k", 2, 5, 6),)),
    _GOOD._replace(signals=((b"k", 2, 5),)),
]


def test_roundtrip_good_and_odd() -> None:
    check_roundtrip(_GOOD)
    for odd in _ODD:
        assert _native._bl_roundtrip(odd) is None, odd
    assert _native._bl_roundtrip(_SubBaseline(*_GOOD)) is None
    assert _native._bl_roundtrip(tuple(_GOOD)) is None
    assert _native._bl_roundtrip(None) is None


def test_comparator_detects_differences() -> None:
    """The comparison is strict enough to fail on what a wrong conversion would do."""
    with pytest.raises(AssertionError):
        assert_same_baseline(_GOOD._replace(hours={3: 5, 72: 1000}), _GOOD)  # order
    with pytest.raises(AssertionError):
        assert_same_baseline(_GOOD._replace(n_learned=2.25 + 2**-50), _GOOD)  # bits
    with pytest.raises(AssertionError):
        assert_same_baseline(_GOOD._replace(fail_rate=-0.25), _GOOD._replace(fail_rate=0.25))
    with pytest.raises(AssertionError):
        assert_same_baseline(EMPTY._replace(hours={}), EMPTY)  # dict vs _NO_MAP
    with pytest.raises(AssertionError):
        deep_same(0.0, -0.0)
    with pytest.raises(AssertionError):
        deep_same((1,), [1])
    with pytest.raises(AssertionError):
        deep_same(1, 1.0)
    with pytest.raises(AssertionError):
        deep_same(1, True)
    deep_same(math.nan, math.nan)
