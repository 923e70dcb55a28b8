"""Policy: from features and risk to ``allow`` / ``step_up`` / ``revoke``, with reasons.

Two sources decide, and the stronger wins:

* the **model**: the calibrated isolation-forest risk against thresholds that
  depend on the entity's peer group (employee, admin, vendor, service,
  device) and on the sensitivity tier of the service accessed: dynamic
  authorization from who, where, when, which device and what is accessed;
* explicit **rules** for attack patterns that need no statistics to condemn
  (impossible travel, a session used from two countries, brute force followed
  by success, password spray, lateral movement bursts, exfiltration).

Every non-allow decision carries its reasons as stable codes with observed and
expected values, e.g. ``new_country: observed=BR, seen=[US, CA]``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from detector.baseline import Baseline, decayed
from detector.config import DetectorConfig
from detector.events import EntityClass, Event, EventKind
from detector.features import FEATURE_INDEX, EventContext, travel


class Action(enum.StrEnum):
    """Decision for one event. Stable identifiers: append only."""

    ALLOW = "allow"
    STEP_UP = "step_up"
    REVOKE = "revoke"

    @property
    def level(self) -> int:
        """Return the action's strength: allow 0, step_up 1, revoke 2."""
        return _LEVEL[self]


_LEVEL: Final = {Action.ALLOW: 0, Action.STEP_UP: 1, Action.REVOKE: 2}
# Bound to a module name: Enum class-attribute access is slow in Python 3.11
# and this one is read on every event.
_AUTH: Final = EventKind.AUTH

#: Reason codes. Stable identifiers: APPEND ONLY.
REASON_CODES: Final = (
    "model_risk",
    "cold_start",
    "impossible_travel",
    "session_context_change",
    "brute_force_success",
    "password_spray",
    "lateral_movement",
    "exfiltration",
    "dormant_reactivation",
    "hosting_asn",
    "new_country",
    "rare_country",
    "new_city",
    "new_asn",
    "new_ip_prefix",
    "new_device",
    "new_user_agent",
    "rare_hour",
    "dormant_entity",
    "new_service",
    "sensitive_service",
    "failed_logon_burst",
    "ip_many_users",
    "ip_failures",
    "new_internal_host",
    "new_port",
    "new_hosts_burst",
    "new_dst_country",
    "new_dst_asn",
    "bytes_out",
    "bytes_in",
    "travel_speed",
    "unfamiliar_sign_in",
    "sensitive_service_anomaly",
)


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason for a decision: a stable code, what was observed, what was expected.

    Examples
    --------
    >>> Reason("new_country", "BR", "seen=[US, CA]").text
    'new_country: observed=BR, seen=[US, CA]'
    """

    code: str
    observed: str
    expected: str

    @property
    def text(self) -> str:
        """Return the one-line human rendering."""
        return f"{self.code}: observed={self.observed}, {self.expected}"

    def to_dict(self) -> dict[str, str]:
        """Return a JSON-ready dict with ``code``, ``observed``, ``expected``, ``text``."""
        return {
            "code": self.code,
            "observed": self.observed,
            "expected": self.expected,
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Base risk thresholds (for an employee on an ordinary service)."""

    step_up: float
    revoke: float

    def effective(self, class_factor: float, tier_factor: float) -> tuple[float, float]:
        """Return (step_up, revoke) after peer-group and tier sensitivity.

        The tail above each threshold is divided by the factors: a factor
        below 1 widens it, so a vendor on the payroll system is challenged
        sooner than an employee on chat.

        Examples
        --------
        >>> Thresholds(0.99, 0.999).effective(0.5, 1.0)
        (0.98, 0.998)
        """
        k = class_factor * tier_factor
        return (
            round(max(1.0 - (1.0 - self.step_up) / k, 0.0), 12),
            round(max(1.0 - (1.0 - self.revoke) / k, 0.0), 12),
        )


@dataclass(frozen=True, slots=True)
class FeatureStats:
    """Training medians and 99th percentiles of the features one forest uses."""

    names: tuple[str, ...]
    median: tuple[float, ...]
    p99: tuple[float, ...]


