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
    """Return compiled ``(ip_stats, session_changes)``: ``(events, table) -> list``, or None."""
    return None


def policy_kernel(module: ModuleType, detector: Any) -> Any:
    """Return the compiled ``Policy.decide`` (same arguments and result), or None."""
    return None


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
