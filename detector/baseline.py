"""Per-entity behavioural baselines: immutable values updated with event time.

A :class:`Baseline` summarises one user's (or device's) behaviour: when it is
active, where from, with which devices, which services and hosts it uses, how
often it fails to log on and how much data it moves. :func:`update` returns a
*new* baseline and never mutates its input, so a stream processor writes the
result back explicitly (``table[key] = new.to_dict()``).

Decay uses a landmark: an observation at time ``t`` gets weight
``2 ** ((t - t0) / half_life)`` where ``t0`` is the baseline's landmark. All
shares (this country's weight over all countries' weight) are then exact
exponentially decayed proportions, and one update touches O(1) entries. When
weights grow past 2**16 the baseline is renormalised to a new landmark, and
weights that fall under 0.001 of a fresh observation are forgotten.

Weights are integers in thousandths of an observation, so sums are exact,
serialise compactly, and the in-memory value equals its serialised form: a
worker that round-trips state through a Kafka changelog on every batch
decides exactly like an in-process replay.
"""

from __future__ import annotations

import functools
import heapq
import math
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from detector.config import HOUR_MS, DetectorConfig
from detector.events import EntityKind, Event, EventKind

#: Serialised schema version. Bump and add an upgrade step when fields change.
#: 2: compact form (times relative to the latest event, flat lists, short
#: names); :meth:`Baseline.from_dict` still reads 1.
SCHEMA_VERSION: Final = 2

#: Behavioural dimensions tracked as decayed distinct-value sets. Append only.
DIMENSIONS: Final = (
    "country",
    "city",
    "asn",
    "prefix",
    "device",
    "ua",
    "service",
    "host",
    "port",
    "dst_country",
    "dst_asn",
)

#: Traffic statistics per destination class and direction (log1p bytes).
TRAFFIC_KEYS: Final = ("int_out", "int_in", "ext_out", "ext_in")

# Short names in the serialised form (schema 2). Stored state: append only,
# never reuse an alias. A name without an alias is written as "~" + name.
_DIM_ALIAS: Final[dict[str, str]] = {
    "country": "c",
    "city": "ci",
    "asn": "a",
    "prefix": "p",
    "device": "d",
    "ua": "u",
    "service": "sv",
    "host": "h",
    "port": "po",
    "dst_country": "dc",
    "dst_asn": "da",
}
_DIM_BY_ALIAS: Final = {v: k for k, v in _DIM_ALIAS.items()}
_TRAFFIC_ALIAS: Final[dict[str, str]] = {
    "int_out": "io",
    "int_in": "ii",
    "ext_out": "eo",
    "ext_in": "ei",
}
_TRAFFIC_BY_ALIAS: Final = {v: k for k, v in _TRAFFIC_ALIAS.items()}


def _affixes(entries: Mapping[str, Entry]) -> tuple[str, str]:
    """Return the (prefix, suffix) common to all values of a set, or ("", "").

    Host names share the domain, user agents "Mozilla/5.0 (", IPv4 prefixes
    ".0/24": the serialised form writes them once per set. Kept only when it
    saves bytes; the two never overlap within the shortest value.
    """
    if len(entries) < 2:
        return "", ""
    values = list(entries)
    shortest = min(values, key=len)
    head = os.path.commonprefix(values)
    suffix = os.path.commonprefix([v[::-1] for v in values])[::-1]
    keep = min(len(suffix), len(shortest) - len(head))
    tail = suffix[len(suffix) - keep :]
    if (len(head) + len(tail)) * (len(values) - 1) <= 8:  # the two strings cost ~6 bytes
        return "", ""
    return head, tail


def _unescape(alias: str) -> str:
    """Return the name behind a serialised key that has no alias (``"~name"``)."""
    if not alias.startswith("~"):
        raise ValueError(f"unknown serialised name {alias!r}")
    return alias[1:]

