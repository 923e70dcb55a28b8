"""The compiled feature kernel against ``FeatureExtractor.extract``: same list, same float bits.

``detector.native.extract_kernel`` builds ``FeatureKernel.extract``; the Python
method is the specification. Every comparison is element-wise on the float
bits (NaN included, by bits) and on the Python types.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector import native
from detector.baseline import _NO_MAP, EMPTY, Baseline
from detector.config import DetectorConfig
from detector.context import IpStats
from detector.engine import Detector, EngineState
from detector.events import EntityClass, EntityKind, Event, EventKind, parse_event
from detector.features import EMPTY_CONTEXT, FEATURE_NAMES, EventContext, FeatureExtractor
from detector.generate import GeneratorConfig, write_dataset
from detector.model import Model, load_model
from tests.conftest import DEFAULT_MODEL, START_MS

# Part of every install: a missing build fails here, not silently.
_native = native.load()

Extract = Callable[[Event, Baseline, EventContext], Any]


def _kernel(fx: FeatureExtractor) -> Any:
    kernel = native.extract_kernel(_native, SimpleNamespace(features=fx))
    assert kernel is not None
    return kernel


def _bits(value: Any) -> Any:
    """A comparable form: floats by their bits (NaN included), anything else by type and value."""
    if type(value) is float:
        return ("f", struct.pack("<d", value))
    return (type(value).__name__, value)


def _outcome(extract: Extract, e: Event, b: Baseline, ctx: EventContext) -> Any:
    try:
        row = extract(e, b, ctx)
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome to compare
        return ("raised", type(exc), str(exc))
    assert type(row) is list
    return [_bits(v) for v in row]


def assert_same(python: Extract, kernel: Extract, e: Event, b: Baseline, ctx: EventContext) -> None:
    """Assert the kernel returns what Python returns (or raises what it raises)."""
    expected = _outcome(python, e, b, ctx)
    got = _outcome(kernel, e, b, ctx)
    if expected != got and isinstance(expected, list) and isinstance(got, list):
        pairs = enumerate(zip(expected, got, strict=True))
        diff = [(FEATURE_NAMES[i], x, y) for i, (x, y) in pairs if x != y]
        raise AssertionError(f"{e.kind} {e.event_id}: {diff}")
    assert expected == got


def test_module_is_built_and_builder_returns_the_kernel() -> None:
    assert _native is not None
    det = Detector(load_model(DEFAULT_MODEL), native=True)
    assert type(det._extract.__self__).__name__ == "FeatureKernel"
    assert det._extract.__name__ == "extract"
    py_det = Detector(load_model(DEFAULT_MODEL), native=False)
    assert py_det._extract == py_det.features.extract


# --------------------------------------------------------------------------- replay


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def attack_events(tmp_path_factory: pytest.TempPathFactory) -> list[Event]:
    out: Path = tmp_path_factory.mktemp("gen")
    write_dataset(GeneratorConfig(users=30, days=4, seed=3, attacks=True), out)
    return [parse_event(line) for line in (out / "events.jsonl").read_bytes().splitlines()]


def _replay(model: Model, events: list[Event]) -> Iterator[tuple[Event, Baseline, EventContext]]:
    """Yield every event's real (event, baseline before, context), one event at a time.

    The state advances through the pure-Python Detector's own decisions, so
    baselines carry partial learning weights, refused events and signals.
    """
    det = Detector(model, native=False)
    state = EngineState()
    for e in events:
        ctx = det.context([e], state)[0]
        yield e, state.baselines.get(e.entity_key, EMPTY), ctx
        det.process([e], state, contexts=[ctx])


def test_replay_with_attacks_bit_identical(model: Model, attack_events: list[Event]) -> None:
    fx = FeatureExtractor(model.cfg, dict(model.peers))
    kernel = _kernel(fx)
    cov = {"cold_peer": 0, "internal": 0, "external": 0, "net_no_dst": 0, "travel": 0,
           "ip": 0, "session": 0, "missing": 0, "round_trip": 0}
    for i, (e, b, ctx) in enumerate(_replay(model, attack_events)):
        assert_same(fx.extract, kernel, e, b, ctx)
        cov["cold_peer"] += fx.is_cold(b) and e.entity_kind.value in fx.peers
        cov["internal"] += e.dst_internal is True
        cov["external"] += e.dst_internal is False
        cov["net_no_dst"] += e.kind is EventKind.NETWORK and e.dst_internal is None
        cov["travel"] += e.src_lat is not None and b.last_success is not None
        cov["ip"] += ctx.ip is not None
        cov["session"] += bool(ctx.session_changes)
        cov["missing"] += e.src_country is None or e.bytes_out is None
        if i % 7 == 0:  # the form a stream worker reads back from its changelog
            assert_same(fx.extract, kernel, e, Baseline.from_dict(b.to_dict()), ctx)
            cov["round_trip"] += 1
    assert kernel.__self__.fallbacks == 0, "the fast path must handle every real event"
    # The replay reached the branches it is meant to test ("net_no_dst" may be absent).
    assert all(n > 0 for k, n in cov.items() if k != "net_no_dst"), cov


def test_kernel_reads_peers_as_they_are_now(model: Model) -> None:
    """The peers dict is read on every call, not copied at construction."""
    fx = FeatureExtractor(model.cfg, {})
    kernel = _kernel(fx)
    e = parse_event(
        b'{"kind":"auth","id":"p","ts":1767258000000,"user":"ana","ok":true,"country":"US"}'
    )
    before = kernel(e, EMPTY, EMPTY_CONTEXT)
    fx.peers["user"] = model.peers["user"]
    after = kernel(e, EMPTY, EMPTY_CONTEXT)
    assert _outcome(fx.extract, e, EMPTY, EMPTY_CONTEXT) == [_bits(v) for v in after]
    assert [_bits(v) for v in before] != [_bits(v) for v in after]


# --------------------------------------------------------------------------- hypothesis

_POOL = ["US", "FR", "", "ü-東京", "files-1", "10.1.0.10", "mail", "vpn", "Mozilla/5.0"]
# Mostly valid values, some edge ones: a value Python rejects (a math domain
# error) only exercises the fallback, so it must not dominate the examples.
_wild = st.floats(allow_nan=True, allow_infinity=True)
_floats = st.one_of(
    st.floats(-180, 180),
    st.sampled_from([0.0, -0.0, 90.0, -90.0, 180.0, -180.0, 41.88, -87.63, 1e-300, 5e-324,
                     float("nan")]),
    st.floats(-90, 90),
    _wild,
)
_HITS = ["US", "files-1", "mail", "445", "13335"]  # values the baselines below hold
_strs = st.one_of(
    st.none(), st.sampled_from(_HITS), st.sampled_from(_POOL), st.text(max_size=4)
)
_big = st.one_of(
    st.integers(0, 2**63 - 1),
    st.integers(0, 10**7),
    st.sampled_from([0, 1, 2**53 + 1, 2**63 - 1, 2**70, -1, -(2**63)]),
)
_ts = st.one_of(
    st.integers(START_MS - 10**9, START_MS + 10**10),
    st.integers(-(2**62), 2**62),
    st.sampled_from([0, -1, 4_102_444_799_999]),
)


@st.composite
def events(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(list(EventKind)))
    return Event(
        event_id="h",
        kind=kind,
        ts_ms=draw(_ts),
        entity="ana",
        entity_kind=draw(st.sampled_from(list(EntityKind))),
        entity_class=draw(st.sampled_from(list(EntityClass))),
        source_format="native",
        success=draw(st.one_of(st.none(), st.booleans())),
        is_mfa=draw(st.one_of(st.none(), st.booleans())),
        service=draw(_strs),
        user_agent=draw(_strs),
        src_prefix=draw(_strs),
        src_country=draw(_strs),
        src_city=draw(_strs),
        src_lat=draw(st.one_of(st.none(), _floats)),
        src_lon=draw(st.one_of(st.none(), _floats)),
        src_asn=draw(st.one_of(st.none(), st.sampled_from([13335, 16509, 13335, 0]), _big)),
        device_id=draw(_strs),
        dst_ip=draw(_strs),
        dst_hostname=draw(_strs),
        dst_port=draw(st.one_of(st.none(), st.sampled_from([22, 445]), _big)),
        dst_country=draw(_strs),
        dst_asn=draw(st.one_of(st.none(), st.sampled_from([13335, 7922]), _big)),
        dst_internal=draw(st.one_of(st.none(), st.booleans())),
        bytes_in=draw(st.one_of(st.none(), _big)),
        bytes_out=draw(st.one_of(st.none(), _big)),
    )


_weights = st.one_of(st.integers(0, 10**6), st.integers(0, 2**62), st.integers(-5, 5))
_DIMS = ["country", "city", "asn", "prefix", "device", "ua", "service", "host", "port",
         "dst_country", "dst_asn"]
_VALUES = _POOL + ["13335", "7922", "445", "22"] + _HITS * 3


@st.composite
def baselines(draw: st.DrawFn) -> Baseline:
    empty = _NO_MAP  # what Baseline() holds
    hours = draw(st.one_of(
        st.just(empty), st.dictionaries(st.integers(0, 167), _weights, max_size=80)
    ))
    seen = draw(st.one_of(st.just(empty), st.dictionaries(
        st.sampled_from(_DIMS),
        st.dictionaries(st.sampled_from(_VALUES), st.tuples(_weights, _weights), max_size=6),
        max_size=11,
    )))
    totals = draw(st.one_of(
        st.just(empty), st.dictionaries(st.sampled_from(_DIMS), _weights, max_size=6)
    ))
    traffic = draw(st.one_of(st.just(empty), st.dictionaries(
        st.sampled_from(["int_out", "int_in", "ext_out", "ext_in"]),
        st.tuples(st.floats(0, 100), _floats, st.one_of(st.floats(0, 1e6), st.just(0.0), _wild)),
        max_size=4,
    )))
    opt_ts = st.one_of(st.none(), _ts)
    pair = st.one_of(st.just((0.0, 0)), st.tuples(st.floats(0, 1e6) | _floats, _ts))
    return Baseline(
        n_seen=draw(st.integers(0, 100)),
        n_learned=draw(st.one_of(st.floats(0, 100), st.sampled_from([0.0, 19.75, 20.0, 25.0]))),
        first_ts=draw(opt_ts),
        last_ts=draw(opt_ts),
        t0=draw(_ts),
        hours=hours,
        hours_total=draw(_weights),
        seen=seen,
        seen_totals=totals,
        last_success=draw(st.one_of(
            st.none(), st.tuples(_ts, _floats, _floats, st.one_of(st.none(), st.just("US")))
        )),
        fail_rate=draw(st.floats(0, 1)),
        fail_burst=draw(pair),
        new_hosts=draw(pair),
        traffic=traffic,
    )


contexts = st.one_of(
    st.just(EMPTY_CONTEXT),
    st.builds(
        EventContext,
        st.one_of(st.none(), st.builds(IpStats, _big, st.integers(0, 99), st.integers(0, 99))),
        st.one_of(st.none(), st.lists(st.just(("asn", "1", "2")), max_size=3).map(tuple)),
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events(),
    baselines(),
    contexts,
    st.one_of(st.none(), baselines()),
    st.one_of(st.none(), st.integers(-(10**9), 10**10)),
)
def test_hypothesis_edge_cases(
    e: Event, b: Baseline, ctx: EventContext, peer: Baseline | None, age: int | None
) -> None:
    if age is not None:
        # A landmark near the event: decay factors of ordinary size, not only
        # the underflowed or clamped ones of unrelated times.
        b = b._replace(t0=e.ts_ms - age)
        if peer is not None:
            peer = peer._replace(t0=e.ts_ms - age, last_ts=e.ts_ms - age // 2)
    peers = {} if peer is None else {e.entity_kind.value: peer}
    fx = FeatureExtractor(DetectorConfig(), peers)
    assert_same(fx.extract, _kernel(fx), e, b, ctx)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(-90, 90), st.floats(-180, 180), st.floats(-90, 90), st.floats(-180, 180),
    st.integers(0, 10**10),
)
def test_hypothesis_travel(lat1: float, lon1: float, lat2: float, lon2: float, dt: int) -> None:
    """Haversine and speed on valid coordinates, always on the fast path."""
    fx = FeatureExtractor(DetectorConfig(), {})
    kernel = _kernel(fx)
    e = Event("t", EventKind.AUTH, START_MS + dt, "ana", EntityKind.USER, EntityClass.EMPLOYEE,
              "native", success=True, src_lat=lat2, src_lon=lon2)
    b = Baseline(n_seen=30, n_learned=30.0, last_ts=START_MS, t0=START_MS,
                 last_success=(START_MS, lat1, lon1, "US"))
    assert_same(fx.extract, kernel, e, b, EMPTY_CONTEXT)
    assert kernel.__self__.fallbacks == 0


def test_unusual_inputs_go_to_python() -> None:
    """Odd types are answered by the Python method: same result, or the same exception."""
    fx = FeatureExtractor(DetectorConfig(), {})
    kernel = _kernel(fx)
    e = parse_event(b'{"kind":"auth","id":"u","ts":1767258000000,"user":"ana","ok":true,'
                    b'"lat":1.0,"lon":2.0,"country":"US"}')
    odd = [
        (e._replace(ts_ms=1.767e12), EMPTY),  # a float time
        (e, EMPTY._replace(last_success=[START_MS, 3.0, 4.0, None])),  # a list, not a tuple
        (e, EMPTY._replace(seen=MappingProxyType({"country": {"US": (5, 1)}}))),
        (e, EMPTY._replace(n_learned=-1.0)),  # log1p(-1): ValueError
        (e._replace(src_lat=float("inf")), EMPTY._replace(last_success=(0, 1.0, 2.0, None))),
        (e._replace(src_asn=[1]), EMPTY),  # unhashable: TypeError
        (tuple(e), EMPTY),  # not an Event
    ]
    for ev, b in odd:
        assert_same(fx.extract, kernel, ev, b, EMPTY_CONTEXT)  # type: ignore[arg-type]
    assert kernel.__self__.fallbacks == len(odd)
    # Python puts b.fail_rate itself in the row, whatever its type: so does the kernel.
    b = EMPTY._replace(fail_rate=1, n_seen=3)
    assert_same(fx.extract, kernel, e, b, EMPTY_CONTEXT)
    assert kernel(e, b, EMPTY_CONTEXT)[13] is b.fail_rate


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("batch", [1, 1000])
def test_detector_native_matches_python(
    model: Model, attack_events: list[Event], batch: int
) -> None:
    events = attack_events[:3000] if batch == 1 else attack_events
    results = []
    for flag in (False, True):
        det = Detector(model, native=flag)
        state = EngineState()
        decisions = []
        for i in range(0, len(events), batch):
            decisions += det.process(events[i : i + batch], state, keep_features=True)
        results.append((
            [d.to_dict() for d in decisions],
            [[_bits(v) for v in d.features or []] for d in decisions],
            {k: b.to_dict() for k, b in state.baselines.items()},
        ))
    assert results[0] == results[1]
    assert any(d["action"] != "allow" for d in results[0][0])
