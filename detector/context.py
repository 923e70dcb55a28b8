"""Cross-entity context: per source IP and per session id.

Password spray and credential stuffing show up across many users and never
within one, so a per-user baseline cannot see them: :class:`IpContext` keeps
the recent authentication attempts from one source IP. Session and token
replay show up as one session used from two places: :class:`SessionContext`
remembers where a session was opened.

Both are immutable values updated by pure functions with event time. Expiry is
applied when *reading* (by event time), never by a background sweep, so the
result cannot depend on when state happened to be pruned or how events were
batched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from detector.config import DetectorConfig
from detector.events import Event, EventKind

CONTEXT_SCHEMA_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class IpStats:
    """What one source IP did in the window before an event."""

    users: int  # distinct users
    failures: int  # failed logons
    fail_users: int  # distinct users with a failed logon


@dataclass(frozen=True, slots=True)
class IpContext:
    """Recent auth attempts from one source IP: (ts_ms, user, failed), oldest first."""

    recent: tuple[tuple[int, str, bool], ...] = ()

    def stats(self, ts_ms: int, window_s: int) -> IpStats:
        """Return the window's statistics as seen just before ``ts_ms``.

        Examples
        --------
        >>> ctx = IpContext(((0, "a", True), (1000, "b", True), (2000, "b", False)))
        >>> ctx.stats(3000, 60)
        IpStats(users=2, failures=2, fail_users=2)
        """
        horizon = ts_ms - window_s * 1000
        users: set[str] = set()
        fail_users: set[str] = set()
        failures = 0
        for t, user, failed in self.recent:
            if t < horizon or t > ts_ms:
                continue
            users.add(user)
            if failed:
                failures += 1
                fail_users.add(user)
        return IpStats(len(users), failures, len(fail_users))

    def to_dict(self) -> dict[str, Any]:
        """Serialise to a JSON-ready dict with schema version ``v``."""
        return {"v": CONTEXT_SCHEMA_VERSION, "r": [list(r) for r in self.recent]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IpContext:
        """Rebuild from :meth:`to_dict` output; raises ``ValueError`` when malformed."""
        if data.get("v") != CONTEXT_SCHEMA_VERSION:
            raise ValueError(f"unsupported ip context version: {data.get('v')!r}")
        try:
            return cls(tuple((int(t), str(u), bool(f)) for t, u, f in data["r"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed ip context: {type(exc).__name__}") from exc


def update_ip(ctx: IpContext, event: Event, cfg: DetectorConfig) -> IpContext:
    """Return ``ctx`` with the auth ``event`` appended, bounded by window and size.

    Examples
    --------
    >>> from detector.events import parse_event
    >>> e = parse_event(b'{"kind":"auth","ts":1000,"user":"a","ok":false,"ip":"203.0.113.9"}')
    >>> update_ip(IpContext(), e, DetectorConfig()).recent
    ((1000, 'a', True),)
    """
    horizon = event.ts_ms - cfg.ip_window_s * 1000
    kept = [r for r in ctx.recent if r[0] >= horizon]
    kept.append((event.ts_ms, event.entity, event.success is False))
    return IpContext(tuple(kept[-cfg.ip_max_events :]))


@dataclass(frozen=True, slots=True)
class SessionContext:
    """Where and by whom a session was opened."""

    opened_ts: int
    entity: str
    country: str | None = None
    asn: int | None = None
    device: str | None = None
    user_agent: str | None = None
    prefix: str | None = None

    def changes(self, event: Event) -> list[tuple[str, str, str]]:
        """Return the (attribute, opened_with, now) pairs that differ for ``event``.

        Only attributes known on both sides count: a missing field is not a
        change. The source prefix alone is not a change (mobile clients hop
        addresses inside their carrier), the autonomous system is.
        """
        out: list[tuple[str, str, str]] = []
        if event.entity != self.entity:
            out.append(("entity", self.entity, event.entity))
        if self.country and event.src_country and event.src_country != self.country:
            out.append(("country", self.country, event.src_country))
        if self.asn is not None and event.src_asn is not None and event.src_asn != self.asn:
            out.append(("asn", str(self.asn), str(event.src_asn)))
        if self.device and event.device_id and event.device_id != self.device:
            out.append(("device", self.device, event.device_id))
        if self.user_agent and event.user_agent and event.user_agent != self.user_agent:
            out.append(("user_agent", self.user_agent, event.user_agent))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Serialise to a JSON-ready dict with schema version ``v``."""
        return {
            "v": CONTEXT_SCHEMA_VERSION,
            "t": self.opened_ts,
            "e": self.entity,
            "c": self.country,
            "a": self.asn,
            "d": self.device,
            "u": self.user_agent,
            "p": self.prefix,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionContext:
        """Rebuild from :meth:`to_dict` output; raises ``ValueError`` when malformed."""
        if data.get("v") != CONTEXT_SCHEMA_VERSION:
            raise ValueError(f"unsupported session context version: {data.get('v')!r}")
        try:
            return cls(
                opened_ts=int(data["t"]),
                entity=str(data["e"]),
                country=data.get("c"),
                asn=None if data.get("a") is None else int(data["a"]),
                device=data.get("d"),
                user_agent=data.get("u"),
                prefix=data.get("p"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed session context: {type(exc).__name__}") from exc


def session_opener(event: Event) -> SessionContext:
    """Return the context of a session first seen with ``event``."""
    return SessionContext(
        opened_ts=event.ts_ms,
        entity=event.entity,
        country=event.src_country,
        asn=event.src_asn,
        device=event.device_id,
        user_agent=event.user_agent,
        prefix=event.src_prefix,
    )


def session_live(ctx: SessionContext | None, event: Event, cfg: DetectorConfig) -> bool:
    """Return True when ``ctx`` is an unexpired opener for this event's session."""
    if ctx is None:
        return False
    age_ms = event.ts_ms - ctx.opened_ts
    return 0 <= age_ms <= cfg.session_ttl_s * 1000


def tracks_session(event: Event) -> bool:
    """Return True for events whose source describes the session's client.

    Network events carry internal source addresses, so only authentication
    events open or are compared against a session's context.
    """
    return event.kind is EventKind.AUTH and event.session_id is not None
