from __future__ import annotations

import math

import pytest

from detector.baseline import EMPTY, Baseline, update
from detector.config import DetectorConfig
from detector.context import IpStats
from detector.features import (
    AUTH_FEATURES,
    EMPTY_CONTEXT,
    FEATURE_INDEX,
    FEATURE_NAMES,
    NETWORK_FEATURES,
    EventContext,
    FeatureExtractor,
    haversine_km,
    rarity,
)
from tests.conftest import START_MS, make_auth, make_net

CFG = DetectorConfig(min_events=5)
HOUR = 3_600_000


def history(n: int = 30) -> Baseline:
    """A user who logs on from Chicago on weekday mornings and reads files-1."""
    b = EMPTY
    for i in range(n):
        day = START_MS + (i % 5) * 86_400_000 + (i // 5) * 7 * 86_400_000
        b = update(b, make_auth(id=f"a{i}", ts=day + 9 * HOUR), CFG)
        b = update(b, make_net(id=f"n{i}", ts=day + 10 * HOUR), CFG)
    return b


def feat(row: list[float], name: str) -> float:
    return row[FEATURE_INDEX[name]]


FX = FeatureExtractor(CFG, {})
LATER = START_MS + 35 * 86_400_000 + 9 * HOUR  # a Thursday, 9h


def test_names_are_unique_and_subsets_known() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert set(AUTH_FEATURES) <= set(FEATURE_NAMES)
    assert set(NETWORK_FEATURES) <= set(FEATURE_NAMES)


def test_usual_logon_is_unremarkable() -> None:
    row = FX.extract(make_auth(id="x", ts=LATER), history(), EMPTY_CONTEXT)
    assert len(row) == len(FEATURE_NAMES)
    for name in ("country_rarity", "city_rarity", "device_rarity", "ua_rarity", "service_rarity"):
        assert feat(row, name) < 0.5, name
    assert feat(row, "hour_rarity") < 1.5
    assert feat(row, "travel_kmh_log") == 0.0
    assert feat(row, "auth_failure") == 0.0


@pytest.mark.parametrize(
    ("override", "feature"),
    [
        ({"country": "BR", "city": "Recife", "lat": -8.05, "lon": -34.9}, "country_rarity"),
        ({"city": "Springfield"}, "city_rarity"),
        ({"asn": 14061}, "asn_rarity"),
        ({"ip": "203.0.113.50"}, "prefix_rarity"),
        ({"device": "unknown-pc"}, "device_rarity"),
        ({"ua": "python-requests/2.31"}, "ua_rarity"),
        ({"service": "payroll"}, "service_rarity"),
    ],
)
def test_new_values_are_rare(override: dict[str, object], feature: str) -> None:
    row = FX.extract(make_auth(id="x", ts=LATER, **override), history(), EMPTY_CONTEXT)
    assert feat(row, feature) >= 3.0


def test_off_hours_is_rare() -> None:
    night = START_MS + 37 * 86_400_000 + 3 * HOUR  # Saturday 03h
    usual = FX.extract(make_auth(id="x", ts=LATER), history(), EMPTY_CONTEXT)
    odd = FX.extract(make_auth(id="y", ts=night), history(), EMPTY_CONTEXT)
    assert feat(odd, "hour_rarity") > feat(usual, "hour_rarity") + 1.0


def test_impossible_travel_speed() -> None:
    b = history()
    # Chicago -> Moscow (8,000 km) two hours after the last logon
    last_ts = b.last_success[0] if b.last_success else 0
    e = make_auth(id="x", ts=last_ts + 2 * HOUR, country="RU", city="Moscow", lat=55.75, lon=37.62)
    row = FX.extract(e, b, EMPTY_CONTEXT)
    assert math.expm1(feat(row, "travel_kmh_log")) > 3000


def test_missing_fields_are_nan_not_zero() -> None:
    e = make_auth(id="x", ts=LATER, country=None, city=None, lat=None, lon=None, asn=None,
                  device=None, ua=None, service=None, session=None, ok=None)
    row = FX.extract(e, history(), EMPTY_CONTEXT)
    for name in ("country_rarity", "city_rarity", "asn_rarity", "travel_kmh_log",
                 "device_rarity", "ua_rarity", "service_rarity", "auth_failure",
                 "session_change", "mfa"):
        assert math.isnan(feat(row, name)), name


def test_first_event_has_no_history_features() -> None:
    row = FX.extract(make_auth(), EMPTY, EMPTY_CONTEXT)
    assert math.isnan(feat(row, "days_idle_log"))
    assert math.isnan(feat(row, "travel_kmh_log"))
    assert feat(row, "history_log") == 0.0


def test_failed_burst_then_success() -> None:
    b = history()
    t = LATER
    for i in range(12):
        b = update(b, make_auth(id=f"f{i}", ts=t + i * 10_000, ok=False), CFG, 0.0)
    row = FX.extract(make_auth(id="s", ts=t + 130_000), b, EMPTY_CONTEXT)
    assert math.expm1(feat(row, "failures_then_success_log")) > 10


def test_context_features() -> None:
    ctx = EventContext(IpStats(users=40, failures=55, fail_users=38), (("country", "US", "BR"),))
    row = FX.extract(make_auth(id="x", ts=LATER), history(), ctx)
    assert math.expm1(feat(row, "ip_fail_users_log")) == pytest.approx(38)
    assert feat(row, "session_change") == 1.0


def test_lateral_burst_and_new_host() -> None:
    b = history()
    for i in range(8):
        b = update(b, make_net(id=f"l{i}", ts=LATER + i * 60_000, dst_host=f"srv-{i}",
                               dst_ip=f"10.9.0.{i}"), CFG, 0.0)
    row = FX.extract(make_net(id="z", ts=LATER + 600_000, dst_host="srv-99", dst_ip="10.9.0.99"),
                     b, EMPTY_CONTEXT)
    assert math.expm1(feat(row, "new_hosts_burst_log")) > 7
    assert feat(row, "host_rarity") >= 3.0


def test_exfil_bytes_z() -> None:
    b = EMPTY
    for i in range(30):
        b = update(b, make_net(id=f"o{i}", ts=START_MS + i * HOUR, dst_ip="52.1.2.3",
                               dst_host=None, direction="outbound", dst_country="US",
                               dst_asn=16509, bytes_out=50_000), CFG)
    e = make_net(id="x", ts=START_MS + 31 * HOUR, dst_ip="5.6.7.8", direction="outbound",
                 dst_host=None, dst_country="NL", dst_asn=24940, bytes_out=2_000_000_000)
    row = FX.extract(e, b, EMPTY_CONTEXT)
    assert feat(row, "bytes_out_z") > 10
    assert feat(row, "dst_country_rarity") >= 3
    assert math.isnan(feat(row, "host_rarity"))


def test_cold_start_uses_peer_baseline() -> None:
    peer = history(50)
    fx = FeatureExtractor(DetectorConfig(min_events=20), {"user": peer})
    row = fx.extract(make_auth(id="x", ts=LATER, user="newbie"), EMPTY, EMPTY_CONTEXT)
    assert feat(row, "country_rarity") < 0.5  # the company's usual country
    assert math.isnan(feat(row, "device_rarity"))  # unknowable from peers


def test_rarity_and_distance_helpers() -> None:
    assert rarity(1.0) == 0.0
    assert rarity(0.0) == 4.0
    assert haversine_km(0, 0, 0, 0) == 0.0
    assert 340 < haversine_km(48.8566, 2.3522, 51.5074, -0.1278) < 350
