"""Features and the policy gate on Rust-owned baselines (native/src/blfeat.rs, context.rs).

* ``_native._bl_extract(fx, event, b, ctx)`` runs ``extract_bl`` on the event,
  baseline and context converted to Rust values: it must return exactly
  ``FeatureExtractor.extract``'s row (float bits, NaN by bits), or None where
  Python raises (the engine then replays the event through Python).
* ``_native._gate_bl(gate, event, row, risk, ctx, b)`` runs
  ``PolicyGate::proves_allow_bl``: True must imply that ``Policy.decide``
  returns the plain allow verdict, and on real events it must decide as the
  existing gate (``PolicyGate.decide``'s own proof) does.
"""

from __future__ import annotations

import math
import struct
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector import native
from detector.baseline import EMPTY, Baseline, update
from detector.config import DetectorConfig
from detector.context import IpStats
from detector.engine import Detector, EngineState
from detector.events import EntityKind, Event, EventKind, parse_event
from detector.features import (
    EMPTY_CONTEXT,
    FEATURE_INDEX,
    FEATURE_NAMES,
    EventContext,
    FeatureExtractor,
)
from detector.generate import GeneratorConfig, write_dataset
from detector.model import Model, load_model
from detector.policy import _ALLOW, Verdict
from tests.conftest import DEFAULT_MODEL, START_MS, make_auth, make_net

# Part of every install: a missing build fails here, not silently.
_native = native.load()
_FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Call = tuple[tuple[Any, ...], Verdict]


def test_module_is_built() -> None:
    assert _native is not None
    for name in ("_bl_extract", "_bl_extract_bench", "_gate_bl"):
        assert hasattr(_native, name), name


def _bits(row: list[float] | None) -> Any:
    """A comparable form of a row: every value's type and float bits (NaN included)."""
    if row is None:
        return None
    return [(type(v).__name__, struct.pack("<d", v)) for v in row]


def _python(fx: FeatureExtractor, e: Event, b: Baseline, ctx: EventContext) -> Any:
    """Python's row as bits, or ``"raised"``."""
    try:
        return _bits(fx.extract(e, b, ctx))
    except (ValueError, OverflowError, ZeroDivisionError):
        return "raised"


def _rust(fx: FeatureExtractor, e: Event, b: Baseline, ctx: EventContext) -> Any:
    assert _native is not None
    return _bits(_native._bl_extract(fx, e, b, ctx))


def assert_same_row(fx: FeatureExtractor, e: Event, b: Baseline, ctx: EventContext) -> None:
    """Rust's row is Python's, bit for bit; None exactly where Python raises."""
    want = _python(fx, e, b, ctx)
    got = _rust(fx, e, b, ctx)
    if want == "raised":
        assert got is None, (e, b)
        return
    if got != want and got is not None:
        pairs = enumerate(zip(want, got, strict=True))
        diff = [(FEATURE_NAMES[i], x, y) for i, (x, y) in pairs if x != y]
        raise AssertionError(f"{e.kind} {e.event_id}: {diff}")
    assert got == want, "representable input: the Rust path must not bail"


# --------------------------------------------------------------------------- replay


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def attack_events(tmp_path_factory: pytest.TempPathFactory) -> list[Event]:
    out: Path = tmp_path_factory.mktemp("gen")
    write_dataset(GeneratorConfig(users=30, days=4, seed=3, attacks=True), out)
    return [parse_event(line) for line in (out / "events.jsonl").read_bytes().splitlines()]


@pytest.fixture(scope="module")
def recorded(model: Model, attack_events: list[Event]) -> list[Call]:
    """Every ``Policy.decide`` call of a pure-Python replay: (event, row, risk,
    cold, ctx, b, profile) with ``b`` the entity's true baseline before the
    event, and Python's verdict."""
    det = Detector(model, native=False)
    decide = det.policy.decide
    calls: list[Call] = []

    def record(*args: Any) -> Verdict:
        verdict = decide(*args)
        calls.append((args, verdict))
        return verdict

    det._verdict = record
    state = EngineState()
    for i in range(0, len(attack_events), 1000):
        det.process(attack_events[i : i + 1000], state)
    assert len(calls) == len(attack_events)
    return calls


