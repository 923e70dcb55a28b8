"""Signals out: the JSON record for the response topic, and its CAEP rendering.

A signal is emitted for a ``step_up`` or ``revoke`` decision that was not
deduplicated. Its fields are an API (append only)::

    schema, signal_id, action, entity, entity_kind, entity_class, session_id,
    risk, reasons, model_version, event_id, event_time, event_ts_ms, kind

``signal_id`` is deterministic from the triggering event and the action, so a
redelivered event yields the same id and consumers deduplicate.

:func:`to_caep_set` renders the OpenID Shared Signals / CAEP Security Event
Token *payload* (RFC 8417 claims ``iss``, ``iat``, ``jti``, ``sub_id``,
``events``): ``session-revoked`` for ``revoke`` and ``risk-level-change`` for
``step_up``. Signing (JWS) is the transport's job.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from detector.engine import Decision
from detector.policy import Action

SIGNAL_SCHEMA: Final = "zt-detector.signal/1"
CAEP_SESSION_REVOKED: Final = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
CAEP_RISK_LEVEL_CHANGE: Final = (
    "https://schemas.openid.net/secevent/caep/event-type/risk-level-change"
)


def iso_time(ts_ms: int) -> str:
    """Return an RFC 3339 UTC timestamp with milliseconds for epoch ms.

    Examples
    --------
    >>> iso_time(1767225600123)
    '2026-01-01T00:00:00.123Z'
    """
    dt = datetime.fromtimestamp(ts_ms / 1000.0, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def to_signal(decision: Decision) -> dict[str, Any]:
    """Return the response-topic record for an emitted signal.

    Raises ``ValueError`` for a decision that emitted no signal (allow, or
    deduplicated).
    """
    if decision.signal_id is None or decision.action is Action.ALLOW:
        raise ValueError("decision emitted no signal")
    e = decision.event
    return {
        "schema": SIGNAL_SCHEMA,
        "signal_id": decision.signal_id,
        "action": decision.action.value,
        "entity": e.entity,
        "entity_kind": e.entity_kind.value,
        "entity_class": e.entity_class.value,
        "session_id": e.session_id,
        "risk": round(decision.risk, 6),
        "reasons": [r.to_dict() for r in decision.reasons],
        "model_version": decision.model_version,
        "event_id": e.event_id,
        "event_time": iso_time(e.ts_ms),
        "event_ts_ms": e.ts_ms,
        "kind": e.kind.value,
    }


def _subject(signal: dict[str, Any]) -> dict[str, Any]:
    entity = {"format": "opaque", "id": signal["entity"]}
    if signal["entity_kind"] == "device":
        key = "device"
    else:
        key = "user"
    if signal.get("session_id"):
        return {
            "format": "complex",
            key: entity,
            "session": {"format": "opaque", "id": signal["session_id"]},
        }
    return {"format": "complex", key: entity}


def to_caep_set(
    signal: dict[str, Any], issuer: str, audience: str | None = None, iat: int | None = None
) -> dict[str, Any]:
    """Return the CAEP Security Event Token payload for a signal record.

    Parameters
    ----------
    signal : a record from :func:`to_signal`
    issuer : the ``iss`` claim (this detector's issuer URL)
    audience : the ``aud`` claim, when known
    iat : issued-at (epoch seconds); defaults to the event time, because the
        pure core never reads the clock. Transports may set the send time.

    Returns
    -------
    dict
        The SET claims, ready to be signed as a JWS.

    Examples
    --------
    >>> sig = {"signal_id": "abc", "action": "revoke", "entity": "ana", "entity_kind": "user",
    ...        "session_id": "s1", "event_ts_ms": 1767225600000, "risk": 1.0,
    ...        "reasons": [{"code": "session_context_change", "text": "x"}]}
    >>> setp = to_caep_set(sig, "https://detector.example")
    >>> list(setp["events"])[0].rsplit("/", 1)[-1], setp["jti"]
    ('session-revoked', 'abc')
    """
    ts_s = int(signal["event_ts_ms"]) // 1000
    codes = ", ".join(r["code"] for r in signal.get("reasons", []))
    if signal["action"] == Action.REVOKE.value:
        events: dict[str, Any] = {
            CAEP_SESSION_REVOKED: {
                "event_timestamp": ts_s,
                "initiating_entity": "policy",
                "reason_admin": {"en": f"risk {signal['risk']:.4f}: {codes}"},
            }
        }
    elif signal["action"] == Action.STEP_UP.value:
        events = {
            CAEP_RISK_LEVEL_CHANGE: {
                "event_timestamp": ts_s,
                "principal": "DEVICE" if signal["entity_kind"] == "device" else "USER",
                "current_level": "HIGH",
                "risk_reason": codes or "anomalous behaviour",
                "initiating_entity": "policy",
            }
        }
    else:
        raise ValueError(f"no CAEP event for action {signal['action']!r}")
    claims: dict[str, Any] = {
        "iss": issuer,
        "iat": ts_s if iat is None else iat,
        "jti": signal["signal_id"],
        "sub_id": _subject(signal),
        "events": events,
    }
    if audience is not None:
        claims["aud"] = audience
    return claims
