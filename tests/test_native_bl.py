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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector import baseline as baseline_module
from detector import native
from detector.baseline import DIMENSIONS, EMPTY, TRAFFIC_KEYS, Baseline, update
from detector.config import DetectorConfig
from detector.engine import Detector, EngineState
from detector.events import EntityClass, EntityKind, Event, EventKind, parse_event
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
# Values around the 22-byte inline limit of the Rust strings (SStr), in bytes.
_VALUE = (
    _TEXT
    | st.text(min_size=5, max_size=30)
    | st.text(alphabet="aé€😀", min_size=5, max_size=12)
)
# The map keys a Rust-held baseline models (DIMENSIONS, TRAFFIC_KEYS); any
# other key keeps the baseline a Python value.
_KNOWN_NAMES = (*DIMENSIONS, *TRAFFIC_KEYS)
_NAME = st.sampled_from(_KNOWN_NAMES) | _TEXT
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
    seen=_map(_NAME, st.dictionaries(_VALUE, st.tuples(_I64, _I64), max_size=4)),
    seen_totals=_map(_NAME, _I64),
    last_success=st.none() | st.tuples(_I64, _FLOAT, _FLOAT, st.none() | _VALUE),
    fail_rate=_FLOAT,
    fail_burst=st.tuples(_FLOAT, _I64),
    new_hosts=st.tuples(_FLOAT, _I64),
    traffic=_map(_NAME, st.tuples(_FLOAT, _FLOAT, _FLOAT)),
    signals=st.lists(st.tuples(_VALUE, _I64, _I64), max_size=4).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(_BASELINES)
def test_roundtrip_hypothesis(b: Baseline) -> None:
    names = [*b.seen, *b.seen_totals, *b.traffic]
    if any(not _utf8(s) for s in _strings(b)) or any(n not in _KNOWN_NAMES for n in names):
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