# Features that can explain a decision, and whether "high" is the anomalous
# direction. Context features (history, flags) explain nothing on their own.
_EXPLAINABLE: Final = (
    "hour_rarity",
    "days_idle_log",
    "country_rarity",
    "city_rarity",
    "asn_rarity",
    "prefix_rarity",
    "travel_kmh_log",
    "device_rarity",
    "ua_rarity",
    "service_rarity",
    "recent_failures_log",
    "ip_users_log",
    "ip_failures_log",
    "ip_fail_users_log",
    "session_change",
    "hosting_asn",
    "service_tier",
    "host_rarity",
    "port_rarity",
    "new_hosts_burst_log",
    "dst_country_rarity",
    "dst_asn_rarity",
    "bytes_out_z",
    "bytes_in_z",
)

# Feature positions read by the rules on every event.
_I_ASN_RARITY: Final = FEATURE_INDEX["asn_rarity"]
_I_BYTES_OUT_Z: Final = FEATURE_INDEX["bytes_out_z"]
_I_COUNTRY_RARITY: Final = FEATURE_INDEX["country_rarity"]
_I_DAYS_IDLE_LOG: Final = FEATURE_INDEX["days_idle_log"]
_I_DEVICE_RARITY: Final = FEATURE_INDEX["device_rarity"]
_I_DST_ASN_RARITY: Final = FEATURE_INDEX["dst_asn_rarity"]
_I_DST_COUNTRY_RARITY: Final = FEATURE_INDEX["dst_country_rarity"]
_I_HOSTING_ASN: Final = FEATURE_INDEX["hosting_asn"]
_I_HOUR_RARITY: Final = FEATURE_INDEX["hour_rarity"]
_I_NEW_HOSTS_BURST_LOG: Final = FEATURE_INDEX["new_hosts_burst_log"]
_I_SERVICE_RARITY: Final = FEATURE_INDEX["service_rarity"]
_I_UA_RARITY: Final = FEATURE_INDEX["ua_rarity"]

_NEW: Final = 3.0  # rarity >= 3: share below 0.1 %, effectively never seen
_WEEKDAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

# Rule thresholds. Each is a count of a thing an attacker does many times and
# a legitimate user does a few times at most.
SPRAY_FAIL_USERS: Final = 10  # distinct users failing from one IP in the window
BRUTE_STEP_UP: Final = 5.0  # decayed failed logons just before a success
BRUTE_REVOKE: Final = 10.0
LATERAL_STEP_UP: Final = 5.0  # decayed first-time internal hosts
LATERAL_REVOKE: Final = 10.0
EXFIL_Z: Final = 4.0  # deviations above the entity's usual log bytes out
EXFIL_MIN_BYTES: Final = 100_000_000
DORMANT_DAYS: Final = 30.0
FAIL_BURST_STEP_UP: Final = 10.0  # decayed failed logons, this one included
SENSITIVE_TIER: Final = 2  # service tiers at or above this are sensitive
_RARE_HOUR: Final = 2.5  # hour-of-week share below ~0.3 %


@dataclass(frozen=True, slots=True)
class Verdict:
    """The policy's output for one event."""

    action: Action
    reasons: tuple[Reason, ...]


def _fmt_num(x: float) -> str:
    if x == 0 or 1e-3 <= abs(x) < 1e6:
        return f"{x:.4g}"
    return f"{x:.2g}"


def _seen(b: Baseline, dim: str) -> str:
    return "seen=[" + ", ".join(b.top_values(dim, 4)) + "]"