def test_replay_rows_bit_identical(model: Model, recorded: list[Call]) -> None:
    fx = FeatureExtractor(model.cfg, dict(model.peers))
    cov = dict.fromkeys(
        ("cold_peer", "device_net", "internal", "external", "travel", "ip", "session",
         "round_trip"), 0)
    for i, ((e, row, _risk, cold, ctx, b, prof), _v) in enumerate(recorded):
        # The engine's row is extract's row: the recording is consistent.
        assert _bits(row) == _python(fx, e, b, ctx)
        assert_same_row(fx, e, b, ctx)
        cov["cold_peer"] += cold and prof is not b
        cov["device_net"] += e.entity_kind is EntityKind.DEVICE and e.kind is EventKind.NETWORK
        cov["internal"] += e.dst_internal is True
        cov["external"] += e.dst_internal is False
        cov["travel"] += e.src_lat is not None and b.last_success is not None
        cov["ip"] += ctx.ip is not None
        cov["session"] += bool(ctx.session_changes)
        if i % 7 == 0:  # the form a stream worker reads back from its changelog
            assert_same_row(fx, e, Baseline.from_dict(b.to_dict()), ctx)
            cov["round_trip"] += 1
    assert all(n > 0 for n in cov.values()), cov


def test_replay_gate_agrees_with_existing_gate_and_python(
    model: Model, recorded: list[Call]
) -> None:
    assert _native is not None
    det = Detector(model, native=False)
    decide = native.policy_kernel(_native, det)
    assert decide is not None
    gate = decide.__self__
    proven = deferred_both = 0
    for args, verdict in recorded:
        e, row, risk, _cold, ctx, b, _prof = args
        got = _native._gate_bl(gate, e, row, risk, ctx, b)
        assert got is not None, "real events are representable"
        _, before = gate.counts()
        assert decide(*args) == verdict
        _, after = gate.counts()
        existing = after == before  # the existing gate proved allow (no deferral)
        assert got == existing, (e, row, risk)
        if got:
            assert verdict is _ALLOW
            proven += 1
        else:
            deferred_both += 1
    # Both outcomes happen on this data (attacks: rules fire; the rest: allow).
    assert proven > 0 and deferred_both > 0
    print(f"\ngate_bl: {proven} proven allow, {deferred_both} handed to Python")


def _wrong_gate(det: Detector, **change: Any) -> Any:
    """A gate built with one rule constant changed (as test_native_policyctx does)."""
    from detector import engine, policy
    from detector.events import EntityClass

    assert _native is not None
    pol = det.policy
    cfg = pol.cfg
    consts = dict(
        spray=policy.SPRAY_FAIL_USERS, brute=policy.BRUTE_STEP_UP,
        lateral=policy.LATERAL_STEP_UP, exfil_z=policy.EXFIL_Z,
        exfil_min=policy.EXFIL_MIN_BYTES, dormant=policy.DORMANT_DAYS,
        fail_burst=policy.FAIL_BURST_STEP_UP, tier=policy.SENSITIVE_TIER,
        new=policy._NEW, rare=policy._RARE_HOUR,
    )
    consts.update(change)
    names = ("asn_rarity", "bytes_out_z", "country_rarity", "days_idle_log", "device_rarity",
             "hosting_asn", "hour_rarity", "new_hosts_burst_log", "service_rarity", "ua_rarity")
    return _native.PolicyGate(
        Event, Baseline, pol.decide, pol.thresholds_for, pol._tiers, policy._ALLOW,
        EventKind.AUTH, engine._NO_CTX, EntityClass.VENDOR, list(EntityClass),
        float(cfg.failure_burst_half_life_s), float(cfg.travel_min_km),
        float(cfg.impossible_travel_kmh), cfg.min_events,
        tuple(consts.values()), tuple(FEATURE_INDEX[n] for n in names),
    )


