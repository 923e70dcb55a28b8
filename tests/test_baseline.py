from __future__ import annotations

import copy

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.baseline import (
    EMPTY,
    Baseline,
    decayed,
    hour_of_week,
    signal_suppressed,
    update,
    with_signal,
)
from detector.config import DAY_MS, DetectorConfig
from tests.conftest import START_MS, make_auth, make_net

CFG = DetectorConfig()


def test_update_never_mutates_input() -> None:
    b = update(EMPTY, make_auth(), CFG)
    snapshot = copy.deepcopy(b.to_dict())
    update(b, make_auth(id="e2", country="BR", city="Recife", device="x"), CFG)
    update(b, make_net(), CFG)
    assert b.to_dict() == snapshot
    assert EMPTY.to_dict() == Baseline().to_dict()


def test_round_trip_is_exact_through_json() -> None:
    b = EMPTY
    for i in range(200):
        e = make_auth(id=f"e{i}", ts=START_MS + i * 3_600_000, ok=i % 13 != 0)
        b = update(b, e, CFG)
        b = update(b, make_net(id=f"n{i}", ts=START_MS + i * 3_600_000 + 1), CFG)
    again = Baseline.from_dict(orjson.loads(orjson.dumps(b.to_dict())))
    assert again == b


def test_counts_and_shares_follow_events() -> None:
    b = EMPTY
    for i in range(10):
        b = update(b, make_auth(id=f"u{i}", ts=START_MS + i * 60_000), CFG)
    b = update(b, make_auth(id="br", ts=START_MS + 11 * 60_000, country="BR"), CFG)
    f = b.decay_factor(START_MS + 12 * 60_000, CFG)
    assert b.n_seen == 11
    assert b.share("country", "US", f) > 0.8
    assert 0.0 < b.share("country", "BR", f) < 0.1
    assert b.share("country", "FR", f) == 0.0
    assert b.top_values("country") == ["US", "BR"]


def test_not_learned_event_only_advances_risk_counters() -> None:
    b = update(EMPTY, make_auth(), CFG)
    failed = make_auth(id="f", ok=False, country="RU", ts=START_MS + 9 * 3_600_000 + 1000)
    b2 = update(b, failed, CFG, learn_weight=0.0)
    assert b2.seen == b.seen
    assert b2.n_learned == b.n_learned
    assert b2.n_seen == b.n_seen + 1
    assert b2.fail_burst[0] == pytest.approx(1.0)


def test_old_weights_decay_with_event_time() -> None:
    b = update(EMPTY, make_auth(country="US"), CFG)
    later = START_MS + int(10 * CFG.profile_half_life_days * DAY_MS)
    b = update(b, make_auth(id="e2", ts=later, country="CA"), CFG)
    f = b.decay_factor(later, CFG)
    assert b.share("country", "CA", f) > 100 * b.share("country", "US", f)


def test_renormalisation_keeps_shares() -> None:
    b = EMPTY
    step = int(CFG.profile_half_life_days * DAY_MS)
    for i in range(40):  # 40 half-lives: crosses the renormalisation point twice
        b = update(b, make_auth(id=f"a{i}", ts=START_MS + i * step, country="US"), CFG)
        b = update(b, make_auth(id=f"b{i}", ts=START_MS + i * step + 1, country="CA"), CFG)
    assert b.t0 > START_MS
    f = b.decay_factor(START_MS + 40 * step, CFG)
    us, ca = b.share("country", "US", f), b.share("country", "CA", f)
    assert us == pytest.approx(ca, rel=0.01)


