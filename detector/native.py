"""The compiled kernels (``detector._native``) and the choice between them and Python.

``native/`` holds a Rust (PyO3) crate whose kernels are drop-ins for the
core's hottest functions: the same inputs, the same outputs, bit for bit. The
Python functions stay the specification: ``tests/test_native_*.py`` hold each
kernel to its Python original, and ``Detector(model, native=False)`` runs the
pure-Python core.

The module is built by ``pip install -e .`` (setuptools-rust) or, while
developing, by ``scripts/build-native``. A module built from other sources
than the checkout's ``native/`` is refused (:class:`NativeStale`), so a stale
build never decides in place of the code under test.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, Final

#: The crate, when this is a source checkout (absent from an installed wheel).
CRATE_DIR: Final = Path(__file__).resolve().parent.parent / "native"

_FNV_OFFSET: Final = 0xCBF29CE484222325
_FNV_PRIME: Final = 0x100000001B3
_MASK: Final = (1 << 64) - 1


class NativeStale(ImportError):
    """The compiled module was built from sources other than ``native/`` holds."""


def _fnv1a(data: bytes, h: int) -> int:
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK
    return h


def source_digest(crate: Path = CRATE_DIR) -> str:
    """Return the digest of the crate's sources, as ``native/build.rs`` computes it.

    FNV-1a (64 bits) over ``Cargo.toml``, ``build.rs`` and ``src/*.rs`` in
    name order, each as ``path NUL content NUL``; 16 hex digits.
    """
    files = ["Cargo.toml", "build.rs"] + sorted(
        f"src/{p.name}" for p in (crate / "src").iterdir() if p.name.endswith(".rs")
    )
    h = _FNV_OFFSET
    for rel in files:
        h = _fnv1a(rel.encode() + b"\0" + (crate / rel).read_bytes() + b"\0", h)
    return f"{h:016x}"


_loaded: ModuleType | None = None
_tried = False


def load() -> ModuleType | None:
    """Return the compiled module, or ``None`` when it is not built.

    Raises :class:`NativeStale` when this is a source checkout and the module
    was built from other sources (rebuild: ``scripts/build-native``).
    """
    global _loaded, _tried
    if _tried:
        return _loaded
    try:
        module = importlib.import_module("detector._native")
    except ImportError:
        module = None
    if module is not None and (CRATE_DIR / "Cargo.toml").is_file():
        built = getattr(module, "SOURCE_DIGEST", None)
        current = source_digest()
        if built != current:
            raise NativeStale(
                f"detector._native was built from other sources (digest {built}) than "
                f"native/ holds ({current}): rebuild it with scripts/build-native "
                "or pip install -e ."
            )
    _loaded, _tried = module, True
    return module


def status() -> str:
    """Return which implementation the core runs on, for benchmarks and logs."""
    try:
        module = load()
    except NativeStale as exc:
        return f"python (native stale: {exc})"
    if module is None:
        return "python (detector._native not built)"
    return f"native {module.SOURCE_DIGEST}"


# ---------------------------------------------------------------------------
# Kernel builders. Each returns the compiled drop-in for one piece of the
# Detector (bound to its model and configuration), or None to keep Python's.
# ``detector`` is the :class:`detector.engine.Detector` being built; its Python
# pieces are already set when these are called.


def update_kernel(module: ModuleType, detector: Any) -> Any:
    """Return the compiled ``update(b, event, cfg, learn_weight)``, or None."""
    return None


def extract_kernel(module: ModuleType, detector: Any) -> Any:
    """Return the compiled ``extract(event, b, ctx) -> list[float]``, or None."""
    return None


def score_kernels(module: ModuleType, detector: Any) -> Any:
    """Return compiled scorers by event kind, ``rows -> (scores, risks)`` as lists, or None."""
    return None


def context_kernels(module: ModuleType, detector: Any) -> Any:
    """Return compiled ``(ip_stats, session_changes)``: ``(events, table) -> list``, or None.

    Each kernel hands an event it does not recognise (odd types, a foreign
    value in the table) to the Python loop body below, so results and
    exceptions stay Python's. None when the configuration is out of the
    kernels' range (non-int windows).
    """
    from detector.context import (
        IpContext,
        IpStats,
        SessionContext,
        session_live,
        session_opener,
        update_ip,
    )
    from detector.events import Event, EventKind

    cfg = detector.cfg
    auth = EventKind.AUTH
    empty_ip = IpContext()
    ints = (cfg.ip_window_s, cfg.ip_max_events, cfg.session_ttl_s)
    if not all(type(v) is int and abs(v) < 2**53 for v in ints):
        return None

    # Detector.ip_stats / session_changes' loop bodies, for one event.
    def ip_one(e: Any, ips: Any) -> Any:
        if e.kind is auth and e.src_ip is not None:
            ctx = update_ip(ips.get(e.src_ip, empty_ip), e, cfg)
            ips[e.src_ip] = ctx
            return ctx.stats(e.ts_ms, cfg.ip_window_s)
        return None

    def session_one(e: Any, sessions: Any) -> Any:
        sid = e.session_id
        if sid is None or e.kind is not auth:
            return None
        opener = sessions.get(sid)
        if opener is not None and session_live(opener, e, cfg):
            return tuple(opener.changes(e))
        sessions[sid] = session_opener(e)
        return ()

    ip = module.IpStatsKernel(
        Event, auth, IpContext, IpStats, cfg.ip_window_s, cfg.ip_max_events, ip_one
    )
    session = module.SessionKernel(Event, auth, SessionContext, cfg.session_ttl_s, session_one)
    return ip, session


def policy_kernel(module: ModuleType, detector: Any) -> Any:
    """Return the compiled ``Policy.decide`` (same arguments and result), or None.

    A gate (``PolicyGate.decide``): it returns ``policy._ALLOW`` itself when
    it proves that no rule fires and the risk is under both thresholds, and
    calls ``detector.policy.decide`` otherwise. ``decide.__self__.counts()``
    tells how often it was asked and how often it handed over. None when the
    configuration is out of the gate's range.
    """
    from detector import engine, policy
    from detector.baseline import Baseline
    from detector.events import EntityClass, Event, EventKind
    from detector.features import FEATURE_INDEX

    pol = detector.policy
    cfg = pol.cfg
    if type(cfg.min_events) is not int or abs(cfg.min_events) >= 2**53:
        return None
    consts = (
        policy.SPRAY_FAIL_USERS,
        float(policy.BRUTE_STEP_UP),
        float(policy.LATERAL_STEP_UP),
        float(policy.EXFIL_Z),
        policy.EXFIL_MIN_BYTES,
        float(policy.DORMANT_DAYS),
        float(policy.FAIL_BURST_STEP_UP),
        policy.SENSITIVE_TIER,
        float(policy._NEW),
        float(policy._RARE_HOUR),
    )
    idx = tuple(
        FEATURE_INDEX[name]
        for name in (
            "asn_rarity",
            "bytes_out_z",
            "country_rarity",
            "days_idle_log",
            "device_rarity",
            "hosting_asn",
            "hour_rarity",
            "new_hosts_burst_log",
            "service_rarity",
            "ua_rarity",
        )
    )
    gate = module.PolicyGate(
        Event,
        Baseline,
        pol.decide,
        pol.thresholds_for,
        pol._tiers,
        policy._ALLOW,
        EventKind.AUTH,
        engine._NO_CTX,
        EntityClass.VENDOR,
        list(EntityClass),
        float(cfg.failure_burst_half_life_s),
        float(cfg.travel_min_km),
        float(cfg.impossible_travel_kmh),
        cfg.min_events,
        consts,
        idx,
    )
    return gate.decide


def process_kernel(module: ModuleType, detector: Any) -> Any:
    """Return the compiled batch loop ``(events, state, keep_features, contexts)``, or None."""
    return None
