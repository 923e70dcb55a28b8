"""Features: a fixed, named, append-only vector per event.

Every feature is computed from the event and the entity's baseline *as it was
before the event* (prequential: score, then learn), plus the cross-entity
context (source IP, session). Training, notebooks, the replay CLI and the
stream workers all call :meth:`FeatureExtractor.extract`; there is no second
implementation.

A feature that cannot be computed (the event lacks the field, or there is no
history to compare with) is ``NaN``: *missing*, never zero. The scorer imputes
missing values with the training median of that feature, so a missing field
neither raises nor lowers the anomaly score on its own.

Rarity features are ``-log10`` of the value's decayed share in the baseline,
floored at 1e-4: 0 for the usual value, 4 for a never-seen one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from detector.baseline import _LN2, _MAX_BACKWARD_HALF_LIVES, _MILLI, Baseline, decayed
from detector.config import DetectorConfig
from detector.context import IpStats
from detector.events import EntityClass, Event, EventKind

NAN: Final = float("nan")

#: The feature vector's layout. Stable identifiers: APPEND ONLY, never rename
#: or reorder (models store the names they were trained on and refuse others).
FEATURE_NAMES: Final = (
    "auth_failure",
    "hour_rarity",
    "days_idle_log",
    "history_log",
    "country_rarity",
    "city_rarity",
    "asn_rarity",
    "prefix_rarity",
    "travel_kmh_log",
    "device_rarity",
    "ua_rarity",
    "service_rarity",
    "recent_failures_log",
    "fail_rate",
    "failures_then_success_log",
    "ip_users_log",
    "ip_failures_log",
    "ip_fail_users_log",
    "session_change",
    "hosting_asn",
    "mfa",
    "entity_admin",
    "entity_vendor",
    "entity_service",
    "entity_device",
    "service_tier",
    "dst_internal",
    "host_rarity",
    "port_rarity",
    "new_hosts_burst_log",
    "dst_country_rarity",
    "dst_asn_rarity",
    "bytes_out_z",
    "bytes_in_z",
    "bytes_out_log",
)
FEATURE_INDEX: Final = {name: i for i, name in enumerate(FEATURE_NAMES)}

#: Features the authentication forest is trained on.
AUTH_FEATURES: Final = (
    "auth_failure",
    "hour_rarity",
    "days_idle_log",
    "history_log",
    "country_rarity",
    "city_rarity",
    "asn_rarity",
    "prefix_rarity",
    "travel_kmh_log",
    "device_rarity",
    "ua_rarity",
    "service_rarity",
    "recent_failures_log",
    "fail_rate",
    "failures_then_success_log",
    "ip_users_log",
    "ip_failures_log",
    "ip_fail_users_log",
    "session_change",
    "hosting_asn",
    "mfa",
    "entity_admin",
    "entity_vendor",
    "entity_service",
    "service_tier",
)

#: Features the network forest is trained on.
NETWORK_FEATURES: Final = (
    "hour_rarity",
    "days_idle_log",
    "history_log",
    "entity_admin",
    "entity_vendor",
    "entity_service",
    "entity_device",
    "dst_internal",
    "host_rarity",
    "port_rarity",
    "new_hosts_burst_log",
    "dst_country_rarity",
    "dst_asn_rarity",
    "bytes_out_z",
    "bytes_in_z",
    "bytes_out_log",
)

_N_FEATURES: Final = len(FEATURE_NAMES)
_NO_VALUES: Final[Mapping[str, tuple[int, int]]] = MappingProxyType({})
# Enum members bound to module names: class-attribute access on an Enum is slow
# in Python 3.11 and these are read on every event.
_AUTH: Final = EventKind.AUTH
_ADMIN: Final = EntityClass.ADMIN
_VENDOR: Final = EntityClass.VENDOR
_SERVICE: Final = EntityClass.SERVICE
_DEVICE: Final = EntityClass.DEVICE
_RARITY_FLOOR: Final = 1e-4
_MAX_RARITY: Final = 4.0
_EARTH_KM: Final = 6371.0088


@dataclass(frozen=True, slots=True)
class EventContext:
    """Cross-entity context of one event, computed in input order.

    ``ip`` is None when the event has no source IP (or is not an auth event);
    ``session_changes`` is None when the event carries no trackable session.
    """

    ip: IpStats | None = None
    session_changes: tuple[tuple[str, str, str], ...] | None = None


EMPTY_CONTEXT: Final = EventContext()


def rarity(share: float) -> float:
    """Return ``-log10(share)`` floored at 1e-4: 0 usual, 4 never seen.

    Examples
    --------
    >>> rarity(1.0), rarity(0.01), rarity(0.0)
    (0.0, 2.0, 4.0)
    """
    if share <= _RARITY_FLOOR:
        return _MAX_RARITY
    return -math.log10(share) + 0.0


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Return the great-circle distance in km.

    Examples
    --------
    >>> round(haversine_km(40.7128, -74.0060, 51.5074, -0.1278))  # New York - London
    5570
    """
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_KM * math.asin(min(1.0, math.sqrt(a)))