# ------------------------------------------------------------------ update
def _outcome(f: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", f(*args)
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome compared
        return "raise", (type(exc), str(exc))


def check_update(b: Baseline, e: Event, cfg: DetectorConfig, w: Any) -> bool:
    """Compare ``_bl_update`` with ``update``; True when the Rust path answered."""
    before = repr(b)
    got = _native._bl_update(b, e, cfg, w)
    assert repr(b) == before, "the input baseline changed"
    if got is None:
        return False
    want = _outcome(update, b, e, cfg, w)
    assert want[0] == "ok", (want, got)
    assert_same_baseline(got, want[1])
    return True


def _weights(cfg: DetectorConfig) -> tuple[float, ...]:
    return (1.0, cfg.step_up_learn_weight, 0.0)


def _renormalises(b: Baseline, e: Event, cfg: DetectorConfig) -> bool:
    half_life_ms = cfg.profile_half_life_days * 86_400_000.0
    return bool(b.hours or b.seen) and (e.ts_ms - b.t0) / half_life_ms > 16.0


def _evicts(b: Baseline, e: Event, cfg: DetectorConfig) -> bool:
    for dim, value in baseline_module.dimension_values(e):
        entries = b.seen.get(dim) or {}
        if value not in entries and len(entries) >= cfg.caps.get(dim, 8):
            return True
    return False


def test_update_replay_every_call_every_weight(model: Model, replay_calls: list[Call]) -> None:
    cfg = model.cfg
    assert cfg.step_up_learn_weight == 0.25
    assert {e.kind for _, e in replay_calls} == {EventKind.AUTH, EventKind.NETWORK}
    for b, e in replay_calls:
        for w in _weights(cfg):
            assert check_update(b, e, cfg, w), (b, e, w)  # realistic input never bails
    assert any(_evicts(b, e, cfg) for b, e in replay_calls)


def test_update_long_horizon_renormalises(model: Model) -> None:
    """Two days stretched to 500 (> 16 half-lives of 21 days): landmarks renormalise."""
    cfg = model.cfg
    events = _events(users=15, days=2, seed=5)
    start = events[0].ts_ms
    calls = _record(model, [e._replace(ts_ms=start + (e.ts_ms - start) * 250) for e in events])
    assert sum(_renormalises(b, e, cfg) for b, e in calls) > 10
    for b, e in calls:
        for w in _weights(cfg):
            assert check_update(b, e, cfg, w)


def _cap_chain(cfg: DetectorConfig, auth: Event, net: Event) -> list[tuple[Baseline, Event, float]]:
    """Chains that push every dimension past its cap, many values per second (ties)."""
    values = ["z", "a", "é", "Z", "\U0001f600", "", "aa", "a\x00", "ü", "b", "é1", "ß"]
    calls: list[tuple[Baseline, Event, float]] = []
    for base_event in (auth, net):
        for internal in (True, False):
            b = EMPTY
            for i in range(60):
                v = values[i % len(values)] + str(i // len(values))
                e = base_event._replace(
                    ts_ms=base_event.ts_ms + (i // 7) * 1000 + i % 7,  # 7 events per second
                    src_country=v, src_city=v, src_asn=i, src_prefix=v, device_id=v,
                    user_agent=v, service=v, dst_hostname=v or None, dst_ip="10.0.0.1",
                    dst_port=i, dst_country=v, dst_asn=i, dst_internal=internal,
                    success=(None, True, False)[i % 3],
                )
                w = (1.0, 0.25, 1.0, 0.5)[i % 4]
                calls.append((b, e, w))
                b = update(b, e, cfg, w)
    return calls


def test_update_caps_reached_evicts(model: Model, replay_calls: list[Call]) -> None:
    auth = next(e for _, e in replay_calls if e.kind is EventKind.AUTH)
    net = next(e for _, e in replay_calls
               if e.kind is EventKind.NETWORK and e.entity_kind is EntityKind.USER)
    for cfg in (model.cfg, DetectorConfig(caps={"country": 1, "host": 2, "device": 3})):
        calls = _cap_chain(cfg, auth, net)
        assert sum(_evicts(b, e, cfg) for b, e, _ in calls) > 100
        for b, e, w in calls:
            for lw in (w, *_weights(cfg)):
                assert check_update(b, e, cfg, lw)


def test_update_config_not_modelled_gives_none(replay_calls: list[Call]) -> None:
    b, e = replay_calls[100]
    for cfg in (DetectorConfig(caps={"country": 2**64}), DetectorConfig(caps={"country": 1.5}),
                DetectorConfig(ew_alpha=math.nan), DetectorConfig(profile_half_life_days=-1.0),
                DetectorConfig(failure_burst_half_life_s=0.0)):
        assert _native._bl_update(b, e, cfg, 1.0) is None
    cfg = DetectorConfig()
    for w in (1, True, None, "1"):
        assert _native._bl_update(b, e, cfg, w) is None
    # An int setting is converted as Python's arithmetic converts it.
    assert check_update(b, e, DetectorConfig(profile_half_life_days=21, ew_alpha=1), 1.0)


# Hypothesis: "sane" values have the types the engine produces but any value
# (NaN, inf, -0.0, unicode, ties, caps reached, far-apart times); "odd" ones
# (huge ints, floats for ints, surrogates...) must give None or Python's result.
_BIG = st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**70, -(2**70)])
_MAX_TS = 4_102_444_800_000
_HALF_LIFE_MS = 21 * 86_400_000
_floats = st.floats() | st.floats(-1e6, 1e6) | st.sampled_from([0.0, -0.0, 0.5, 1.0, 1e6, 2e6])
_SANE = {
    "int": st.integers(-1000, 10**7) | st.integers(-(2**40), 2**40),
    "ts": st.integers(0, _MAX_TS) | st.integers(-(2**50), 2**50),
    "text": st.text(max_size=4) | st.sampled_from(["", "a", "é", "US", "b", "\U0001f600"]),
    "bool": st.booleans(),
    "bytes": st.integers(0, 10**12) | st.sampled_from([0, 2**63 - 1]),
    "map": st.just(_NO_MAP),
    "weight": st.sampled_from([1.0, 0.25, 0.0, 0.5, 1e-9, -1.0, 2.5, math.nan, math.inf, 1e300])
    | st.floats(0.0, 10.0),
}
_ODD_V = {
    "int": _SANE["int"] | _BIG | st.just(1.5) | st.just(True),
    "ts": _SANE["ts"] | st.integers(-(2**63), 2**63 - 1) | _BIG,
    "text": _SANE["text"] | st.sampled_from(["\ud800", "a\ud800"]),
    "bool": st.booleans() | st.just(0),
    "bytes": st.integers(-(2**64), 2**64),
    "map": st.just(_NO_MAP) | st.just(MappingProxyType({})),
    "weight": st.floats() | st.just(1),
}
_SMALL_CAPS = DetectorConfig(caps={"country": 1, "host": 2, "device": 0, "city": -1, "ua": 2})


@st.composite
def _case(draw: Any) -> tuple[Baseline, Event, Any, DetectorConfig]:
    odd = draw(st.integers(0, 7)) == 0
    v = _ODD_V if odd else _SANE
    ints, text, opt = v["int"], v["text"], st.none
    ts = draw(v["ts"])
    near = st.integers(ts - 40 * _HALF_LIFE_MS, ts + 40 * _HALF_LIFE_MS)
    some_ts = near | v["ts"]
    entry = st.tuples(st.integers(0, 5000) | ints, st.integers(-3, 3) | ints)
    entries = st.dictionaries(text, entry, max_size=14)
    key = text | st.sampled_from(list(DIMENSIONS))
    seen = draw(st.dictionaries(key, entries, max_size=3) | v["map"])
    totals = draw(st.fixed_dictionaries({d: st.integers(0, 10**6) | ints for d in seen})
                  | st.dictionaries(key, ints, max_size=3) | v["map"])
    stat = st.tuples(_floats, _floats, _floats) | st.just((-1.0, 0.0, 0.0))
    counter = st.tuples(_floats, some_ts) | st.just((0.0, 0))
    b = Baseline(
        n_seen=draw(st.integers(-1, 100) | ints),
        n_learned=draw(_floats),
        first_ts=draw(opt() | some_ts),
        last_ts=draw(opt() | some_ts),
        t0=draw(some_ts),
        hours=draw(st.dictionaries(st.integers(0, 167), st.integers(0, 10**6) | ints,
                                   max_size=10) | v["map"]),
        hours_total=draw(st.integers(0, 10**9) | ints),
        seen=seen,
        seen_totals=totals,
        last_success=draw(opt() | st.just((1, 2.0, 3.0, "US"))),
        fail_rate=draw(_floats),
        fail_burst=draw(counter),
        new_hosts=draw(counter),
        traffic=draw(st.dictionaries(st.sampled_from(list(TRAFFIC_KEYS)), stat, max_size=4)
                     | v["map"]),
        signals=draw(st.just(()) | st.just((("k", 1, 2),))),
    )
    hosts = seen.get("host") if isinstance(seen, dict) else None
    host = st.sampled_from(list(hosts)) | text if hosts else text
    e = Event(
        event_id="e",
        kind=draw(st.sampled_from(list(EventKind))),
        ts_ms=ts,
        entity="ana",
        entity_kind=draw(st.sampled_from(list(EntityKind))),
        entity_class=EntityClass.EMPLOYEE,
        source_format="native",
        success=draw(opt() | v["bool"]),
        service=draw(opt() | text),
        user_agent=draw(opt() | text),
        src_prefix=draw(opt() | text),
        src_country=draw(opt() | text),
        src_city=draw(opt() | text),
        src_lat=draw(opt() | _floats),
        src_lon=draw(opt() | _floats),
        src_asn=draw(opt() | ints),
        device_id=draw(opt() | text),
        dst_ip=draw(opt() | text),
        dst_hostname=draw(opt() | host),
        dst_port=draw(opt() | ints),
        dst_country=draw(opt() | text),
        dst_asn=draw(opt() | ints),
        dst_internal=draw(opt() | v["bool"]),
        bytes_in=draw(opt() | v["bytes"]),
        bytes_out=draw(opt() | v["bytes"]),
    )
    cfg = draw(st.sampled_from([DetectorConfig(), _SMALL_CAPS]))
    return b, e, draw(v["weight"]), cfg


def _ints(x: Any) -> list[int]:
    if isinstance(x, int):
        return [x]
    if isinstance(x, (dict, MappingProxyType)):
        return [i for k, v in x.items() for i in _ints(k) + _ints(v)]
    if isinstance(x, tuple):
        return [i for v in x for i in _ints(v)]
    return []


def _why_none(b: Baseline, e: Event, cfg: DetectorConfig, w: Any) -> str | None:
    """The reason ``_bl_update`` may give None for this input, or None if it has none."""
    if type(w) is not float:
        return "weight"
    if _native._bl_roundtrip(b) is None:
        return "baseline"
    if _native._bl_update(EMPTY, e, cfg, 0.0) is None:
        return "event"
    want = _outcome(update, b, e, cfg, w)
    if want[0] == "raise":
        return "python raises"
    if _native._bl_roundtrip(want[1]) is None:
        return "result past 64 bits"
    if max(abs(i) for i in _ints(b) + _ints(tuple(e))) >= 2**62:
        return "an intermediate may pass 64 bits"
    return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_case())
