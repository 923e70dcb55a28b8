from __future__ import annotations

import pytest

from detector.config import DetectorConfig
from detector.context import (
    IpContext,
    SessionContext,
    session_live,
    session_opener,
    tracks_session,
    update_ip,
)
from tests.conftest import START_MS, make_auth, make_net

CFG = DetectorConfig(ip_window_s=600, ip_max_events=16)


def test_ip_window_counts_users_and_failures() -> None:
    ctx = IpContext()
    for i in range(12):
        ctx = update_ip(ctx, make_auth(id=f"e{i}", user=f"u{i % 6}", ok=i % 2 == 0,
                                       ts=START_MS + i * 1000), CFG)
    stats = ctx.stats(START_MS + 12_000, CFG.ip_window_s)
    assert (stats.users, stats.failures, stats.fail_users) == (6, 6, 3)


def test_ip_window_expires_by_event_time_and_is_bounded() -> None:
    ctx = IpContext()
    for i in range(40):
        ctx = update_ip(ctx, make_auth(id=f"e{i}", user=f"u{i}", ok=False,
                                       ts=START_MS + i * 1000), CFG)
    assert len(ctx.recent) == 16
    late = START_MS + 40_000 + 601_000
    assert ctx.stats(late, CFG.ip_window_s).users == 0


def test_ip_context_round_trip_and_refusal() -> None:
    ctx = update_ip(IpContext(), make_auth(ok=False), CFG)
    assert IpContext.from_dict(ctx.to_dict()) == ctx
    with pytest.raises(ValueError):
        IpContext.from_dict({"v": 1, "r": [[1, 2]]})


def test_session_changes() -> None:
    opener = session_opener(make_auth())
    assert opener.changes(make_auth(id="same")) == []
    moved = opener.changes(make_auth(id="x", country="BR", asn=14061, ua="curl/8"))
    assert {c[0] for c in moved} == {"country", "asn", "user_agent"}
    # missing fields are not changes
    assert opener.changes(make_auth(id="y", country=None, asn=None, ua=None)) == []
    assert SessionContext.from_dict(opener.to_dict()) == opener


def test_session_ttl_by_event_time() -> None:
    opener = session_opener(make_auth())
    assert session_live(opener, make_auth(id="a", ts=START_MS + 10 * 3_600_000), CFG)
    assert not session_live(opener, make_auth(id="b", ts=START_MS + 40 * 3_600_000), CFG)
    assert not session_live(None, make_auth(), CFG)


def test_only_auth_events_track_sessions() -> None:
    assert tracks_session(make_auth())
    assert not tracks_session(make_auth(session=None))
    assert not tracks_session(make_net())