def travel(event: Event, b: Baseline, cfg: DetectorConfig) -> tuple[float, float] | None:
    """Return (km, km/h) from the last learned successful location, or None.

    Distances under ``cfg.travel_min_km`` count as no travel (geo-IP noise).
    The elapsed time is floored at one minute.
    """
    if event.src_lat is None or event.src_lon is None or b.last_success is None:
        return None
    ts, lat, lon, _ = b.last_success
    if lat == event.src_lat and lon == event.src_lon:
        # Same place as last time (the common case): haversine_km() is exactly
        # 0.0 there, so skip the trigonometry.
        km = 0.0
    else:
        km = haversine_km(lat, lon, event.src_lat, event.src_lon)
    if km < cfg.travel_min_km:
        return (km, 0.0)
    hours = max((event.ts_ms - ts) / 3_600_000.0, 1.0 / 60.0)
    return (km, km / hours)


def hour_share(b: Baseline, ts_ms: int, factor: float) -> float:
    """Return the decayed, smoothed share of this hour of week in ``b``.

    The hour's own bin counts half, its neighbours a quarter each (people log
    on a little earlier or later), mixed with the hour-of-day share across the
    week (Tuesday 09h makes Wednesday 09h usual too).
    """
    hours = b.hours
    if not hours:
        return 0.0
    h = (ts_ms // 3_600_000 + 72) % 168  # hour_of_week(), inlined on this hot path
    get = hours.get
    week = 0.25 * get((h - 1) % 168, 0) + 0.5 * get(h, 0) + 0.25 * get((h + 1) % 168, 0)
    hod = h % 24
    day = (
        get(hod, 0)
        + get(hod + 24, 0)
        + get(hod + 48, 0)
        + get(hod + 72, 0)
        + get(hod + 96, 0)
        + get(hod + 120, 0)
        + get(hod + 144, 0)
    ) / 7.0
    total = b.hours_total * factor + 1.0
    return (0.6 * week + 0.4 * day) * factor / total


class FeatureExtractor:
    """Computes :data:`FEATURE_NAMES` vectors. Holds only derived configuration.

    Parameters
    ----------
    cfg : detector configuration
    peers : population baselines by entity kind (``user``, ``device``), for cold start

    Examples
    --------
    >>> from detector.events import parse_event
    >>> fx = FeatureExtractor(DetectorConfig(), {})
    >>> e = parse_event(b'{"kind":"auth","ts":1767225600000,"user":"ana","ok":false}')
    >>> row = fx.extract(e, Baseline(), EMPTY_CONTEXT)
    >>> len(row) == len(FEATURE_NAMES), row[FEATURE_INDEX["auth_failure"]]
    (True, 1.0)
    """

    def __init__(self, cfg: DetectorConfig, peers: dict[str, Baseline]) -> None:
        self.cfg = cfg
        self.peers = peers
        self._hosting = frozenset(cfg.hosting_asns)
        self._tiers = dict(cfg.service_tiers)
        # Derived once: read on every event.
        self._min_events = cfg.min_events
        self._fail_half_life_s = cfg.failure_burst_half_life_s
        self._host_half_life_s = cfg.new_host_burst_half_life_s
        # Baseline.decay_factor()'s constants, computed by the same expressions.
        self._half_life_ms = cfg.profile_half_life_days * 86_400_000.0
        self._min_delta = -_MAX_BACKWARD_HALF_LIVES * self._half_life_ms

    def is_cold(self, b: Baseline) -> bool:
        """Return True while an entity has too little learned history of its own."""
        return b.n_learned < self.cfg.min_events

    def profile_for(self, event: Event, b: Baseline) -> Baseline:
        """Return the baseline that rarity features compare against.

        An entity in cold start is compared with its population's baseline
        (all users, or all devices; when the model has one): "new country"
        means little for an entity with three logons, but "a country nobody
        in the company uses" does. Per-class peers (vendors, admins) are too
        few in most organisations to say what is usual.
        """
        if self.is_cold(b):
            peer = self.peers.get(event.entity_kind.value)
            if peer is not None:
                return peer
        return b

    def extract(self, event: Event, b: Baseline, ctx: EventContext) -> list[float]:
        """Return the feature vector of ``event`` against ``b`` (before the event).

        Parameters
        ----------
        event : the event to describe
        b : the entity's baseline before this event
        ctx : cross-entity context of this event

        Returns
        -------
        list of float
            One value per name in :data:`FEATURE_NAMES`; NaN where missing.
        """
        # Hot path (once per event): is_cold() and profile_for() are inlined.
        cold = b.n_learned < self._min_events
        prof = b
        if cold:
            peer = self.peers.get(event.entity_kind)  # a StrEnum hashes as its value
            if peer is not None:
                prof = peer
        ts = event.ts_ms
        # A peer baseline is frozen at training time: read it as of its own
        # last event, or every value would look rarer the older the model is.
        # prof.decay_factor(), inlined with the same arithmetic.
        delta: float = (ts if prof is b else (prof.last_ts or ts)) - prof.t0
        if delta < self._min_delta:
            delta = self._min_delta
        f = math.exp(-_LN2 * delta / self._half_life_ms) / _MILLI
        row = [NAN] * _N_FEATURES

        if prof.hours:
            share = hour_share(prof, ts, f)  # rarity(), inlined
            row[1] = _MAX_RARITY if share <= _RARITY_FLOOR else -math.log10(share) + 0.0
        last_ts = b.last_ts
        if last_ts is not None:
            row[2] = math.log1p((ts - last_ts if ts > last_ts else 0) / 86_400_000.0)
        row[3] = math.log1p(b.n_learned)
        cls = event.entity_class
        row[21] = 1.0 if cls is _ADMIN else 0.0
        row[22] = 1.0 if cls is _VENDOR else 0.0
        row[23] = 1.0 if cls is _SERVICE else 0.0
        row[24] = 1.0 if cls is _DEVICE else 0.0

        if event.kind is _AUTH:
            self._auth(event, b, prof, f, cold, ctx, row)
        else:
            self._network(event, b, prof, f, row)
        return row

    def _auth(
        self,
        event: Event,
        b: Baseline,
        prof: Baseline,
        f: float,
        cold: bool,
        ctx: EventContext,
        row: list[float],
    ) -> None:
        ts = event.ts_ms
        seen = prof.seen
        totals = prof.seen_totals
        success = event.success
        if success is not None:
            row[0] = 0.0 if success else 1.0
        if event.src_country is not None:
            row[4] = _rarity_of(seen, totals, "country", event.src_country, f)
        if event.src_city is not None:
            row[5] = _rarity_of(seen, totals, "city", event.src_city, f)
        asn = event.src_asn
        if asn is not None:
            row[6] = _rarity_of(seen, totals, "asn", str(asn), f)
            row[19] = 1.0 if asn in self._hosting else 0.0
        if event.src_prefix is not None:
            row[7] = _rarity_of(seen, totals, "prefix", event.src_prefix, f)
        if event.src_lat is not None and b.last_success is not None:
            moved = travel(event, b, self.cfg)
            if moved is not None:
                row[8] = math.log1p(moved[1])
        if event.device_id is not None and not cold:
            row[9] = _rarity_of(seen, totals, "device", event.device_id, f)
        if event.user_agent is not None:
            row[10] = _rarity_of(seen, totals, "ua", event.user_agent, f)
        service = event.service
        if service is not None:
            row[11] = _rarity_of(seen, totals, "service", service, f)
            row[25] = float(self._tiers.get(service, 0))
        else:
            row[25] = 0.0
        fail_burst = b.fail_burst
        burst = (
            decayed(fail_burst, ts, self._fail_half_life_s) if fail_burst[0] != 0.0 else 0.0
        )
        row[12] = math.log1p(burst)
        if b.n_seen:
            row[13] = b.fail_rate
        if success is not None:
            row[14] = math.log1p(burst) if success else 0.0
        ip = ctx.ip
        if ip is not None:
            row[15] = math.log1p(ip.users)
            row[16] = math.log1p(ip.failures)
            row[17] = math.log1p(ip.fail_users)
        if ctx.session_changes is not None:
            row[18] = float(len(ctx.session_changes))
        if event.is_mfa is not None:
            row[20] = 1.0 if event.is_mfa else 0.0

    def _network(
        self, event: Event, b: Baseline, prof: Baseline, f: float, row: list[float]
    ) -> None:
        internal = event.dst_internal
        seen = prof.seen
        totals = prof.seen_totals
        if internal:
            row[26] = 1.0
            host = event.dst_hostname or event.dst_ip
            if host is not None:
                row[27] = _rarity_of(seen, totals, "host", host, f)
                seen_hosts = b.seen.get("host") or _NO_VALUES
                fresh = 0.0 if host in seen_hosts else 1.0
            else:
                fresh = 0.0
            if event.dst_port is not None:
                row[28] = _rarity_of(seen, totals, "port", str(event.dst_port), f)
            new_hosts = b.new_hosts
            burst = (
                decayed(new_hosts, event.ts_ms, self._host_half_life_s)
                if new_hosts[0] != 0.0
                else 0.0
            )
            row[29] = math.log1p(burst + fresh)
        elif internal is False:
            row[26] = 0.0
            if event.dst_country is not None:
                row[30] = _rarity_of(seen, totals, "dst_country", event.dst_country, f)
            if event.dst_asn is not None:
                row[31] = _rarity_of(seen, totals, "dst_asn", str(event.dst_asn), f)
        bytes_out = event.bytes_out
        if internal is not None:
            stats = b.traffic if b.traffic else prof.traffic
            if internal:
                out_key, in_key = "int_out", "int_in"
            else:
                out_key, in_key = "ext_out", "ext_in"
            if bytes_out is not None:
                row[32] = _zscore(stats.get(out_key), math.log1p(bytes_out))
            if event.bytes_in is not None:
                row[33] = _zscore(stats.get(in_key), math.log1p(event.bytes_in))
        if bytes_out is not None:
            row[34] = math.log1p(bytes_out)


def _rarity_of(
    seen: Mapping[str, Mapping[str, tuple[int, int]]],
    totals: Mapping[str, int],
    dim: str,
    value: str,
    f: float,
) -> float:
    """``rarity(prof.share(dim, value, f))`` in one call, with the same arithmetic."""
    entries = seen.get(dim)
    if entries:
        entry = entries.get(value)
        if entry is not None:
            share = entry[0] * f / (totals.get(dim, 0) * f + 1.0)
            if share > _RARITY_FLOOR:
                return -math.log10(share) + 0.0
    return _MAX_RARITY


def _zscore(stat: tuple[float, float, float] | None, x: float) -> float:
    """Return how many deviations ``x`` lies from an EW mean, or NaN without history."""
    if stat is None or stat[0] < 5.0:
        return NAN
    _, mean, var = stat
    # A floor on the deviation: a perfectly regular entity must not turn
    # every few bytes more into a huge z.
    return (x - mean) / max(math.sqrt(var), 0.5)
