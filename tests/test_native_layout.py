"""The compiled kernels read Event and Baseline fields by position: the positions must match."""

from __future__ import annotations

from detector import native
from detector.baseline import Baseline
from detector.events import Event

# Part of every install (pip builds it); a missing build fails here, not silently.
_native = native.load()


def test_event_fields_match() -> None:
    assert _native is not None
    assert tuple(_native.EVENT_FIELDS) == Event._fields


def test_baseline_fields_match() -> None:
    assert _native is not None
    assert tuple(_native.BASELINE_FIELDS) == Baseline._fields


def test_source_checkout_has_a_fresh_build() -> None:
    """In a source checkout the module must be built, and from these sources."""
    assert native.CRATE_DIR.joinpath("Cargo.toml").is_file()
    assert _native is not None
    assert _native.SOURCE_DIGEST == native.source_digest()
    assert native.status().startswith("native ")