_RENORMALISE_AT: Final = 16.0  # half-lives past the landmark
#: Events older than the landmark by more than this are read as if this old:
#: 2**64 keeps every decayed sum finite (exp() overflows past ~1000 half-lives).
_MAX_BACKWARD_HALF_LIVES: Final = 64.0
_LN2: Final = math.log(2.0)

# (weight in thousandths, last_seen_s) of one distinct value.
Entry = tuple[int, int]
_MILLI: Final = 1000.0


_NO_MAP: Final[Mapping[Any, Any]] = MappingProxyType({})
# Bound to a module name: Enum class-attribute access is slow in Python 3.11.
_AUTH: Final = EventKind.AUTH
_USER: Final = EntityKind.USER


class Baseline(NamedTuple):
    """One entity's behavioural baseline: an immutable value.

    A named tuple, so that the many small updates of a stream build new
    values cheaply; its mappings are never modified after construction.

    Attributes
    ----------
    n_seen : events observed (all of them, learned or not)
    n_learned : total learning weight folded into the profile (cold start)
    first_ts, last_ts : event time (ms) of the first and latest event seen
    t0 : landmark (ms) of the decayed weights
    hours, hours_total : hour-of-week (0 = Monday 00h UTC) -> decayed weight
    seen, seen_totals : dimension -> value -> (decayed weight, last seen s)

    Decayed weights are landmark-scaled integers in thousandths (see module doc).
    last_success : (ts_ms, lat, lon, country) of the last learned successful
        logon with a location
    fail_rate : exponentially weighted share of failed logons
    fail_burst : (decayed count, ts_ms) of recent failed logons
    new_hosts : (decayed count, ts_ms) of recent first-time internal hosts
    traffic : key in TRAFFIC_KEYS -> (n, mean, var) of log1p(bytes)
    signals : recent signals (dedup key, level, ts_ms), for storm control
    """

    n_seen: int = 0
    n_learned: float = 0.0
    first_ts: int | None = None
    last_ts: int | None = None
    t0: int = 0
    hours: Mapping[int, int] = _NO_MAP
    hours_total: int = 0
    seen: Mapping[str, Mapping[str, Entry]] = _NO_MAP
    seen_totals: Mapping[str, int] = _NO_MAP
    last_success: tuple[int, float, float, str | None] | None = None
    fail_rate: float = 0.0
    fail_burst: tuple[float, int] = (0.0, 0)
    new_hosts: tuple[float, int] = (0.0, 0)
    traffic: Mapping[str, tuple[float, float, float]] = _NO_MAP
    signals: tuple[tuple[str, int, int], ...] = ()

    # ------------------------------------------------------------------ reads
    def decay_factor(self, ts_ms: int, cfg: DetectorConfig) -> float:
        """Return the factor that turns stored weights into weights at ``ts_ms``.

        A stored weight ``w`` is worth ``w * factor`` observations "now".
        """
        half_life_ms = cfg.profile_half_life_days * 86_400_000.0
        # An event far older than the landmark (out of order by years, e.g. a
        # 1970 timestamp after a 2099 one) would overflow exp() past ~1000
        # half-lives: read the baseline as of _MAX_BACKWARD_HALF_LIVES before
        # the landmark instead. Ordinary events never reach the bound.
        delta = max(ts_ms - self.t0, -_MAX_BACKWARD_HALF_LIVES * half_life_ms)
        return math.exp(-_LN2 * delta / half_life_ms) / _MILLI

    def share(self, dimension: str, value: str, factor: float) -> float:
        """Return the decayed share of ``value`` among the dimension's values.

        One pseudo-observation is added to the denominator, so a value seen
        once in a short history is not "usual" yet. Unseen values give 0.0.

        Examples
        --------
        >>> b = Baseline()
        >>> b.share("country", "US", 1.0)
        0.0
        """
        entries = self.seen.get(dimension)
        if not entries:
            return 0.0
        entry = entries.get(value)
        if entry is None:
            return 0.0
        return entry[0] * factor / (self.seen_totals.get(dimension, 0) * factor + 1.0)

    def top_values(self, dimension: str, n: int = 3) -> list[str]:
        """Return up to ``n`` values of a dimension, most weighted first."""
        entries = self.seen.get(dimension) or {}
        # nsmallest is sorted(...)[:n] without sorting every value: a
        # dimension holds up to hundreds, and explanations want a few.
        ranked = heapq.nsmallest(n, entries.items(), key=lambda kv: (-kv[1][0], kv[0]))
        return [k for k, _ in ranked]

    def to_dict(self) -> dict[str, Any]:
        """Serialise to a compact JSON-ready dict carrying the schema version ``v``.

        Schema 2 (see :data:`SCHEMA_VERSION`): times are stored as differences
        from the latest event time, so they take a few digits instead of 13;
        hour and value weights are flat lists instead of objects; dimension
        names are short aliases, each value set carrying its total. Lossless:
        ``Baseline.from_dict(b.to_dict()) == b``.

        Examples
        --------
        >>> Baseline().to_dict()["v"]
        2
        >>> b = Baseline(n_seen=1, n_learned=1.0, first_ts=7_000, last_ts=9_000, t0=7_000,
        ...              hours={72: 1000}, hours_total=1000,
        ...              seen={"country": {"US": (1000, 9)}}, seen_totals={"country": 1000})
        >>> b.to_dict()
        {'v': 2, 'n': 1, 'nl': 1.0, 'lt': 9000, 'ft': 2000, 't0': 2000, 'h': [72, 1000], \
'ht': 1000, 's': {'c': [1000, 'US', 1000, 0]}}
        >>> Baseline.from_dict(b.to_dict()) == b
        True
        """
        lt = self.last_ts
        ref = 0 if lt is None else lt  # times are stored as ref - t
        out: dict[str, Any] = {"v": SCHEMA_VERSION, "n": self.n_seen, "nl": self.n_learned}
        if lt is not None:
            out["lt"] = lt
        if self.first_ts is not None:
            out["ft"] = ref - self.first_ts
        out["t0"] = ref - self.t0
        if self.hours:
            # Hours in ascending order, each as the step from the previous one
            # (mostly one digit); no decision depends on a mapping's order.
            flat: list[int] = []
            prev = 0
            for hour in sorted(self.hours):
                flat.append(hour - prev)
                flat.append(self.hours[hour])
                prev = hour
            out["h"] = flat
            out["ht"] = self.hours_total
        totals = self.seen_totals
        if self.seen:
            ref_s = ref // 1000
            dims: dict[str, list[Any]] = {}
            for dim, entries in self.seen.items():
                values: list[Any] = [totals.get(dim)]
                head, tail = _affixes(entries)
                cut = len(tail)
                if head or tail:  # written only when present: see from_dict
                    values.append(head)
                    values.append(tail)
                for value, (weight, last_s) in entries.items():
                    values.append(value[len(head) : len(value) - cut])
                    values.append(weight)
                    values.append(ref_s - last_s)
                dims[_DIM_ALIAS.get(dim) or "~" + dim] = values
            out["s"] = dims
        extra = {d: t for d, t in totals.items() if d not in self.seen}
        if extra:  # totals of dimensions without values (never written by update())
            out["st"] = extra
        if self.last_success is not None:
            ts, lat, lon, country = self.last_success
            out["ls"] = [ref - ts, lat, lon, country]
        if self.fail_rate:
            out["fr"] = self.fail_rate
        if self.fail_burst[0]:
            out["fb"] = [self.fail_burst[0], ref - self.fail_burst[1]]
        if self.new_hosts[0]:
            out["nh"] = [self.new_hosts[0], ref - self.new_hosts[1]]
        if self.traffic:
            out["tr"] = {_TRAFFIC_ALIAS.get(k) or "~" + k: list(v) for k, v in self.traffic.items()}
        if self.signals:
            out["sg"] = [[key, level, ref - ts] for key, level, ts in self.signals]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        """Rebuild a baseline from :meth:`to_dict` output (upgrading old versions).

        Reads schema 2 and schema 1 (the format before 2: changelogs written by
        deployed workers hold it). Raises ``ValueError`` for an unknown schema
        version or a malformed dict: state is input too, and is never trusted
        blindly.
        """
        version = data.get("v")
        if version == 1:
            return cls._from_v1(data)
        if version != SCHEMA_VERSION:
            raise ValueError(f"unsupported baseline schema version: {version!r}")
        try:
            lt = data.get("lt")
            last_ts = None if lt is None else int(lt)
            ref = 0 if last_ts is None else last_ts
            ref_s = ref // 1000
            ft = data.get("ft")
            flat_hours = data.get("h") or ()
            if len(flat_hours) % 2:
                raise ValueError("odd hours list")
            hours: dict[int, int] = {}
            hour = 0
            for i in range(0, len(flat_hours), 2):
                hour += int(flat_hours[i])
                hours[hour] = int(flat_hours[i + 1])
            seen: dict[str, dict[str, Entry]] = {}
            totals: dict[str, int] = {}
            for alias, values in (data.get("s") or {}).items():
                dim = _DIM_BY_ALIAS.get(alias) or _unescape(alias)
                # [total, (common prefix, common suffix)?, value, weight, age, ...]
                first = 1 + (len(values) - 1) % 3
                if first == 2:
                    raise ValueError("bad value list")
                head, tail = (str(values[1]), str(values[2])) if first == 3 else ("", "")
                if values[0] is not None:
                    totals[dim] = int(values[0])
                seen[dim] = {
                    head + str(values[i]) + tail: (int(values[i + 1]), ref_s - int(values[i + 2]))
                    for i in range(first, len(values), 3)
                }
            for dim, total in (data.get("st") or {}).items():
                totals[str(dim)] = int(total)
            ls = data.get("ls")
            fb = data.get("fb")
            nh = data.get("nh")
            return cls(
                n_seen=int(data["n"]),
                n_learned=float(data["nl"]),
                first_ts=None if ft is None else ref - int(ft),
                last_ts=last_ts,
                t0=ref - int(data["t0"]),
                hours=hours,
                hours_total=int(data.get("ht", 0)),
                seen=seen,
                seen_totals=totals,
                last_success=None
                if ls is None
                else (
                    ref - int(ls[0]),
                    float(ls[1]),
                    float(ls[2]),
                    None if ls[3] is None else str(ls[3]),
                ),
                fail_rate=float(data.get("fr", 0.0)),
                fail_burst=(0.0, 0) if fb is None else (float(fb[0]), ref - int(fb[1])),
                new_hosts=(0.0, 0) if nh is None else (float(nh[0]), ref - int(nh[1])),
                traffic={
                    (_TRAFFIC_BY_ALIAS.get(k) or _unescape(k)): (
                        float(v[0]),
                        float(v[1]),
                        float(v[2]),
                    )
                    for k, v in (data.get("tr") or {}).items()
                },
                signals=tuple(
                    (str(sg[0]), int(sg[1]), ref - int(sg[2])) for sg in data.get("sg") or ()
                ),
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ValueError(f"malformed baseline: {type(exc).__name__}") from exc

    @classmethod
    def _from_v1(cls, data: Mapping[str, Any]) -> Baseline:
        """Read schema 1: absolute times, objects for hours and value weights."""
        try:
            ls = data.get("ls")
            return cls(
                n_seen=int(data["n"]),
                n_learned=float(data["nl"]),
                first_ts=None if data.get("ft") is None else int(data["ft"]),
                last_ts=None if data.get("lt") is None else int(data["lt"]),
                t0=int(data["t0"]),
                hours={int(k): int(v) for k, v in (data.get("h") or {}).items()},
                hours_total=int(data.get("ht", 0)),
                seen={
                    str(d): {str(k): (int(w), int(s)) for k, (w, s) in e.items()}
                    for d, e in (data.get("s") or {}).items()
                },
                seen_totals={str(k): int(v) for k, v in (data.get("st") or {}).items()},
                last_success=None
                if ls is None
                else (
                    int(ls[0]),
                    float(ls[1]),
                    float(ls[2]),
                    None if ls[3] is None else str(ls[3]),
                ),
                fail_rate=float(data.get("fr", 0.0)),
                fail_burst=_pair(data.get("fb")),
                new_hosts=_pair(data.get("nh")),
                traffic={
                    str(k): (float(v[0]), float(v[1]), float(v[2]))
                    for k, v in (data.get("tr") or {}).items()
                },
                signals=tuple((str(s[0]), int(s[1]), int(s[2])) for s in data.get("sg") or ()),
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ValueError(f"malformed baseline: {type(exc).__name__}") from exc


EMPTY: Final = Baseline()

# Builds a Baseline from a complete tuple of its 15 fields, skipping the
# generated keyword-argument __new__ (a Python-level call): update() builds
# one per event. Give it every field, in order (a test checks).
_new_baseline: Final = functools.partial(tuple.__new__, Baseline)


def _pair(value: Any) -> tuple[float, int]:
    if value is None:
        return (0.0, 0)
    return (float(value[0]), int(value[1]))


def decayed(count_ts: tuple[float, int], ts_ms: int, half_life_s: float) -> float:
    """Return a short-window decayed counter's value at ``ts_ms``.

    Examples
    --------
    >>> decayed((4.0, 0), 600_000, 600.0)
    2.0
    """
    count, last = count_ts
    if count == 0.0:
        return 0.0
    dt = max(ts_ms - last, 0)
    return count * math.exp(-_LN2 * dt / (half_life_s * 1000.0))


def hour_of_week(ts_ms: int) -> int:
    """Return the UTC hour of week, 0 = Monday 00h, for epoch milliseconds.

    Examples
    --------
    >>> hour_of_week(0)  # 1970-01-01 was a Thursday
    72
    """
    # Epoch day 0 was a Thursday (weekday 3 with Monday = 0).
    return int((ts_ms // HOUR_MS + 72) % 168)


def dimension_values(event: Event) -> list[tuple[str, str]]:
    """Return the (dimension, value) pairs an event contributes to a profile.

    Examples
    --------
    >>> from detector.events import parse_event
    >>> e = parse_event(b'{"kind":"auth","ts":0,"user":"ana","country":"US","service":"mail"}')
    >>> dimension_values(e)
    [('country', 'US'), ('service', 'mail')]
    """
    out: list[tuple[str, str]] = []
    if event.kind is _AUTH:
        if event.src_country is not None:
            out.append(("country", event.src_country))
        if event.src_city is not None:
            out.append(("city", event.src_city))
        if event.src_asn is not None:
            out.append(("asn", str(event.src_asn)))
        if event.src_prefix is not None:
            out.append(("prefix", event.src_prefix))
        if event.device_id is not None:
            out.append(("device", event.device_id))
        if event.user_agent is not None:
            out.append(("ua", event.user_agent))
        if event.service is not None:
            out.append(("service", event.service))
    else:
        if event.dst_internal:
            host = event.dst_hostname or event.dst_ip
            if host is not None:
                out.append(("host", host))
            if event.dst_port is not None:
                out.append(("port", str(event.dst_port)))
        elif event.dst_internal is False:
            if event.dst_country is not None:
                out.append(("dst_country", event.dst_country))
            if event.dst_asn is not None:
                out.append(("dst_asn", str(event.dst_asn)))
        if event.device_id is not None and event.entity_kind is _USER:
            out.append(("device", event.device_id))
    return out


def _ew(
    stat: tuple[float, float, float] | None, x: float, alpha: float
) -> tuple[float, float, float]:
    """Exponentially weighted mean/variance with a 1/n warm start."""
    if stat is None:
        return (1.0, round(x, 4), 0.0)
    n, mean, var = stat
    a = alpha if alpha * (n + 1.0) > 1.0 else 1.0 / (n + 1.0)
    diff = x - mean
    incr = a * diff
    return (
        n + 1.0 if n < 1e6 else n,
        round(mean + incr, 4),
        round((1.0 - a) * (var + diff * incr), 4),
    )


def update(
    b: Baseline,
    event: Event,
    cfg: DetectorConfig,
    learn_weight: float = 1.0,
    caps: Mapping[str, int] | None = None,
) -> Baseline:
    """Return a new baseline with ``event`` folded in; ``b`` is not modified.

    ``learn_weight`` scales what the event teaches the *profile* (places,
    devices, hours, services, hosts, traffic). Risk counters (failure burst,
    new-host burst, last seen) always advance, so an attack that the policy
    refuses to learn still counts towards the next detection.

    Parameters
    ----------
    b : the baseline as it was before the event
    event : the event, already scored against ``b``
    cfg : detector configuration (half-lives, caps)
    learn_weight : 1.0 for trusted events, 0.0 for events not to learn
    caps : per-dimension caps, default ``cfg.caps`` (peer baselines use more)

    Returns
    -------
    Baseline
        The updated baseline.

    Examples
    --------
    >>> from detector.events import parse_event
    >>> e = parse_event(b'{"kind": "auth", "ts": 1767225600000, "user": "ana", "ok": true,'
    ...                 b' "country": "US"}')
    >>> b2 = update(EMPTY, e, DetectorConfig())
    >>> b2.n_seen, b2.top_values("country"), EMPTY.n_seen
    (1, ['US'], 0)
    """
    ts = event.ts_ms
    is_auth = event.kind is _AUTH
    (
        n_seen,
        n_learned,
        first_ts,
        last_ts,
        t0,
        hours,
        hours_total,
        seen,
        seen_totals,
        last_success,
        fail_rate,
        fail_burst,
        new_hosts,
        traffic,
        signals,
    ) = b

    # Risk counters first: they read the profile as it was before the event.
    if is_auth:
        if event.success is False:
            burst = decayed(fail_burst, ts, cfg.failure_burst_half_life_s)
            fail_burst = (round(burst + 1.0, 3), ts if ts > fail_burst[1] else fail_burst[1])
    elif event.dst_internal:
        host = event.dst_hostname or event.dst_ip
        if host is not None and host not in seen.get("host", _NO_MAP):
            burst = decayed(new_hosts, ts, cfg.new_host_burst_half_life_s)
            new_hosts = (round(burst + 1.0, 3), ts if ts > new_hosts[1] else new_hosts[1])

    if learn_weight > 0.0:
        half_life_ms = cfg.profile_half_life_days * 86_400_000.0
        if not hours and not seen:
            t0 = ts  # nothing learned yet: the first learned event anchors the landmark
        elif (ts - t0) / half_life_ms > _RENORMALISE_AT:
            hours, hours_total, seen, seen_totals, t0 = _renormalise(b, ts, half_life_ms)
        w = int(learn_weight * _MILLI * math.exp(_LN2 * (ts - t0) / half_life_ms))
        if learn_weight == 1.0 and n_learned % 1.0 == 0.0:
            # Whole counts stay exact: round(n + 1.0, 3) would return the same float.
            n_learned = n_learned + 1.0
        else:
            n_learned = round(n_learned + learn_weight, 3)
        how = (ts // HOUR_MS + 72) % 168  # hour_of_week(), inlined
        new_hours = dict(hours)
        new_hours[how] = new_hours.get(how, 0) + w
        hours = new_hours
        hours_total = hours_total + w
        pairs = dimension_values(event)
        if pairs:
            new_seen = dict(seen)
            new_totals = dict(seen_totals)
            ts_s = ts // 1000
            cap_of = caps if caps is not None else cfg.caps
            for dim, value in pairs:
                entries = new_seen.get(dim)
                entries = {} if entries is None else dict(entries)
                old = entries.get(value)
                if old is None:
                    if len(entries) >= cap_of.get(dim, 8):
                        del entries[_victim(entries)]
                    entries[value] = (w, ts_s)
                else:
                    entries[value] = (old[0] + w, ts_s if ts_s > old[1] else old[1])
                new_seen[dim] = entries
                new_totals[dim] = new_totals.get(dim, 0) + w
            seen = new_seen
            seen_totals = new_totals
        if is_auth:
            success = event.success
            if success is not None:
                a = cfg.ew_alpha if cfg.ew_alpha * (n_seen + 1.0) > 1.0 else 1.0 / (n_seen + 1.0)
                fail_rate = round(fail_rate + a * ((0.0 if success else 1.0) - fail_rate), 4)
                if success and event.src_lat is not None and event.src_lon is not None:
                    last_success = (ts, event.src_lat, event.src_lon, event.src_country)
        else:
            internal = event.dst_internal
            bytes_out = event.bytes_out
            bytes_in = event.bytes_in
            if internal is not None and (bytes_out is not None or bytes_in is not None):
                new_traffic = dict(traffic)
                alpha = cfg.ew_alpha
                if bytes_out is not None:
                    key = "int_out" if internal else "ext_out"
                    new_traffic[key] = _ew(traffic.get(key), math.log1p(bytes_out), alpha)
                if bytes_in is not None:
                    key = "int_in" if internal else "ext_in"
                    new_traffic[key] = _ew(traffic.get(key), math.log1p(bytes_in), alpha)
                traffic = new_traffic

    # Positional construction: the field order above is Baseline's.
    return _new_baseline(
        (
            n_seen + 1,
            n_learned,
            ts if first_ts is None or ts < first_ts else first_ts,
            ts if last_ts is None or ts > last_ts else last_ts,
            t0,
            hours,
            hours_total,
            seen,
            seen_totals,
            last_success,
            fail_rate,
            fail_burst,
            new_hosts,
            traffic,
            signals,
        )
    )


def _victim(entries: Mapping[str, Entry]) -> str:
    """Return the value to evict: least weight, then oldest, then by value."""
    victim = ""
    best: tuple[int, int, str] | None = None
    for value, (w, s) in entries.items():
        key = (w, s, value)
        if best is None or key < best:
            best = key
            victim = value
    return victim


def _renormalise(
    b: Baseline, ts: int, half_life_ms: float
) -> tuple[dict[int, int], int, dict[str, dict[str, Entry]], dict[str, int], int]:
    """Move the landmark to ``ts``, forgetting weights that decayed to ~0."""
    f = math.exp(-_LN2 * (ts - b.t0) / half_life_ms)
    hours = {h: int(w * f) for h, w in b.hours.items()}
    hours = {h: w for h, w in hours.items() if w > 0}
    seen: dict[str, dict[str, Entry]] = {}
    totals: dict[str, int] = {}
    for dim, entries in b.seen.items():
        kept = {k: (int(w * f), s) for k, (w, s) in entries.items()}
        kept = {k: v for k, v in kept.items() if v[0] > 0}
        if kept:
            seen[dim] = kept
            totals[dim] = int(b.seen_totals.get(dim, 0) * f)
    return hours, int(b.hours_total * f), seen, totals, ts


def with_signal(b: Baseline, key: str, level: int, ts_ms: int, window_s: int) -> Baseline:
    """Return ``b`` remembering a signal (for dedup), pruning expired ones."""
    horizon = ts_ms - window_s * 1000
    kept = tuple(s for s in b.signals if s[2] >= horizon and s[0] != key)
    # Bounded, so that a storm cannot grow state.
    return b._replace(signals=(kept + ((key, level, ts_ms),))[-8:])


def signal_suppressed(b: Baseline, key: str, level: int, ts_ms: int, window_s: int) -> bool:
    """Return True when a signal at ``level`` or above for ``key`` fired within the window."""
    horizon = ts_ms - window_s * 1000
    return any(s[0] == key and s[1] >= level and horizon <= s[2] <= ts_ms for s in b.signals)
