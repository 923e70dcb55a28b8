from __future__ import annotations

from pathlib import Path

import pytest

from detector.engine import Detector, EngineState
from detector.model import load_model
from detector.policy import Action
from detector.signals import (
    CAEP_RISK_LEVEL_CHANGE,
    CAEP_SESSION_REVOKED,
    iso_time,
    to_caep_set,
    to_signal,
)
from tests.conftest import START_MS, make_auth

SIGNAL_FIELDS = {
    "schema", "signal_id", "action", "entity", "entity_kind", "entity_class", "session_id",
    "risk", "reasons", "model_version", "event_id", "event_time", "event_ts_ms", "kind",
}


@pytest.fixture(scope="module")
def decisions(small_model_dir: Path) -> list:  # type: ignore[type-arg]
    det = Detector(load_model(small_model_dir))
    t = START_MS + 9 * 3_600_000
    events = [make_auth(id="open", ts=t, session="s-1"),
              make_auth(id="hijack", ts=t + 60_000, session="s-1", country="BR", city="Recife",
                        lat=-8.05, lon=-34.9, asn=14061, ip="203.0.113.1")]
    return det.process(events, EngineState())


def test_signal_record_fields(decisions: list) -> None:  # type: ignore[type-arg]
    d = decisions[1]
    assert d.action is Action.REVOKE
    sig = to_signal(d)
    assert set(sig) == SIGNAL_FIELDS
    assert sig["signal_id"] == d.signal_id
    assert sig["event_id"] == "hijack"
    assert sig["event_time"] == iso_time(d.event.ts_ms)
    assert any(r["code"] == "session_context_change" for r in sig["reasons"])


def test_caep_rendering(decisions: list) -> None:  # type: ignore[type-arg]
    sig = to_signal(decisions[1])
    claims = to_caep_set(sig, "https://zt.example", audience="https://idp.example")
    assert set(claims) == {"iss", "iat", "jti", "sub_id", "events", "aud"}
    assert claims["jti"] == sig["signal_id"]
    assert claims["iat"] == sig["event_ts_ms"] // 1000
    assert claims["sub_id"]["session"] == {"format": "opaque", "id": "s-1"}
    assert CAEP_SESSION_REVOKED in claims["events"]
    step = dict(sig, action="step_up")
    assert CAEP_RISK_LEVEL_CHANGE in to_caep_set(step, "https://zt.example")["events"]


def test_no_signal_for_allow(decisions: list) -> None:  # type: ignore[type-arg]
    allow = [d for d in decisions if d.action is Action.ALLOW]
    for d in allow:
        with pytest.raises(ValueError):
            to_signal(d)
    with pytest.raises(ValueError):
        to_caep_set({"action": "allow", "event_ts_ms": 0, "signal_id": "x"}, "iss")