def test_caps_bound_distinct_values_and_size() -> None:
    b = EMPTY
    for i in range(500):
        e = make_auth(
            id=f"e{i}",
            ts=START_MS + i * 600_000,
            country=["US", "CA", "MX", "BR", "GB", "DE", "FR", "IT", "ES", "JP"][i % 10],
            city=f"city-{i}",
            device=f"dev-{i % 40}",
            ua=f"agent/{i}",
            service=f"svc-{i % 30}",
            ip=f"198.51.{i % 200}.7",
            asn=1000 + i,
        )
        b = update(b, e, CFG)
        b = update(b, make_net(id=f"n{i}", ts=START_MS + i * 600_000 + 5, dst_host=f"h{i}",
                               dst_port=1000 + i), CFG)
    for dim, cap in CFG.caps.items():
        assert len(b.seen.get(dim, {})) <= cap, dim
    assert len(orjson.dumps(b.to_dict())) <= 4096


def test_hour_of_week_is_monday_based() -> None:
    assert hour_of_week(START_MS) == 3 * 24  # 2026-01-01 is a Thursday
    assert hour_of_week(START_MS + 4 * DAY_MS + 5 * 3_600_000) == 0 * 24 + 5  # Monday 05h


def test_decayed_counter_halves_per_half_life() -> None:
    assert decayed((8.0, 0), 0, 60.0) == 8.0
    assert decayed((8.0, 0), 120_000, 60.0) == pytest.approx(2.0)
    assert decayed((0.0, 0), 5, 60.0) == 0.0


def test_signal_dedup_by_key_level_and_window() -> None:
    b = with_signal(EMPTY, "s-1", 1, 1_000_000, 3600)
    assert signal_suppressed(b, "s-1", 1, 1_500_000, 3600)
    assert not signal_suppressed(b, "s-1", 2, 1_500_000, 3600)  # escalation passes
    assert not signal_suppressed(b, "s-2", 1, 1_500_000, 3600)
    assert not signal_suppressed(b, "s-1", 1, 1_000_000 + 3601_000, 3600)