class Policy:
    """Turns a risk and a feature row into a :class:`Verdict`.

    Parameters
    ----------
    cfg : detector configuration (sensitivities, tiers, travel speed)
    thresholds : base risk thresholds
    stats : per event kind, the training feature statistics for explanations
    """

    def __init__(
        self,
        cfg: DetectorConfig,
        thresholds: Thresholds,
        stats: Mapping[EventKind, FeatureStats],
    ) -> None:
        self.cfg = cfg
        self.thresholds = thresholds
        self._tiers = dict(cfg.service_tiers)
        self._thr_cache: dict[tuple[int, EntityClass], tuple[float, float]] = {}
        # The same thresholds keyed by what the event carries, so the hot path
        # skips the tier lookup: a handful of (service, peer group) pairs.
        self._thr_by_service: dict[tuple[str | None, EntityClass], tuple[float, float]] = {}
        self._explain: dict[EventKind, list[tuple[str, int, float, float]]] = {}
        for kind, st in stats.items():
            items = []
            for name, med, p99 in zip(st.names, st.median, st.p99, strict=True):
                if name in _EXPLAINABLE:
                    items.append((name, FEATURE_INDEX[name], med, p99))
            self._explain[kind] = items

    def thresholds_for(self, event: Event) -> tuple[float, float]:
        """Return the effective (step_up, revoke) risk thresholds for ``event``."""
        thr = self._thr_by_service.get((event.service, event.entity_class))
        if thr is not None:
            return thr
        tier = self._tiers.get(event.service, 0) if event.service is not None else 0
        key = (tier, event.entity_class)
        # Memoised per (tier, peer group): a handful of pairs, asked on every event.
        thr = self._thr_cache.get(key)
        if thr is None:
            cls_f = self.cfg.class_sensitivity.get(event.entity_class.value, 1.0)
            tier_f = self.cfg.tier_sensitivity.get(tier, 1.0)
            thr = self._thr_cache[key] = self.thresholds.effective(cls_f, tier_f)
        self._thr_by_service[(event.service, event.entity_class)] = thr
        return thr

    def decide(
        self,
        event: Event,
        row: Sequence[float],
        risk: float,
        cold: bool,
        ctx: EventContext,
        b: Baseline,
        profile: Baseline,
    ) -> Verdict:
        """Return the action and reasons for one scored event.

        Parameters
        ----------
        event : the event
        row : its feature vector (``FEATURE_NAMES`` order)
        risk : calibrated model risk in [0, 1]
        cold : whether the entity is in cold start
        ctx : its cross-entity context
        b : the entity's baseline before the event
        profile : the baseline rarities were computed against (``b`` or peers)

        Returns
        -------
        Verdict
        """
        rules = self._rules(event, row, ctx, b)
        step_thr, revoke_thr = self.thresholds_for(event)
        if not rules and risk < step_thr and risk < revoke_thr:
            return _ALLOW  # the common case: no rule fired, risk under both thresholds
        model_action = Action.ALLOW
        if risk >= revoke_thr:
            model_action = Action.REVOKE
        elif risk >= step_thr:
            model_action = Action.STEP_UP
        action = model_action
        for rule_action, _ in rules:
            if rule_action.level > action.level:
                action = rule_action
        if action is Action.ALLOW:
            return _ALLOW
        if action is Action.REVOKE and event.success is False:
            # A failed logon never revokes: the attacker did not get in, and
            # revoking the victim's sessions on failures would let anyone log
            # users out by spraying bad passwords (denial of service).
            action = Action.STEP_UP
        reasons: list[Reason] = [r for _, r in rules]
        if model_action is not Action.ALLOW:
            limit = revoke_thr if model_action is Action.REVOKE else step_thr
            reasons.append(Reason("model_risk", f"{risk:.5f}", f"threshold={limit:.5f}"))
        have = {r.code for r in reasons}
        for reason in self.explain(event, row, b, profile, ctx):
            if len(reasons) >= 6:
                break
            if reason.code not in have:
                reasons.append(reason)
                have.add(reason.code)
        if cold:
            reasons.append(
                Reason(
                    "cold_start",
                    f"history={b.n_learned:g}",
                    f"min_events={self.cfg.min_events}; judged against all "
                    f"{event.entity_kind.value}s",
                )
            )
        return Verdict(action, tuple(reasons))

    # ---------------------------------------------------------------- rules
    def _rules(
        self, event: Event, row: Sequence[float], ctx: EventContext, b: Baseline
    ) -> list[tuple[Action, Reason]]:
        out: list[tuple[Action, Reason]] = []
        if event.kind is _AUTH:
            ip = ctx.ip
            if ip is not None and ip.fail_users >= SPRAY_FAIL_USERS:
                act = Action.REVOKE if event.success else Action.STEP_UP
                out.append(
                    (
                        act,
                        Reason(
                            "password_spray",
                            f"{ip.fail_users} users failing from {event.src_ip}",
                            f"expected<{SPRAY_FAIL_USERS} per {self.cfg.ip_window_s}s",
                        ),
                    )
                )
            changes = ctx.session_changes
            if changes:
                attrs = {c[0] for c in changes}
                detail = "; ".join(f"{a} {was}->{now}" for a, was, now in changes)
                if "country" in attrs or "entity" in attrs or len(attrs) >= 2:
                    act = Action.REVOKE
                else:
                    act = Action.STEP_UP
                out.append(
                    (act, Reason("session_context_change", detail, "expected=same as at open"))
                )
            fail_burst = b.fail_burst
            # decayed() of a zero count is 0.0: skip the call (most entities never fail).
            burst = (
                decayed(fail_burst, event.ts_ms, self.cfg.failure_burst_half_life_s)
                if fail_burst[0] != 0.0
                else 0.0
            )
            if event.success is False and burst + 1.0 >= FAIL_BURST_STEP_UP:
                out.append(
                    (
                        Action.STEP_UP,
                        Reason(
                            "failed_logon_burst",
                            f"{burst + 1.0:.1f} recent failed logons",
                            f"expected<{FAIL_BURST_STEP_UP:g}",
                        ),
                    )
                )
            if event.success:
                if burst >= BRUTE_STEP_UP:
                    act = Action.REVOKE if burst >= BRUTE_REVOKE else Action.STEP_UP
                    out.append(
                        (
                            act,
                            Reason(
                                "brute_force_success",
                                f"{burst:.1f} recent failed logons then success",
                                f"expected<{BRUTE_STEP_UP:g}",
                            ),
                        )
                    )
                moved = travel(event, b, self.cfg)
                if moved is not None and moved[1] > self.cfg.impossible_travel_kmh:
                    last_country = b.last_success[3] if b.last_success else None
                    out.append(
                        (
                            Action.STEP_UP,
                            Reason(
                                "impossible_travel",
                                f"{moved[1]:.0f} km/h ({moved[0]:.0f} km, "
                                f"{last_country}->{event.src_country})",
                                f"expected<={self.cfg.impossible_travel_kmh:g} km/h",
                            ),
                        )
                    )
                country_r = row[_I_COUNTRY_RARITY]
                asn_r = row[_I_ASN_RARITY]
                new_place = country_r >= _NEW or asn_r >= _NEW
                if row[_I_HOSTING_ASN] == 1.0 and country_r >= _NEW:
                    out.append(
                        (
                            Action.STEP_UP,
                            Reason(
                                "hosting_asn",
                                f"AS{event.src_asn} ({event.src_as_name or 'hosting'}) "
                                f"in new country {event.src_country}",
                                "expected=residential or corporate network",
                            ),
                        )
                    )
                # Both of _unfamiliar's rules need a new network or a new
                # service (a NaN compares False, as it does there): skip the call
                # for the usual logon.
                if asn_r >= _NEW or row[_I_SERVICE_RARITY] >= _NEW:
                    out.extend(self._unfamiliar(event, row, b))
                idle = row[_I_DAYS_IDLE_LOG]
                if new_place and not math.isnan(idle) and math.expm1(idle) >= DORMANT_DAYS:
                    out.append(
                        (
                            Action.STEP_UP,
                            Reason(
                                "dormant_reactivation",
                                f"idle {math.expm1(idle):.0f} days, from {event.src_country} "
                                f"AS{event.src_asn}",
                                f"expected=activity within {DORMANT_DAYS:g} days",
                            ),
                        )
                    )
        else:
            burst = row[_I_NEW_HOSTS_BURST_LOG]
            if not math.isnan(burst):
                n_new = math.expm1(burst)
                if n_new >= LATERAL_STEP_UP:
                    act = Action.REVOKE if n_new >= LATERAL_REVOKE else Action.STEP_UP
                    out.append(
                        (
                            act,
                            Reason(
                                "lateral_movement",
                                f"{n_new:.1f} first-time internal hosts recently",
                                f"expected<{LATERAL_STEP_UP:g}",
                            ),
                        )
                    )
            z = row[_I_BYTES_OUT_Z]
            if (
                event.dst_internal is False
                and not math.isnan(z)
                and z >= EXFIL_Z
                and event.bytes_out is not None
                and event.bytes_out >= EXFIL_MIN_BYTES
            ):
                new_dst = (
                    row[_I_DST_COUNTRY_RARITY] >= _NEW
                    or row[_I_DST_ASN_RARITY] >= _NEW
                )
                typical = self._typical_bytes(b, event)
                out.append(
                    (
                        Action.REVOKE if new_dst else Action.STEP_UP,
                        Reason(
                            "exfiltration",
                            f"bytes_out={event.bytes_out:.2g} to {event.dst_country or '?'} "
                            f"AS{event.dst_asn}",
                            f"typical={typical}" + ("; new destination" if new_dst else ""),
                        ),
                    )
                )
        return out

    def _unfamiliar(
        self, event: Event, row: Sequence[float], b: Baseline
    ) -> list[tuple[Action, Reason]]:
        """Rules for successful logons with unfamiliar properties (see module doc)."""
        out: list[tuple[Action, Reason]] = []
        country_r = row[_I_COUNTRY_RARITY]
        asn_r = row[_I_ASN_RARITY]
        device_r = row[_I_DEVICE_RARITY]
        ua_r = row[_I_UA_RARITY]
        # A new network, in a country that is new or nearly so.
        new_location = asn_r >= _NEW and country_r + asn_r >= 2 * _NEW
        # Travellers bring their own laptop and browser; account takeover
        # brings neither. A vendor or a brand-new (cold) identity has no
        # familiar client to vouch for it, so location alone decides there.
        new_client = device_r >= _NEW or ua_r >= _NEW
        cold = b.n_learned < self.cfg.min_events
        no_client_history = cold or event.entity_class.value in ("vendor",)
        # A new identity (judged against the whole organisation) whose network
        # and browser nobody in the organisation uses is unfamiliar wherever
        # the country: the organisation's own people share ISPs and browsers.
        stranger = cold and asn_r >= _NEW and ua_r >= _NEW
        if (new_location and (new_client or no_client_history)) or stranger:
            out.append(
                (
                    Action.STEP_UP,
                    Reason(
                        "unfamiliar_sign_in",
                        f"{event.src_country} AS{event.src_asn}"
                        + (f" device={event.device_id}" if device_r >= _NEW else "")
                        + (" new user agent" if ua_r >= _NEW else ""),
                        "expected=a known country, network or client",
                    ),
                )
            )
        tier = self._tiers.get(event.service, 0) if event.service is not None else 0
        service_r = row[_I_SERVICE_RARITY]
        hour_r = row[_I_HOUR_RARITY]
        odd_context = hour_r >= _RARE_HOUR or country_r >= _NEW
        if tier >= SENSITIVE_TIER and service_r >= _NEW and odd_context:
            out.append(
                (
                    Action.STEP_UP,
                    Reason(
                        "sensitive_service_anomaly",
                        f"first use of {event.service} (tier {tier}) at {_how(event.ts_ms)}"
                        + (f" from {event.src_country}" if country_r >= _NEW else ""),
                        "expected=usual services at usual hours",
                    ),
                )
            )
        return out

    @staticmethod
    def _typical_bytes(b: Baseline, event: Event, key: str = "out") -> str:
        prefix = "int" if event.dst_internal else "ext"
        stat = b.traffic.get(f"{prefix}_{key}")
        if stat is None:
            return "unknown"
        return f"{math.expm1(stat[1]):.2g}"

    # --------------------------------------------------------- explanations
    def explain(
        self,
        event: Event,
        row: Sequence[float],
        b: Baseline,
        profile: Baseline,
        ctx: EventContext,
    ) -> list[Reason]:
        """Return reasons for features above their training 99th percentile.

        Ranked by how far past the 99th percentile they are (then by name, so
        the order is deterministic). Each names what was observed and what
        the entity's (or peer group's) baseline expected.
        """
        scored: list[tuple[float, str, int]] = []
        for name, idx, med, p99 in self._explain.get(event.kind, ()):
            x = row[idx]
            if math.isnan(x) or x <= p99:
                continue
            spread = p99 - med if p99 > med else 1.0
            scored.append(((x - med) / spread, name, idx))
        scored.sort(key=lambda t: (-t[0], t[1]))
        out = []
        for _, name, idx in scored[:4]:
            reason = self._render(name, row[idx], event, b, profile, ctx)
            if reason is not None:
                out.append(reason)
        return out

    def _render(
        self,
        name: str,
        x: float,
        event: Event,
        b: Baseline,
        prof: Baseline,
        ctx: EventContext,
    ) -> Reason | None:
        new = x >= _NEW
        if name == "country_rarity":
            code = "new_country" if new else "rare_country"
            return Reason(code, str(event.src_country), _seen(prof, "country"))
        if name == "city_rarity":
            return Reason("new_city", str(event.src_city), _seen(prof, "city"))
        if name == "asn_rarity":
            label = f"AS{event.src_asn}" + (f" {event.src_as_name}" if event.src_as_name else "")
            return Reason("new_asn", label, _seen(prof, "asn"))
        if name == "prefix_rarity":
            return Reason("new_ip_prefix", str(event.src_prefix), _seen(prof, "prefix"))
        if name == "device_rarity":
            return Reason("new_device", str(event.device_id), _seen(prof, "device"))
        if name == "ua_rarity":
            return Reason("new_user_agent", str(event.user_agent)[:80], _seen(prof, "ua"))
        if name == "service_rarity":
            return Reason("new_service", str(event.service), _seen(prof, "service"))
        if name == "service_tier":
            return Reason("sensitive_service", f"{event.service} (tier {x:g})", "tier<=1")
        if name == "hour_rarity":
            return Reason("rare_hour", _how(event.ts_ms), "usual=" + _usual_hours(prof))
        if name == "days_idle_log":
            return Reason("dormant_entity", f"idle {math.expm1(x):.1f} days", "usual=daily")
        if name == "travel_kmh_log":
            return Reason("travel_speed", f"{math.expm1(x):.0f} km/h", "usual=local")
        if name == "recent_failures_log":
            return Reason("failed_logon_burst", f"{math.expm1(x):.1f} recent failures", "usual<2")
        if name in ("ip_users_log", "ip_failures_log", "ip_fail_users_log") and ctx.ip is not None:
            if name == "ip_users_log":
                return Reason(
                    "ip_many_users", f"{ctx.ip.users} users from {event.src_ip}", "usual=few"
                )
            return Reason(
                "ip_failures",
                f"{ctx.ip.failures} failures, {ctx.ip.fail_users} users from {event.src_ip}",
                "usual=few",
            )
        if name == "session_change" and ctx.session_changes:
            detail = "; ".join(f"{a} {w}->{n}" for a, w, n in ctx.session_changes)
            return Reason("session_context_change", detail, "expected=same as at open")
        if name == "hosting_asn":
            return Reason("hosting_asn", f"AS{event.src_asn}", "expected=non-hosting network")
        if name == "host_rarity":
            host = event.dst_hostname or event.dst_ip
            return Reason("new_internal_host", str(host), _seen(prof, "host"))
        if name == "port_rarity":
            return Reason("new_port", str(event.dst_port), _seen(prof, "port"))
        if name == "new_hosts_burst_log":
            return Reason(
                "new_hosts_burst", f"{math.expm1(x):.1f} first-time hosts recently", "usual<2"
            )
        if name == "dst_country_rarity":
            return Reason("new_dst_country", str(event.dst_country), _seen(prof, "dst_country"))
        if name == "dst_asn_rarity":
            return Reason("new_dst_asn", f"AS{event.dst_asn}", _seen(prof, "dst_asn"))
        if name == "bytes_out_z":
            return Reason(
                "bytes_out",
                f"{event.bytes_out:.2g}",
                f"typical={self._typical_bytes(prof, event)} (z={x:.1f})",
            )
        if name == "bytes_in_z":
            return Reason(
                "bytes_in",
                f"{event.bytes_in:.2g}",
                f"typical={self._typical_bytes(prof, event, 'in')} (z={x:.1f})",
            )
        return None


_ALLOW: Final = Verdict(Action.ALLOW, ())


def _how(ts_ms: int) -> str:
    from detector.baseline import hour_of_week

    h = hour_of_week(ts_ms)
    return f"{_WEEKDAYS[h // 24]} {h % 24:02d}h UTC"


def _usual_hours(b: Baseline) -> str:
    if not b.hours:
        return "unknown"
    top = sorted(b.hours.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return "[" + ", ".join(f"{_WEEKDAYS[h // 24]} {h % 24:02d}h" for h, _ in top) + "]"


def stats_to_dict(stats: FeatureStats) -> dict[str, Any]:
    """Return a JSON-ready dict of feature statistics."""
    return {"names": list(stats.names), "median": list(stats.median), "p99": list(stats.p99)}