@pytest.mark.parametrize(
    "change",
    [{"spray": 1000}, {"lateral": 50.0}, {"fail_burst": 100.0}, {"new": 3.5},
     {"exfil_min": 2**40}, {"dormant": 1e6}, {"brute": 100.0}, {"tier": 9}],
)
def test_a_wrong_gate_is_caught(model: Model, recorded: list[Call], change: dict[str, Any]) -> None:
    """The replay check above can fail: a gate with a wrong constant allows
    some event Python does not."""
    assert _native is not None
    det = Detector(model, native=False)
    right = native.policy_kernel(_native, det)
    assert right is not None
    gate = _wrong_gate(det, **change)
    cases = recorded + [(args, det.policy.decide(*args)) for args in _handmade()]
    wrong = 0
    for (e, row, risk, _cold, ctx, b, _prof), verdict in cases:
        wrong += bool(_native._gate_bl(gate, e, row, risk, ctx, b)) and verdict is not _ALLOW
        # The right gate never allows these.
        allowed = _native._gate_bl(right.__self__, e, row, risk, ctx, b)
        assert not (allowed and verdict is not _ALLOW)
    assert wrong > 0


def _handmade() -> list[tuple[Any, ...]]:
    """Arguments of ``decide`` where exactly one rule fires each (risk 0)."""
    zero = [0.0] * len(FEATURE_NAMES)

    def row(**kv: float) -> list[float]:
        r = list(zero)
        for k, v in kv.items():
            r[FEATURE_INDEX[k]] = v
        return r

    ok = make_auth()
    warm = EMPTY._replace(n_learned=500.0)
    exfil = make_net(direction="outbound", bytes_out=200_000_000)._replace(dst_internal=False)
    no_ctx = EventContext()
    cases = [
        (exfil, row(bytes_out_z=5.0), no_ctx, warm),
        (make_net(), row(new_hosts_burst_log=math.log1p(6.0)), no_ctx, warm),
        (ok, row(country_rarity=4.0, days_idle_log=math.log1p(40.0)), no_ctx, warm),
        (ok, row(country_rarity=4.0, hosting_asn=1.0), no_ctx, warm),
        (make_auth(ok=False), zero, no_ctx, warm._replace(fail_burst=(9.5, ok.ts_ms))),
        (ok, zero, no_ctx, warm._replace(fail_burst=(6.0, ok.ts_ms))),
        (ok, zero, no_ctx,
         warm._replace(last_success=(ok.ts_ms - 3_600_000, 35.68, 139.69, "JP"))),
        (ok, zero, EventContext(IpStats(12, 12, 12), None), warm),
        (ok, zero, EventContext(None, (("device", "a", "b"),)), warm),
        (ok, row(asn_rarity=3.0, country_rarity=3.0, device_rarity=3.0), no_ctx, warm),
        (make_auth(service="payroll"), row(service_rarity=3.0, hour_rarity=2.5), no_ctx, warm),
    ]
    return [(e, r, 0.0, False, c, b, b) for e, r, c, b in cases]


def test_gate_bl_defers_on_each_rule(model: Model) -> None:
    """Hand-made events where one rule fires each: never proven allow."""
    assert _native is not None
    det = Detector(model, native=False)
    decide = native.policy_kernel(_native, det)
    assert decide is not None
    for e, row, risk, _cold, ctx, b, _p in _handmade():
        assert det.policy.decide(e, row, risk, False, ctx, b, b) is not _ALLOW
        assert _native._gate_bl(decide.__self__, e, row, risk, ctx, b) is False


# ------------------------------------------------------------------ configuration


def test_extractor_settings_of_every_modelled_type(model: Model, recorded: list[Call]) -> None:
    """Int or float min_events and travel_min_km, other tiers and hosting ASNs."""
    cfgs = [
        DetectorConfig(min_events=7, travel_min_km=100),
        DetectorConfig(min_events=19.5, travel_min_km=0.0, hosting_asns=(7922, 16509),
                       service_tiers={"mail": 3, "vpn": -1}),
        DetectorConfig(profile_half_life_days=2, failure_burst_half_life_s=30,
                       new_host_burst_half_life_s=7.5),
    ]
    for cfg in cfgs:
        fx = FeatureExtractor(cfg, dict(model.peers))
        for (e, _row, _risk, _cold, ctx, b, _prof), _v in recorded[::11]:
            assert_same_row(fx, e, b, ctx)


