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
from collections.abc import MutableMapping
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
    if module is not None and hasattr(module, "BaselineMap"):
        # A mutable mapping in every respect (isinstance checks included).
        MutableMapping.register(module.BaselineMap)
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


def engine_faults() -> tuple[type[BaseException], ...]:
    """Return the exception types a failing engine call can raise.

    ``Exception``, plus the compiled module's ``PanicException`` when it is
    built: a panic in a kernel (a bug) is raised as a ``BaseException``,
    which ``except Exception`` lets through. Whoever isolates engine
    failures (the stream stages) catches this tuple, so a kernel bug
    dead-letters its event instead of stopping the worker.

    Examples
    --------
    >>> Exception in engine_faults()
    True
    """
    try:
        module = load()
    except NativeStale:  # the Detector reports a stale build and runs Python
        module = None
    panic = getattr(module, "PanicException", None) if module is not None else None
    return (Exception,) if panic is None else (Exception, panic)


# ---------------------------------------------------------------------------
# Kernel builders. Each returns the compiled drop-in for one piece of the
# Detector (bound to its model and configuration), or None to keep Python's.
# ``detector`` is the :class:`detector.engine.Detector` being built; its Python
# pieces are already set when these are called.


def update_kernel(module: ModuleType, detector: Any) -> Any:
    """Return the compiled ``update(b, event, cfg, learn_weight)``, or None.

    The kernel (``UpdateKernel``) is bound to ``detector.cfg``: called with
    another config object, with ``caps``, or with anything unusual, it runs
    :func:`detector.baseline.update` instead. None when the module lacks it
    or a setting is one the kernel does not reproduce (not a finite number).
    """
    kernel_cls = getattr(module, "UpdateKernel", None)
    if kernel_cls is None:
        return None
    from detector import baseline
    from detector.events import EntityKind, Event, EventKind

    try:
        return kernel_cls(
            detector.cfg,
            baseline.Baseline,
            Event,
            baseline.update,
            EventKind.AUTH,
            EntityKind.USER,
            baseline._NO_MAP,
        )
    except ValueError:
        return None


def extract_kernel(module: ModuleType, detector: Any) -> Any:
    """Return the compiled ``extract(event, b, ctx) -> list[float]``, or None.

    The kernel (``FeatureKernel.extract``) is bound to ``detector.features``:
    its peers dict (read on every call, not copied), service tiers, hosting
    ASNs and the constants ``extract`` reads, and calls the Python
    ``extract`` for anything unusual. A configuration the kernel does not
    model (a half-life that is not a positive finite float, a ``min_events``
    or ``travel_min_km`` that is not an int64 or a float) keeps Python's.
    """
    import math

    from detector import baseline, features
    from detector.events import EntityClass, Event, EventKind

    factory = getattr(module, "FeatureKernel", None)
    fx = detector.features
    if factory is None or type(fx) is not features.FeatureExtractor:
        return None
    cfg = fx.cfg
    half_lives = (
        fx._half_life_ms,
        fx._fail_half_life_s * 1000.0,
        fx._host_half_life_s * 1000.0,
    )
    if not all(type(h) is float and math.isfinite(h) and h > 0.0 for h in half_lives):
        return None
    if type(fx._min_delta) is not float or type(fx.peers) is not dict:
        return None
    if type(fx._tiers) is not dict or type(fx._hosting) is not frozenset:
        return None
    for value in (fx._min_events, cfg.travel_min_km):
        if type(value) is not float and not (type(value) is int and -(2**63) <= value < 2**63):
            return None
    if fx._min_events != cfg.min_events:
        return None
    spec = {
        "event_type": Event,
        "baseline_type": baseline.Baseline,
        "peers": fx.peers,
        "tiers": fx._tiers,
        "hosting": fx._hosting,
        "auth": EventKind.AUTH,
        "admin": EntityClass.ADMIN,
        "vendor": EntityClass.VENDOR,
        "service_class": EntityClass.SERVICE,
        "device_class": EntityClass.DEVICE,
        "no_map": baseline._NO_MAP,
        "no_values": features._NO_VALUES,
        "nan": features.NAN,
        "max_rarity": features._MAX_RARITY,
        "rarity_floor": features._RARITY_FLOOR,
        "earth_km": features._EARTH_KM,
        "ln2": baseline._LN2,
        "milli": baseline._MILLI,
        "min_events": fx._min_events,
        "half_life_ms": half_lives[0],
        "min_delta": fx._min_delta,
        "fail_half_life_ms": half_lives[1],
        "host_half_life_ms": half_lives[2],
        "travel_min_km": cfg.travel_min_km,
    }
    return module.FeatureKernel(fx.extract, spec).extract


