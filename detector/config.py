"""Detector configuration: one frozen object, stored inside every model.

The configuration that shaped a model's training features travels with the
model (``model.json``), so replaying the same events through the same model
gives the same decisions on any machine. Nothing here reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Final

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS


def _default_caps() -> dict[str, int]:
    # Distinct values kept per dimension. Small caps keep a baseline under
    # ~4 KB serialised; the decayed weights decide which values are evicted.
    return {
        "country": 6,
        "city": 6,
        "asn": 6,
        "prefix": 8,
        "device": 5,
        "ua": 5,
        "service": 12,
        "host": 16,
        "port": 10,
        "dst_country": 8,
        "dst_asn": 10,
    }


def _default_service_tiers() -> dict[str, int]:
    # 0 ordinary, 1 internal business data, 2 sensitive, 3 critical.
    return {
        "admin-console": 3,
        "payroll": 3,
        "finance-erp": 3,
        "hr-portal": 2,
        "vpn": 2,
        "file-share": 1,
        "git": 1,
        "ci": 1,
        "crm": 1,
    }


def _default_class_sensitivity() -> dict[str, float]:
    # Multiplies the allowed tail probability (1 - threshold): below 1 means
    # this peer group is challenged *sooner*. Admins and vendors hold the keys
    # to the most, so they get half the tail.
    return {"employee": 1.0, "admin": 0.5, "vendor": 0.5, "service": 1.0, "device": 1.0}


def _default_tier_sensitivity() -> dict[int, float]:
    return {0: 1.0, 1: 1.0, 2: 0.5, 3: 0.25}


# Autonomous systems of hosting, VPS and anonymising providers. A logon from
# one of these is a strong account-takeover signal for a workforce identity.
DEFAULT_HOSTING_ASNS: Final = (
    14061,  # DigitalOcean
    16276,  # OVH
    24940,  # Hetzner
    20473,  # Vultr / Choopa
    9009,  # M247
    63949,  # Akamai Linode
    212238,  # Datacamp / CDN77
    60068,  # Datacamp
    51167,  # Contabo
    36352,  # ColoCrossing
    53667,  # FranTech / BuyVM
)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Every tunable of the pure engine, with the reasoning for each default.

    Examples
    --------
    >>> cfg = DetectorConfig()
    >>> DetectorConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    #: Half-life of the behavioural profile (places, devices, hours...).
    profile_half_life_days: float = 21.0
    #: Half-life of the failed-logon burst counter.
    failure_burst_half_life_s: float = 600.0
    #: Half-life of the "new internal hosts" burst counter (lateral movement).
    new_host_burst_half_life_s: float = 1800.0
    #: EW weight of the failure rate and traffic statistics once warmed up.
    ew_alpha: float = 0.05
    #: Learned events below which an entity is in cold start (judged by peers).
    min_events: int = 20
    #: Window for per-source-IP context (spray, stuffing).
    ip_window_s: int = 3600
    #: Most recent auth events kept per source IP.
    ip_max_events: int = 64
    #: A session's opener context expires after this long (event time).
    session_ttl_s: int = 24 * 3600
    #: Signals for the same session and action level within this window are
    #: deduplicated (no signal storms during an active attack).
    signal_dedup_window_s: int = 3600
    #: Weight with which a step_up event is still learned. Revoked events are
    #: never learned (poisoning protection); a small weight lets a genuine new
    #: laptop or trip become familiar after a few challenged logons.
    step_up_learn_weight: float = 0.25
    #: Geo-IP is imprecise: distances below this are not travel.
    travel_min_km: float = 500.0
    #: Faster than an airliner, door to door.
    impossible_travel_kmh: float = 1000.0
    caps: Mapping[str, int] = field(default_factory=_default_caps)
    #: Caps for peer-group baselines (they summarise a whole population).
    peer_cap: int = 64
    service_tiers: Mapping[str, int] = field(default_factory=_default_service_tiers)
    class_sensitivity: Mapping[str, float] = field(default_factory=_default_class_sensitivity)
    tier_sensitivity: Mapping[int, float] = field(default_factory=_default_tier_sensitivity)
    hosting_asns: tuple[int, ...] = DEFAULT_HOSTING_ASNS

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of every setting."""
        out = asdict(self)
        out["tier_sensitivity"] = {str(k): v for k, v in self.tier_sensitivity.items()}
        out["hosting_asns"] = list(self.hosting_asns)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectorConfig:
        """Build a config from :meth:`to_dict` output; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown detector settings: {sorted(unknown)}")
        kwargs: dict[str, Any] = dict(data)
        if "tier_sensitivity" in kwargs:
            kwargs["tier_sensitivity"] = {
                int(k): float(v) for k, v in kwargs["tier_sensitivity"].items()
            }
        if "hosting_asns" in kwargs:
            kwargs["hosting_asns"] = tuple(int(a) for a in kwargs["hosting_asns"])
        for name in ("caps", "service_tiers", "class_sensitivity"):
            if name in kwargs:
                kwargs[name] = dict(kwargs[name])
        return cls(**kwargs)