def test_unmodelled_settings_and_inputs_give_none(model: Model) -> None:
    assert _native is not None
    e = make_auth()
    fx = FeatureExtractor(model.cfg, dict(model.peers))
    assert _native._bl_extract(fx, e, EMPTY, EMPTY_CONTEXT) is not None
    odd: list[tuple[str, Any]] = [
        ("_tiers", {"mail": 1.5}), ("_tiers", {b"mail": 1}), ("_hosting", frozenset({7922.0})),
        ("_hosting", {7922}), ("_half_life_ms", 0.0), ("_half_life_ms", math.inf),
        ("_min_events", 2**70), ("_fail_half_life_s", -1.0),
    ]
    for name, value in odd:
        bad = FeatureExtractor(model.cfg, dict(model.peers))
        setattr(bad, name, value)
        assert _native._bl_extract(bad, e, EMPTY, EMPTY_CONTEXT) is None, name

    class Sub(FeatureExtractor):
        pass

    assert _native._bl_extract(Sub(model.cfg, {}), e, EMPTY, EMPTY_CONTEXT) is None
    # Inputs the Rust types do not hold: the engine keeps Python for them.
    for ev, b in [
        (e._replace(bytes_out=2**70), EMPTY),
        (e._replace(src_lat=41), EMPTY),
        (e, EMPTY._replace(n_learned=3)),
        (e, EMPTY._replace(hours={1: 2**64})),
    ]:
        assert _native._bl_extract(fx, ev, b, EMPTY_CONTEXT) is None


# ------------------------------------------------------------------ hypothesis

_CFG = DetectorConfig()
_I64 = st.integers(-(2**63), 2**63 - 1)
_floats = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, 1e308, math.nan, math.inf, -math.inf]),
    st.floats(allow_nan=True, allow_infinity=True),
)
_ts = st.one_of(
    st.integers(START_MS - 400 * 86_400_000, START_MS + 400 * 86_400_000),
    st.sampled_from([0, -1, 1, -(2**62), 2**62, 2**63 - 1, -(2**63)]),
)


@st.composite
def _events(draw: st.DrawFn) -> Event:
    ts = draw(_ts)
    if draw(st.booleans()):
        e = make_net(user=draw(st.sampled_from(["ana", None])),
                     direction=draw(st.sampled_from(["lateral", "outbound", None])))
        return e._replace(
            ts_ms=ts,
            dst_internal=draw(st.sampled_from([True, False, None])),
            dst_hostname=draw(st.sampled_from(["files-1", "", None, "ünï-host"])),
            dst_ip=draw(st.sampled_from(["10.1.0.10", "", None])),
            dst_port=draw(st.one_of(st.none(), st.sampled_from([445, 0, -1]), _I64)),
            dst_country=draw(st.sampled_from(["US", "BR", None])),
            dst_asn=draw(st.one_of(st.none(), st.sampled_from([7922, 16509]), _I64)),
            bytes_out=draw(st.one_of(st.none(), st.sampled_from([0, -1, -2, 2**63 - 1]), _I64)),
            bytes_in=draw(st.one_of(st.none(), st.sampled_from([0, -1, 400_000]), _I64)),
        )
    e = make_auth(
        ok=draw(st.sampled_from([True, False, None])),
        service=draw(st.sampled_from(["mail", "payroll", "vpn", None, "ünï"])),
        user_type=draw(st.sampled_from([None, "Admin", "Vendor", "Service"])),
    )
    return e._replace(
        ts_ms=ts,
        src_lat=draw(st.one_of(st.none(), st.sampled_from([41.88, 51.5, -33.9]), _floats)),
        src_lon=draw(st.one_of(st.none(), st.sampled_from([-87.63, -0.12, 18.4]), _floats)),
        src_country=draw(st.sampled_from(["US", "GB", None])),
        src_city=draw(st.sampled_from(["Chicago", None])),
        src_asn=draw(st.one_of(st.none(), st.sampled_from([7922, 16509, 14061]), _I64)),
        src_prefix=draw(st.sampled_from(["198.51.100.0/24", None])),
        device_id=draw(st.sampled_from(["laptop-1", "laptop-2", None])),
        user_agent=draw(st.sampled_from(["Mozilla/5.0 (Macintosh)", None])),
        is_mfa=draw(st.sampled_from([True, False, None])),
    )