def score_kernels(module: ModuleType, detector: Any) -> Any:
    """Return compiled scorers by event kind, ``rows -> (scores, risks)`` as lists, or None.

    One ``_native.ForestScorer`` per kind with a forest, holding copies of the
    forest's node table and the kind's imputation and calibration arrays; it
    returns exactly ``KindModel.score(rows)`` as lists, and hands any input it
    does not take (not a list of equal-length lists of floats) to the Python
    scorer. Kinds without a forest (the constant benchmark model) keep the
    Python scorer, as do subclasses that override ``score``. Returns None (all
    Python) when this platform's ``pow`` does not round like numpy's
    ``np.power`` (e.g. numpy's AVX-512 SVML loop).
    """
    import numpy as np

    from detector.forest import CompiledForest, _round_down_float32
    from detector.model import CALIBRATION_LEVELS, KindModel

    scorer_cls = module.ForestScorer
    # The scores are 2 ** -(mean path length / c): exponents in [-8, 0] cover
    # every realistic forest; the scorer must round pow exactly as numpy does.
    probe = -np.random.default_rng(0).uniform(0.0, 8.0, size=4096)
    probe[:3] = (-0.0, -1.0, -0.5)
    if scorer_cls.pow2(probe.tolist()) != np.power(2.0, probe).tolist():
        return None
    scorers = dict(detector._scorers)
    for kind, km in detector.model.kinds.items():
        forest = km.forest
        # The kernel replicates KindModel.score and CompiledForest.score: a subclass
        # that overrides them (e.g. bench_replay's timed model) keeps its own.
        if (
            forest is None
            or type(km).score is not KindModel.score
            or type(km).matrix is not KindModel.matrix
            or type(forest).score is not CompiledForest.score
        ):
            continue
        scorers[kind] = scorer_cls(
            km.columns.tolist(),
            km.impute.tolist(),
            forest.feature.tolist(),
            _round_down_float32(forest.threshold).tolist(),
            forest.left.tolist(),
            forest.right.tolist(),
            forest.value.tolist(),
            forest.roots.tolist(),
            forest.max_depth,
            forest._plan.denominator,
            km.calib_scores.tolist(),
            CALIBRATION_LEVELS.tolist(),
            detector._scorers[kind],
        )
    return scorers


def combine_kernel(module: ModuleType) -> Any:
    """Return the compiled ``combine_context(ip, sessions)`` (``ContextCombiner``), or None.

    It builds the same ``EventContext`` values (the shared ``_NO_CTX`` where
    an event has neither part) and hands anything but two lists of one
    length to the Python function.
    """
    cls = getattr(module, "ContextCombiner", None)
    if cls is None:
        return None
    # Imported here: detector.engine imports this module.
    from detector import engine
    from detector.features import EventContext

    return cls(EventContext, engine._NO_CTX, engine.combine_context)


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
    """Return the compiled batch loop ``(events, state, keep_features, contexts)``, or None.

    The kernel (``ProcessKernel``) calls the detector's own pieces, so call
    this after they are set. It returns the decisions, or ``None`` (having
    called nothing) for input the Python loop must handle.
    """
    kernel = getattr(module, "ProcessKernel", None)
    if kernel is None:
        return None
    # Imported here: detector.engine imports this module.
    from detector import engine
    from detector.baseline import EMPTY, Baseline
    from detector.events import EntityKind, Event, EventKind
    from detector.policy import Action

    return kernel(
        detector._update,
        detector._extract,
        detector._scorers,
        detector._verdict,
        detector._decide,
        engine._new_decision,
        detector.cfg,
        detector.cfg.min_events,
        detector._peers,
        detector.model.version,
        EventKind.AUTH,
        EventKind.NETWORK,
        Action.ALLOW,
        EMPTY,
        Event,
        Baseline,
        EntityKind,
        engine.Decision,
    )


def bl_engine(module: ModuleType, detector: Any, judge: bool = True) -> Any:
    """Return the compiled engine on Rust-held baselines (``BlEngine``), or None.

    ``Detector.process`` uses it for a state whose baselines are a
    ``BaselineMap`` (``Detector.new_state``). It reads the detector's
    configuration, feature extractor, peer baselines, policy gate and
    scorers dict (read again at every batch). It asks ``detector._judge``
    for the verdict on every event its policy gate cannot prove allowed, and
    hands every event it cannot decide itself to ``detector._process_one``.
    With ``judge=False`` it hands the former over whole too, as it did before
    ``_judge`` existed (kept for the benchmark's side-by-side twin). None when
    one of these is not the compiled piece or the configuration is out of its
    range.
    """
    factory = getattr(module, "BlEngine", None)
    gate = getattr(detector._verdict, "__self__", None)
    if factory is None or gate is None or type(gate) is not getattr(module, "PolicyGate", None):
        return None
    # Imported here: detector.engine imports this module.
    from detector import engine, features, policy
    from detector.context import IpStats
    from detector.policy import Action

    if type(detector.features) is not features.FeatureExtractor:
        return None
    try:
        return factory(
            detector.cfg,
            detector.features,
            detector._peers,
            gate,
            detector._scorers,
            detector._process_one,
            detector._judge if judge else None,
            engine._new_decision,
            engine.Decision,
            Action.ALLOW,
            policy._ALLOW.reasons,
            detector.model.version,
            features.NAN,
            len(features.FEATURE_NAMES),
            IpStats,
            engine._NO_CTX,
        )
    except ValueError:  # a configuration the engine does not model
        return None
