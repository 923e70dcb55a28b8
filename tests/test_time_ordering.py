"""What time skew and ordering the engine tolerates: pins ``docs/time-and-ordering.md``.

Each test names the section of the document it pins. A change of behaviour
must change the document too.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from detector.baseline import EMPTY, decayed
from detector.config import DetectorConfig
from detector.context import IpContext, update_ip
from detector.engine import Decision, Detector, EngineState
from detector.events import Event, parse_event
from detector.features import FEATURE_NAMES
from detector.model import load_model
from detector.policy import Action
from tests.conftest import DEFAULT_MODEL

H = 3_600_000
D = 24 * H
T0 = 1_772_442_000_000  # 2026-03-02T09:00:00Z
LAST_2099 = 4_102_444_800_000 - D  # 2099-12-31T00:00:00Z
IDLE = FEATURE_NAMES.index("days_idle_log")
DET = Detector(load_model(DEFAULT_MODEL))
CFG = DET.cfg


def ev(i: int | str, ts: int, **over: Any) -> Event:
    doc: dict[str, Any] = {
        "kind": "auth",
        "id": f"a{i}",
        "ts": ts,
        "user": "ana",
        "ok": True,
        "country": "US",
        "ip": "198.51.100.7",
        "device": "d1",
        "lat": 41.9,
        "lon": -87.6,
        "asn": 7922,
        "ua": "UA",
        "service": "mail",
        "session": f"s{i}",
    }
    doc.update(over)
    return parse_event(orjson.dumps({k: v for k, v in doc.items() if v is not None}))


def one(e: Event, state: EngineState) -> Decision:
    return DET.process([e], state, keep_features=True)[0]


@pytest.fixture(scope="module")
def history() -> EngineState:
    """20 days of 3 ordinary logons a day (9-11h UTC): 60 events, past cold start."""
    state = EngineState()
    for i in range(60):
        d = one(ev(i, T0 + (i // 3) * D + (i % 3) * H), state)
        assert d.action is Action.ALLOW
    assert not DET.features.is_cold(state.baselines["user:ana"])
    return state


def fork(s: EngineState) -> EngineState:
    # State values are immutable: copying the mappings forks the state.
    return EngineState(dict(s.baselines), dict(s.ips), dict(s.sessions))


LAST = T0 + 19 * D + 2 * H  # the history's last event


# ----------------------------------------------------------- 1. out of order


def test_late_event_is_decided_with_zero_idle_and_keeps_last_ts(history: EngineState) -> None:
    s = fork(history)
    d = one(ev("late", LAST - 5 * H), s)
    assert d.action is Action.ALLOW
    assert d.features is not None and d.features[IDLE] == 0.0  # never negative
    b = s.baselines["user:ana"]
    assert b.last_ts == LAST and b.n_seen == 61


def test_late_event_is_learned_at_its_own_event_time_weight(history: EngineState) -> None:
    """A late event adds the weight it would have had on time (less than a fresh one)."""
    late, fresh = fork(history), fork(history)
    before = history.baselines["user:ana"].hours_total
    one(ev("late", LAST - 3 * D), late)
    one(ev("fresh", LAST + H), fresh)
    added_late = late.baselines["user:ana"].hours_total - before
    added_fresh = fresh.baselines["user:ana"].hours_total - before
    assert 0 < added_late < added_fresh


def test_decisions_follow_arrival_order_not_event_time(history: EngineState) -> None:
    """The engine never sorts: the same events in another arrival order may decide differently,
    but any chunking of one arrival order decides the same (batch == one at a time)."""
    events = [
        ev(f"o{i}", LAST + (3 - i) * H, country=c) for i, c in enumerate(["US", "FR", "US", "FR"])
    ]
    one_by_one = [one(e, s) for s in [fork(history)] for e in events]
    batch = DET.process(events, fork(history), keep_features=True)
    assert [d.to_dict() for d in batch] == [d.to_dict() for d in one_by_one]


# ----------------------------------------------------------- 2. far past


def test_event_in_1970_is_decided_and_teaches_nothing(history: EngineState) -> None:
    s = fork(history)
    b0 = s.baselines["user:ana"]
    d = one(ev("1970", 0), s)
    assert d.action in Action and math.isfinite(d.risk)
    b = s.baselines["user:ana"]
    assert b.first_ts == 0 and b.last_ts == b0.last_ts
    assert b.hours_total == b0.hours_total  # weight 2**(-(t0 - 0)/half-life) rounds to 0
    assert b.t0 == b0.t0
    after = one(ev("after", LAST + D), s)
    assert after.action is Action.ALLOW


def test_decay_factor_far_before_landmark_is_bounded() -> None:
    """Regression: exp() overflowed for events > ~1000 half-lives before the landmark."""
    b = EMPTY._replace(t0=LAST_2099)
    f = b.decay_factor(0, CFG)
    assert math.isfinite(f) and f == pytest.approx(2.0**64 / 1000.0)
    # within the bound the factor is the exact exponential
    assert b.decay_factor(LAST_2099 - int(CFG.profile_half_life_days * D), CFG) == (
        pytest.approx(2.0 / 1000.0)
    )


def test_1970_after_2099_for_one_entity_does_not_crash() -> None:
    """Regression: a learned 2099 event then a 1970 one raised OverflowError in the engine."""
    s = EngineState()
    for i in range(30):
        one(ev(i, LAST_2099 - 30 * H + i * H, user="zed"), s)
    d = one(ev("past", 0, user="zed"), s)
    assert math.isfinite(d.risk)


def test_short_window_counters_never_grow_backwards() -> None:
    assert decayed((4.0, 10 * H), 0, 600.0) == 4.0  # negative elapsed time counts as 0
    assert decayed((4.0, 0), 600_000, 600.0) == 2.0


# ----------------------------------------------------------- 3. far future


def test_event_in_2099_for_an_established_entity_is_flagged_not_learned(
    history: EngineState,
) -> None:
    s = fork(history)
    b0 = s.baselines["user:ana"]
    d = one(ev("2099", LAST_2099), s)
    assert d.action is not Action.ALLOW and d.learn_weight < 1.0
    b = s.baselines["user:ana"]
    assert b.t0 == b0.t0 and b.hours_total == b0.hours_total
    # ...but last_ts is now 2099: later events of this entity look never idle
    assert b.last_ts == LAST_2099
    later = one(ev("later", LAST + 40 * D), s)
    assert later.features is not None and later.features[IDLE] == 0.0


def test_known_limitation_first_learned_event_in_2099_freezes_learning() -> None:
    """A new entity whose first event is far in the future anchors its landmark there:
    later present-day events are learned with weight 0 (see the document's section 3)."""
    s = EngineState()
    first = one(ev("f", LAST_2099, user="bob"), s)
    assert first.cold_start and first.learn_weight == 1.0
    b1 = s.baselines["user:bob"]
    assert b1.t0 == LAST_2099
    for i in range(5):
        one(ev(f"p{i}", T0 + i * H, user="bob"), s)
    b = s.baselines["user:bob"]
    assert b.hours_total == b1.hours_total  # nothing more was learned
    assert b.n_learned == b1.n_learned + 5  # though counted as learned (leaves cold start)


def test_far_future_event_prunes_the_ip_window() -> None:
    cfg = DetectorConfig()
    ctx = IpContext()
    for i in range(3):
        ctx = update_ip(ctx, ev(i, T0 + i * 60_000, user=f"u{i}"), cfg)
    future = update_ip(ctx, ev("f", LAST_2099, user="x"), cfg)
    assert [r[0] for r in future.recent] == [LAST_2099]
    # a present-day event does not count future records in its window
    assert ctx.stats(T0 + 180_000, cfg.ip_window_s).users == 3
    assert future.stats(T0 + 180_000, cfg.ip_window_s).users == 0


# ----------------------------------------------------------- 4. sessions


def test_event_before_a_sessions_opener_reopens_the_session(history: EngineState) -> None:
    s = fork(history)
    one(ev("open", LAST + D, session="S"), s)
    assert s.sessions["S"].opened_ts == LAST + D
    one(ev("earlier", LAST + D - H, session="S", country="FR"), s)
    assert s.sessions["S"].opened_ts == LAST + D - H  # the late event is the new opener
    assert s.sessions["S"].country == "FR"


def test_session_expires_by_event_time(history: EngineState) -> None:
    s = fork(history)
    one(ev("open", LAST + D, session="S2"), s)
    later = LAST + D + CFG.session_ttl_s * 1000 + 1
    d = DET.process([ev("x", later, session="S2", country="FR")], s)[0]
    assert not any(r.code.startswith("session") for r in d.reasons)
    assert s.sessions["S2"].opened_ts == later


# ----------------------------------------------------------- 5. duplicates


def test_duplicate_event_is_a_new_observation_and_its_signal_is_not_repeated(
    history: EngineState,
) -> None:
    s = fork(history)
    e = ev("dup", LAST_2099)  # flagged (see section 3), so it raises a signal
    first = one(e, s)
    second = one(e, s)
    assert first.action is Action.REVOKE and first.signal_id is not None
    # decided again, against the baseline the first copy left (no longer dormant)
    assert second.action is Action.STEP_UP
    # same session, lower or equal level, inside the dedup window: no second signal
    assert second.signal_id is None
    assert s.baselines["user:ana"].n_seen == history.baselines["user:ana"].n_seen + 2
    # redelivered to an engine that had not seen it: the very same signal id
    again = one(e, fork(history))
    assert again.signal_id == first.signal_id


def test_duplicate_allowed_event_is_learned_twice(history: EngineState) -> None:
    s = fork(history)
    e = ev("dup2", LAST + H)
    one(e, s)
    w1 = s.baselines["user:ana"].hours_total
    one(e, s)
    assert s.baselines["user:ana"].hours_total > w1