@st.composite
def _baselines(draw: st.DrawFn) -> Baseline:
    """A baseline grown by the real update from a few events, then edge values."""
    b = EMPTY
    base = START_MS + draw(st.integers(-30, 30)) * 86_400_000
    for k in range(draw(st.integers(0, 6))):
        ts = base + k * draw(st.integers(0, 10 * 3_600_000))
        if draw(st.booleans()):
            e = make_auth(ts=ts, ok=draw(st.booleans()),
                          country=draw(st.sampled_from(["US", "GB"])),
                          lat=draw(st.sampled_from([41.88, 51.5])),
                          lon=draw(st.sampled_from([-87.63, -0.12])),
                          device=draw(st.sampled_from(["laptop-1", "laptop-2"])))
        else:
            e = make_net(ts=ts, direction=draw(st.sampled_from(["lateral", "outbound"])),
                         dst_host=draw(st.sampled_from(["files-1", "files-2"])),
                         bytes_out=draw(st.integers(0, 10**9)))
        b = update(b, e, _CFG, draw(st.sampled_from([1.0, 0.25, 0.0])))
    changes: dict[str, Any] = {}
    if draw(st.booleans()):
        changes["n_learned"] = draw(st.one_of(
            st.sampled_from([0.0, 19.0, 19.999, 20.0, 500.0, -1.0, -0.5, math.nan, math.inf]),
            _floats))
    if draw(st.booleans()):
        changes["fail_burst"] = (draw(_floats), draw(_ts))
    if draw(st.booleans()):
        changes["new_hosts"] = (draw(_floats), draw(_ts))
    if draw(st.booleans()):
        changes["last_ts"] = draw(st.one_of(st.none(), _ts))
    if draw(st.booleans()):
        changes["t0"] = draw(_ts)
    if draw(st.booleans()):
        changes["last_success"] = draw(st.one_of(st.none(), st.tuples(
            _ts, st.one_of(st.sampled_from([41.88, 51.5]), _floats),
            st.one_of(st.sampled_from([-87.63, -0.12]), _floats), st.sampled_from(["US", None]))))
    if draw(st.booleans()):
        changes["traffic"] = {
            k: (draw(_floats), draw(_floats), draw(_floats))
            for k in draw(st.sets(st.sampled_from(["int_out", "int_in", "ext_out", "ext_in"])))
        }
    if draw(st.booleans()):
        changes["fail_rate"] = draw(_floats)
        changes["n_seen"] = draw(st.sampled_from([0, 1, -1]))
    if draw(st.booleans()):
        changes["hours_total"] = draw(_I64)
    return b._replace(**changes)


@st.composite
def _contexts(draw: st.DrawFn) -> EventContext:
    ip = draw(st.one_of(st.none(), st.builds(
        IpStats, st.integers(-2, 30), st.integers(0, 30), st.sampled_from([0, 9, 10, 11, 2**62]))))
    changes = draw(st.sampled_from([None, (), (("device", "a", "b"),)]))
    return EventContext(ip, changes)


@pytest.fixture(scope="module")
def fx(model: Model) -> FeatureExtractor:
    return FeatureExtractor(model.cfg, dict(model.peers))


@_FAST
@given(e=_events(), b=_baselines(), ctx=_contexts(), peered=st.booleans())
def test_edge_cases_bit_identical(
    fx: FeatureExtractor, model: Model, e: Event, b: Baseline, ctx: EventContext, peered: bool
) -> None:
    assert_same_row(fx, e, b, ctx)
    if not peered:
        assert_same_row(FeatureExtractor(model.cfg, {}), e, b, ctx)


@_FAST
@given(e=_events(), b=_baselines(), peer=_baselines(), ctx=_contexts())
def test_edge_case_peers_bit_identical(
    model: Model, e: Event, b: Baseline, peer: Baseline, ctx: EventContext
) -> None:
    """Odd peer baselines (a peer is frozen at training time, read as of its last event)."""
    fx = FeatureExtractor(model.cfg, {"user": peer, "device": peer})
    assert_same_row(fx, e, b, ctx)
    # A peer that is the entity's own baseline object (`prof is b`).
    fx_self = FeatureExtractor(model.cfg, {"user": b, "device": b})
    assert_same_row(fx_self, e, b, ctx)


