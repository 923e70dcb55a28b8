"""The compiled ``UpdateKernel`` against ``detector.baseline.update``, its specification.

Differential: every (baseline, event) that a pure-Python replay of a generated
organisation (with attacks) hands to ``update``, at every learning weight the
engine uses; a long-horizon replay (timestamps stretched past 16 half-lives,
so that baselines renormalise); chains that fill every dimension past its cap
(eviction, with ties on weight and time so the value order decides); and
hypothesis cases (odd types, huge ints, NaN, unicode, surrogates). Results must
match exactly: ``==``, the type of every field and nested value, float bits,
dict key order, ``to_dict()`` and its JSON bytes; the input must not change.
"""

from __future__ import annotations

import math
import struct
import tempfile
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
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
_native = native.load()
assert _native is not None

# The shared empty mapping of default Baseline fields; another proxy is "odd".
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
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), (path, a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            deep_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def freeze(x: Any) -> Any:
    """Return a structural snapshot of ``x`` (types, float bits, key order)."""
    if isinstance(x, float):
        return ("f", _bits(x))
    if isinstance(x, (dict, MappingProxyType)):
        return (type(x), tuple((freeze(k), freeze(v)) for k, v in x.items()))
    if isinstance(x, (tuple, list)):
        return (type(x), tuple(freeze(v) for v in x))
    return (type(x), x)


def _outcome(f: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", f(*args)
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome compared
        return "raise", (type(exc), str(exc))


def assert_same_result(got: Baseline, want: Baseline, full: bool = True) -> None:
    """Assert the kernel's result is Python's in every observable respect.

    ``repr`` shows every value's type (1 vs 1.0 vs True, tuple vs list), the
    shortest repr that round-trips each float's bits (-0.0 included) and
    every dict's key order: it is the quick exact check; ``full`` adds the
    structural walk (NaN bits too), ``to_dict()`` and its JSON bytes.
    """
    assert type(got) is Baseline
    assert [type(v) for v in got] == [type(v) for v in want]
    text = repr(want)
    assert repr(got) == text
    if "nan" not in text:  # NaN != NaN (but tuples compare identical items equal)
        assert got == want
    if not full:
        return
    deep_same(got, want)
    d_got, d_want = _outcome(Baseline.to_dict, got), _outcome(Baseline.to_dict, want)
    assert d_got[0] == d_want[0]
    if d_want[0] == "ok":
        deep_same(d_got[1], d_want[1], "to_dict")
        assert _outcome(orjson.dumps, d_got[1]) == _outcome(orjson.dumps, d_want[1])


def check(kernel: Any, b: Baseline, e: Event, cfg: DetectorConfig, w: Any,
          full: bool = True) -> None:
    """Run the kernel then Python on the same input; compare; check ``b`` unchanged."""
    before = freeze(b) if full else None
    got = _outcome(kernel, b, e, cfg, w)
    if full:
        assert freeze(b) == before, "the kernel modified its input"
    want = _outcome(update, b, e, cfg, w)
    assert got[0] == want[0], (got, want)
    if want[0] == "ok":
        assert_same_result(got[1], want[1], full)
    else:
        assert got[1] == want[1]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def model() -> Model:
    return load_model(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def kernel(model: Model) -> Any:
    k = native.update_kernel(_native, Detector(model, native=False))
    assert k is not None
    return k


class Counting:
    """A kernel whose Python fallback counts its calls: realistic input must not need it."""

    def __init__(self, cfg: DetectorConfig) -> None:
        self.fallbacks = 0

        def fallback(*args: Any) -> Baseline:
            self.fallbacks += 1
            return update(*args)

        assert _native is not None
        self.kernel = _native.UpdateKernel(
            cfg, Baseline, Event, fallback, EventKind.AUTH,
            EntityKind.USER, baseline_module._NO_MAP,
        )


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

    det._update = recorder
    state = EngineState()
    for i in range(0, len(events), batch):
        det.process(events[i : i + batch], state)
    return calls


@pytest.fixture(scope="module")
def replay_calls(model: Model) -> list[Call]:
    return _record(model, _events(users=200, days=2, seed=11))


@pytest.fixture(scope="module")
def long_calls(model: Model) -> list[Call]:
    """Two days stretched to 500 (> 16 half-lives of 21 days): landmarks renormalise."""
    events = _events(users=15, days=2, seed=5)
    start = events[0].ts_ms
    stretched = [e._replace(ts_ms=start + (e.ts_ms - start) * 250) for e in events]
    return _record(model, stretched)


def _renormalises(b: Baseline, e: Event, cfg: DetectorConfig) -> bool:
    half_life_ms = cfg.profile_half_life_days * 86_400_000.0
    return bool(b.hours or b.seen) and (e.ts_ms - b.t0) / half_life_ms > 16.0


def _evicts(b: Baseline, e: Event, cfg: DetectorConfig) -> bool:
    from detector.baseline import dimension_values

    for dim, value in dimension_values(e):
        entries = b.seen.get(dim) or {}
        if value not in entries and len(entries) >= cfg.caps.get(dim, 8):
            return True
    return False


def _cap_chain(cfg: DetectorConfig, seed_event_auth: Event, seed_event_net: Event) -> list[Call]:
    """Chains that push every dimension past its cap, many values per second (ties)."""
    values = ["z", "a", "é", "Z", "\U0001f600", "", "aa", "a\x00", "ü", "b", "é1", "ß"]
    calls: list[Call] = []
    for base_event in (seed_event_auth, seed_event_net):
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
                calls.append((b, e))
                b = update(b, e, cfg, (1.0, 0.25, 1.0, 0.5)[i % 4])
    return calls


# ------------------------------------------------------------------ differential
def _weights(cfg: DetectorConfig) -> tuple[float, ...]:
    return (1.0, cfg.step_up_learn_weight, 0.0)


def test_replay_every_call_every_weight(kernel: Any, model: Model,
                                        replay_calls: list[Call]) -> None:
    cfg = model.cfg
    counting = Counting(cfg)
    assert len(replay_calls) > 20_000, len(replay_calls)
    kinds = {e.kind for _, e in replay_calls}
    assert kinds == {EventKind.AUTH, EventKind.NETWORK}
    for i, (b, e) in enumerate(replay_calls):
        before = repr(b)
        for w in _weights(cfg):
            check(counting.kernel, b, e, cfg, w, full=i % 20 == 0)
        assert repr(b) == before, "the kernel modified its input"
    assert counting.fallbacks == 0  # the compiled path did all the work


def test_long_horizon_renormalises(kernel: Any, model: Model, long_calls: list[Call]) -> None:
    cfg = model.cfg
    counting = Counting(cfg)
    renorm = sum(_renormalises(b, e, cfg) for b, e in long_calls)
    assert renorm > 10, renorm  # the path under test does run
    for i, (b, e) in enumerate(long_calls):
        before = repr(b)
        for w in _weights(cfg):
            check(counting.kernel, b, e, cfg, w, full=i % 5 == 0)
        assert repr(b) == before, "the kernel modified its input"
    assert counting.fallbacks == 0  # the compiled path did all the work


def test_caps_reached_evicts(kernel: Any, model: Model, replay_calls: list[Call]) -> None:
    cfg = model.cfg
    counting = Counting(cfg)
    auth = next(e for _, e in replay_calls if e.kind is EventKind.AUTH)
    net = next(e for _, e in replay_calls
               if e.kind is EventKind.NETWORK and e.entity_kind is EntityKind.USER)
    calls = _cap_chain(cfg, auth, net)
    assert sum(_evicts(b, e, cfg) for b, e in calls) > 100
    for b, e in calls:
        for w in (*_weights(cfg), 0.5):
            check(counting.kernel, b, e, cfg, w)
    # The generated replay reaches caps too.
    assert any(_evicts(b, e, cfg) for b, e in replay_calls)
    assert counting.fallbacks == 0  # the compiled path did all the work


# ------------------------------------------------------------------ fallbacks
def test_other_config_caps_and_odd_arguments_follow_python(
    kernel: Any, model: Model, replay_calls: list[Call]
) -> None:
    cfg = model.cfg
    other = DetectorConfig(caps={"country": 1, "host": 2}, profile_half_life_days=1.0)
    sample = replay_calls[:: max(1, len(replay_calls) // 300)]
    for b, e in sample:
        for w in (1.0, 1, 0, True, 0.25, float("nan"), float("inf"), -1.0, 1e300, None, "x"):
            check(kernel, b, e, cfg, w)
        got = kernel(b, e, other, 1.0)
        assert_same_result(got, update(b, e, other, 1.0))
        got = kernel(b, e, cfg, 1.0, {"device": 1, "country": 1})
        assert_same_result(got, update(b, e, cfg, 1.0, {"device": 1, "country": 1}))
        assert_same_result(kernel(b, e, cfg), update(b, e, cfg))
        assert_same_result(kernel(b, e, cfg, caps=None), update(b, e, cfg))


def test_comparator_detects_differences() -> None:
    """The checks above can fail: one float bit, one key order, one int type."""
    with pytest.raises(AssertionError):
        deep_same(Baseline(fail_rate=0.1), Baseline(fail_rate=math.nextafter(0.1, 1.0)))
    with pytest.raises(AssertionError):
        deep_same(Baseline(hours={1: 1, 2: 2}), Baseline(hours={2: 2, 1: 1}))
    with pytest.raises(AssertionError):
        deep_same(Baseline(n_learned=1.0), Baseline(n_learned=1))  # type: ignore[arg-type]
    with pytest.raises(AssertionError):
        deep_same(Baseline(fail_rate=0.0), Baseline(fail_rate=-0.0))


# ------------------------------------------------------------------ hypothesis
# Two strategy sets: "sane" values have the types the engine produces (exact
# int, float, str, bool or None; ints within 64 bits) but any value (NaN, inf,
# -0.0, unicode, ties, caps reached, far-apart times), so the compiled path
# runs; "odd" values (huge ints, floats for ints, surrogates, malformed
# entries...) send the kernel to Python, whose result or exception must come back.
_BIG = st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**70, -(2**70)])
_MAX_TS = 4_102_444_800_000
_HALF_LIFE_MS = 21 * 86_400_000
_floats = st.floats() | st.floats(-1e6, 1e6) | st.sampled_from([0.0, -0.0, 0.5, 1.0, 1e6, 2e6])
_SANE = {
    "int": st.integers(-1000, 10**7) | st.integers(-(2**40), 2**40),
    "ts": st.integers(0, _MAX_TS) | st.integers(-(2**50), 2**50),
    "text": st.text(max_size=4) | st.sampled_from(["", "a", "é", "US", "b", "\U0001f600"]),
    "bool": st.booleans(),
    "bytes": st.integers(0, 10**12),
    "map": st.just(_NO_MAP),
    "weight": st.sampled_from([1.0, 0.25, 0.0, 0.5, 1e-9, -1.0, 2.5, float("nan")])
    | st.floats(0.0, 10.0),
}
_ODD = {
    "int": _SANE["int"] | st.integers(-(2**64), 2**64) | _BIG | st.just(1.5) | st.just(True),
    "ts": _SANE["ts"] | st.integers(-(2**66), 2**66) | _BIG | st.just(5.0),
    "text": _SANE["text"] | st.sampled_from(["\ud800", "a\ud800"]) | st.just(7),
    "bool": st.booleans() | st.just(0) | st.just(1),
    "bytes": st.integers(-(2**65), 2**65) | st.just(2.5),
    "map": st.just(_NO_MAP) | st.just(MappingProxyType({})) | st.just(MappingProxyType({1: 2})),
    "weight": st.floats() | st.just(1) | st.just(0) | st.just(1e300) | st.just(None),
}


@st.composite
def _case(draw: Any) -> tuple[Baseline, Event, Any]:
    odd = draw(st.integers(0, 7)) == 0
    v = _ODD if odd else _SANE
    ints, text, opt = v["int"], v["text"], st.none
    ts = draw(v["ts"])
    near = st.integers(ts - 40 * _HALF_LIFE_MS, ts + 40 * _HALF_LIFE_MS)
    some_ts = near | v["ts"]
    entry = st.tuples(st.integers(0, 5000) | ints, st.integers(-3, 3) | ints)
    if odd:
        entry = entry | st.tuples(_floats, ints) | st.tuples(ints) | st.just((1, 2, 3))
    entries = st.dictionaries(text, entry, max_size=14)
    key = text | st.sampled_from(list(DIMENSIONS))
    seen = draw(st.dictionaries(key, entries, max_size=3) | v["map"])
    totals = draw(st.fixed_dictionaries({d: st.integers(0, 10**6) | ints for d in seen})
                  | st.dictionaries(key, ints, max_size=3) | v["map"])
    stat = st.tuples(_floats, _floats, _floats)
    if odd:
        stat = stat | st.just((1, 2.0, 3.0)) | st.just((1.0, 2.0))
    counter = st.tuples(_floats, some_ts) | st.just((0.0, 0))
    if odd:
        counter = counter | st.just((0, 0)) | st.just((1.0, 1.0))
    b = Baseline(
        n_seen=draw(st.integers(0, 100) | ints),
        n_learned=draw(_floats | (st.integers(0, 30) if odd else _floats)),
        first_ts=draw(opt() | some_ts),
        last_ts=draw(opt() | some_ts),
        t0=draw(some_ts),
        hours=draw(st.dictionaries(st.integers(0, 167), st.integers(0, 10**6) | ints,
                                   max_size=10) | v["map"]),
        hours_total=draw(st.integers(0, 10**9) | ints),
        seen=seen,
        seen_totals=totals,
        last_success=draw(opt() | st.just((1, 2.0, 3.0, "US"))),
        fail_rate=draw(_floats | (st.just(0) if odd else _floats)),
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
    return b, e, draw(v["weight"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_case())
def test_hypothesis_edge_cases(kernel: Any, model: Model, case: tuple[Baseline, Event, Any]
                               ) -> None:
    b, e, w = case
    check(kernel, b, e, model.cfg, w)


@settings(max_examples=1000, deadline=None)
@given(st.floats() | st.floats(-1e4, 1e4) | st.floats(-1e-2, 1e-2)
       | st.integers(-(10**9), 10**9).map(lambda n: n / 2000) | st.integers(-(10**9),
                                                                          10**9).map(
           lambda n: (2 * n + 1) / 20000))
def test_round_matches_python(x: float) -> None:
    for n in (3, 4, 6):
        assert _bits(_native._round_for_test(x, n)) == _bits(round(x, n)), (x, n)


def test_round_exhaustive_near_ties() -> None:
    """Ties and near-ties in every binade the kernel's values live in."""
    xs: list[float] = []
    for k in range(-20_000, 20_000):
        for scale in (1000.0, 10000.0, 1e6):
            t = (k + 0.5) / scale
            xs += [t, math.nextafter(t, math.inf), math.nextafter(t, -math.inf)]
    for e10 in range(-8, 17):
        for m in (1, 5, 25, 125, 0.5, 1.5, 2.5):
            t = m * 10.0 ** e10
            xs += [t, -t, math.nextafter(t, math.inf), math.nextafter(t, -math.inf)]
    for x in xs:
        for n in (3, 4, 6):
            assert _bits(_native._round_for_test(x, n)) == _bits(round(x, n)), (x, n)


# ------------------------------------------------------------------ end to end
def _run(det: Detector, events: list[Event], batch: int) -> tuple[list[Any], EngineState]:
    state = EngineState()
    out: list[Any] = []
    for i in range(0, len(events), batch):
        out.extend(d.to_dict() for d in det.process(events[i : i + batch], state))
    return out, state


@pytest.mark.parametrize("batch", [1, 1000])
def test_detector_native_matches_python(model: Model, batch: int) -> None:
    events = _events(users=30, days=2, seed=3)
    fast = Detector(model, native=True)
    slow = Detector(model, native=False)
    assert type(fast._update).__name__ == "UpdateKernel"
    assert slow._update is update
    got, got_state = _run(fast, events, batch)
    want, want_state = _run(slow, events, batch)
    assert got == want
    assert list(got_state.baselines) == list(want_state.baselines)
    for key, b in want_state.baselines.items():
        deep_same(got_state.baselines[key], b, key)
        assert got_state.baselines[key].to_dict() == b.to_dict()
    assert any(d["action"] != "allow" for d in want)  # attacks: non-allow weights ran


@pytest.mark.parametrize(
    "settings_",
    [{"profile_half_life_days": 0.0}, {"ew_alpha": math.nan}, {"failure_burst_half_life_s": -1.0},
     {"new_host_burst_half_life_s": math.inf}],
)
def test_builder_keeps_python_for_settings_it_does_not_reproduce(settings_: dict[str, float]
                                                                  ) -> None:
    """Zero, negative or non-finite half-lives and weights: the engine keeps Python's update."""
    from types import SimpleNamespace

    assert native.update_kernel(_native, SimpleNamespace(cfg=DetectorConfig(**settings_))) is None
    assert native.update_kernel(_native, SimpleNamespace(cfg=DetectorConfig())) is not None


def test_a_traffic_count_of_minus_one_raises_as_python_divides_by_zero() -> None:
    # Found by test_hypothesis_edge_cases: 1 / (n + 1) with n == -1 raised
    # ZeroDivisionError in Python while the kernel returned an infinite weight.
    cfg = DetectorConfig()
    counting = Counting(cfg)
    b = EMPTY._replace(n_seen=1, n_learned=1.0, traffic={"int_out": (-1.0, 0.0, 0.0)})
    e = parse_event(orjson.dumps({"kind": "network", "id": "e", "ts": 0, "user": "ana",
                                  "bytes_out": 0}))._replace(dst_internal=True)
    check(counting.kernel, b, e, cfg, 1.0)
    with pytest.raises(ZeroDivisionError):
        counting.kernel(b, e, cfg, 1.0)
    assert counting.fallbacks == 2, "the kernel hands it to Python"