def test_update_hypothesis_edge_cases(case: tuple[Baseline, Event, Any, DetectorConfig]) -> None:
    b, e, w, cfg = case
    if not check_update(b, e, cfg, w):
        assert _why_none(b, e, cfg, w) is not None, (b, e, w)


def test_update_bails_where_python_raises(replay_calls: list[Call]) -> None:
    b, e = next((b, e) for b, e in replay_calls if e.kind is EventKind.AUTH and b.n_seen > 3)
    cases = [
        (b._replace(n_seen=-1), e._replace(success=True)),  # 1.0 / (n_seen + 1.0)
        (b._replace(n_seen=2**63 - 1), e),  # n_seen + 1 leaves i64
        (EMPTY._replace(seen={"country": {}}), e._replace(src_country="X")),
    ]
    small = DetectorConfig(caps={"country": 0})
    net = next(e for _, e in replay_calls if e.kind is EventKind.NETWORK)
    for bb, ee in cases + [(b, net._replace(dst_internal=True, bytes_out=-1))]:
        assert _native._bl_update(bb, ee, small, 1.0) is None
    assert _outcome(update, cases[0][0], cases[0][1], small, 1.0)[0] == "raise"
    assert _outcome(update, cases[2][0], cases[2][1], small, 1.0)[0] == "raise"


def test_bench_hook_matches_chained_python(model: Model, replay_calls: list[Call]) -> None:
    cfg = model.cfg
    by_entity: dict[str, list[Event]] = {}
    for _, e in replay_calls:
        by_entity.setdefault(e.entity, []).append(e)
    events = max(by_entity.values(), key=len)
    want = EMPTY
    for e in events:
        want = update(want, e, cfg, 1.0)
    assert_same_baseline(_native._bl_update_bench(EMPTY, events, cfg, 3), want)