_EDGE = [0.0, 1.0, 2.5, 3.0, 4.0, math.nan, math.inf, -math.inf, -1.0,
         math.nextafter(3.0, 0.0), math.nextafter(2.5, 0.0),
         math.log1p(5.0), math.nextafter(math.log1p(5.0), 0.0), math.log1p(10.0),
         math.log1p(30.0), math.nextafter(math.log1p(30.0), 0.0), 800.0, 1e308]


@st.composite
def _rows(draw: st.DrawFn) -> list[float]:
    row = [draw(st.sampled_from([0.0, 3.0, 4.0, math.nan])) for _ in FEATURE_NAMES]
    for name in ("asn_rarity", "bytes_out_z", "country_rarity", "days_idle_log",
                 "device_rarity", "hosting_asn", "hour_rarity", "new_hosts_burst_log",
                 "service_rarity", "ua_rarity"):
        row[FEATURE_INDEX[name]] = draw(st.one_of(st.sampled_from(_EDGE), _floats))
    return row


@_FAST
@given(e=_events(), row=_rows(), b=_baselines(), ctx=_contexts(),
       risk=st.one_of(st.sampled_from([0.0, 0.5, 0.98, 0.99, 0.999, 1.0, math.nan]),
                      st.floats(0.9, 1.0)))
def test_gate_edge_cases_never_allow_wrongly(
    model: Model, e: Event, row: list[float], b: Baseline, ctx: EventContext, risk: float
) -> None:
    assert _native is not None
    det = Detector(model, native=False)
    decide = native.policy_kernel(_native, det)
    assert decide is not None
    got = _native._gate_bl(decide.__self__, e, row, risk, ctx, b)
    assert got is not None
    cold = b.n_learned < model.cfg.min_events
    try:
        want: Any = det.policy.decide(e, row, risk, cold, ctx, b, b)
    except Exception as exc:  # noqa: BLE001 - the outcome to compare
        want = type(exc)
    if got:
        assert want is _ALLOW
    # And as the existing gate (same proof on Python values).
    _, before = decide.__self__.counts()
    try:
        decide(e, row, risk, cold, ctx, b, b)
    except Exception:  # noqa: BLE001, S110 - Python raised: a deferral
        pass
    _, after = decide.__self__.counts()
    assert got == (after == before)


# ------------------------------------------------------------------ measurement


def test_measure_extract_bl_vs_feature_kernel(model: Model, recorded: list[Call]) -> None:
    """Prints ns/event of extract_bl (converted once, looped in Rust) and of
    the existing FeatureKernel.extract on the same inputs (best of 5)."""
    assert _native is not None
    fx = FeatureExtractor(model.cfg, dict(model.peers))
    kernel: Callable[..., Any] | None = native.extract_kernel(
        _native, type("D", (), {"features": fx})())
    assert kernel is not None
    calls = recorded[:4000]
    events = [a[0] for a, _ in calls]
    bs = [a[5] for a, _ in calls]
    ctxs = [a[4] for a, _ in calls]
    n = len(calls)
    reps = 20
    bench = _native._bl_extract_bench
    assert bench(fx, events, bs, ctxs, 1) is not None

    def rust() -> Any:
        return bench(fx, events, bs, ctxs, reps)

    def convert_only() -> Any:
        return bench(fx, events, bs, ctxs, 0)

    def existing() -> None:
        for e, b, c in zip(events, bs, ctxs, strict=True):
            kernel(e, b, c)

    t_rust = min(timeit.repeat(rust, number=1, repeat=5))
    t_conv = min(timeit.repeat(convert_only, number=1, repeat=5))
    t_old = min(timeit.repeat(existing, number=1, repeat=5))
    ns_bl = (t_rust - t_conv) / (reps * n) * 1e9
    ns_old = t_old / n * 1e9
    print(f"\nextract_bl: {ns_bl:.0f} ns/event; FeatureKernel.extract: {ns_old:.0f} ns/event; "
          f"ratio {ns_old / ns_bl:.1f}x; conversion (Baseline->Bl etc.): {t_conv / n * 1e9:.0f} "
          f"ns/event; {n} events")