@pytest.mark.parametrize(
    "bad",
    [{}, {"v": 99}, {"v": 1, "n": "x"}, {"v": 1, "n": 1, "nl": 1, "t0": 0, "s": {"country": 5}}],
)
def test_from_dict_refuses_malformed_state(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Baseline.from_dict(bad)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=60 * DAY_MS),
            st.sampled_from(["US", "CA", "BR"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_any_sequence_round_trips(seq: list[tuple[int, str, bool]]) -> None:
    b = EMPTY
    for i, (dt, country, ok) in enumerate(seq):
        b = update(b, make_auth(id=f"h{i}", ts=START_MS + dt, country=country, ok=ok), CFG)
    assert Baseline.from_dict(orjson.loads(orjson.dumps(b.to_dict()))) == b


# ------------------------------------------------------------- schema 2 and migration
def _v1(b: Baseline) -> dict[str, object]:
    """The schema-1 form of ``b``, as written by deployed workers before schema 2."""
    out: dict[str, object] = {"v": 1, "n": b.n_seen, "nl": b.n_learned}
    if b.first_ts is not None:
        out["ft"] = b.first_ts
        out["lt"] = b.last_ts
    out["t0"] = b.t0
    if b.hours:
        out["h"] = {str(k): v for k, v in b.hours.items()}
        out["ht"] = b.hours_total
    if b.seen:
        out["s"] = {d: {k: [w, s] for k, (w, s) in e.items()} for d, e in b.seen.items()}
        out["st"] = dict(b.seen_totals)
    if b.last_success is not None:
        out["ls"] = list(b.last_success)
    if b.fail_rate:
        out["fr"] = b.fail_rate
    if b.fail_burst[0]:
        out["fb"] = list(b.fail_burst)
    if b.new_hosts[0]:
        out["nh"] = list(b.new_hosts)
    if b.traffic:
        out["tr"] = {k: list(v) for k, v in b.traffic.items()}
    if b.signals:
        out["sg"] = [list(s) for s in b.signals]
    return out


def _rich_baseline() -> Baseline:
    b = EMPTY
    for i in range(120):
        ts = START_MS + i * 1_800_000
        b = update(b, make_auth(id=f"a{i}", ts=ts, ok=i % 9 != 0, country="US" if i % 5 else "CA",
                                city="Austin" if i % 5 else "Toronto", device=f"dev-{i % 3}",
                                ua=f"Mozilla/5.0 (X11; Linux) Firefox/{120 + i % 4}",
                                ip=f"198.51.{i % 6}.7", asn=7018 + i % 3), CFG)
        b = update(b, make_net(id=f"n{i}", ts=ts + 5, dst_host=f"srv-{i % 7}.corp.example.com",
                               dst_port=443 + i % 2), CFG)
    return with_signal(b, "s-1", 2, START_MS + 200 * 1_800_000, 3600)


def test_schema_1_state_is_still_read() -> None:
    b = _rich_baseline()
    v1 = orjson.loads(orjson.dumps(_v1(b)))
    assert Baseline.from_dict(v1) == b
    assert Baseline.from_dict(v1).to_dict()["v"] == 2


def test_schema_2_is_lossless_and_smaller() -> None:
    b = _rich_baseline()
    d = b.to_dict()
    assert d["v"] == 2
    assert Baseline.from_dict(orjson.loads(orjson.dumps(d))) == b
    # common affixes written once: the host names' domain, the user agents' product
    assert any(x == ".corp.example.com" for x in d["s"]["h"])  # type: ignore[index]
    assert len(orjson.dumps(d)) < 0.8 * len(orjson.dumps(_v1(b)))


@pytest.mark.parametrize(
    "values",
    [
        ["ab", "abab"],  # prefix and suffix would overlap in the shortest value
        ["x.example.com", "example.com"],  # one value is all suffix
        ["same-prefix-1", "same-prefix-2", "same-prefix-33"],
        ["", "aaaaaaaaaaaaa"],
        ["~odd", "~odd~"],
    ],
)
def test_value_sets_round_trip_whatever_they_share(values: list[str]) -> None:
    seen = {"host": {v: (1000 + i, 5 + i) for i, v in enumerate(values)}}
    b = Baseline(n_seen=2, n_learned=2.0, first_ts=1, last_ts=9_000, t0=1, seen=seen,
                 seen_totals={"host": 5000})
    assert Baseline.from_dict(orjson.loads(orjson.dumps(b.to_dict()))) == b


def test_unknown_dimensions_and_totals_round_trip() -> None:
    b = Baseline(seen={"custom": {"a": (1, 2)}, "c": {"b": (3, 4)}},
                 seen_totals={"custom": 1, "orphan": 7}, traffic={"odd": (1.0, 2.0, 3.0)})
    assert Baseline.from_dict(orjson.loads(orjson.dumps(b.to_dict()))) == b


@pytest.mark.parametrize(
    "bad",
    [{"v": 2, "n": 1, "nl": 1, "t0": 0, "h": [1]},
     {"v": 2, "n": 1, "nl": 1, "t0": 0, "s": {"c": [5, "US"]}},
     {"v": 2, "n": 1, "nl": 1, "t0": 0, "s": {"zz": [5]}}],
)
def test_from_dict_refuses_malformed_schema_2(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Baseline.from_dict(bad)


def test_update_builds_every_field() -> None:
    """update() builds Baselines from plain tuples: each must have all the fields."""
    b = EMPTY
    for e in (make_auth(), make_net(), make_auth(id="e3", ok=False)):
        b = update(b, e, CFG)
        assert len(b) == len(Baseline._fields)
        assert isinstance(b, Baseline)


@given(
    st.dictionaries(
        st.text(max_size=3),
        st.tuples(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5]), st.integers(0, 10)),
        max_size=40,
    ),
    st.integers(0, 8),
)
def test_top_values_ranks_like_a_full_sort(entries: dict[str, tuple[float, int]], n: int) -> None:
    """Most weighted first, ties by value: the same as sorting every value (many ties here)."""
    b = Baseline()._replace(seen={"country": entries})
    ranked = sorted(entries.items(), key=lambda kv: (-kv[1][0], kv[0]))
    assert b.top_values("country", n) == [k for k, _ in ranked[:n]]
