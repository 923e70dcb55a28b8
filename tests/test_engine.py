from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.engine import Decision, Detector, EngineState, signal_id_for
from detector.events import Event
from detector.model import load_model
from detector.policy import Action
from tests.conftest import START_MS, make_auth


def _run(det: Detector, events: list[Event], sizes: list[int]) -> list[Decision]:
    state = EngineState()
    out: list[Decision] = []
    i = 0
    k = 0
    while i < len(events):
        n = sizes[k % len(sizes)] if sizes else len(events)
        out.extend(det.process(events[i : i + n], state))
        i += n
        k += 1
    return out


def _key(ds: list[Decision]) -> list[tuple[object, ...]]:
    return [(d.event_id, d.action, d.risk, d.score, d.reasons, d.signal_id, d.learn_weight)
            for d in ds]


@pytest.fixture(scope="module")
def detector(small_model_dir: Path) -> Detector:
    return Detector(load_model(small_model_dir))


@pytest.fixture(scope="module")
def stream(small_events: list[Event]) -> list[Event]:
    # The last two days hold attacks; keep the test quick but eventful.
    return small_events[-3000:]


@pytest.fixture(scope="module")
def sequential(detector: Detector, stream: list[Event]) -> list[Decision]:
    return _run(detector, stream, [1])


def test_one_decision_per_event_in_input_order(detector: Detector, stream: list[Event],
                                               sequential: list[Decision]) -> None:
    assert [d.event_id for d in sequential] == [e.event_id for e in stream]
    assert any(d.action is not Action.ALLOW for d in sequential)


def test_whole_stream_as_one_batch_equals_sequential(detector: Detector, stream: list[Event],
                                                     sequential: list[Decision]) -> None:
    assert _key(_run(detector, stream, [])) == _key(sequential)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=6))
def test_any_chunking_equals_sequential(detector: Detector, stream: list[Event],
                                        sequential: list[Decision], sizes: list[int]) -> None:
    assert _key(_run(detector, stream, sizes)) == _key(sequential)


def test_state_round_trip_between_batches_changes_nothing(
    detector: Detector, stream: list[Event], sequential: list[Decision]
) -> None:
    """A worker serialises state to its changelog after every batch."""
    from detector.baseline import Baseline
    from detector.context import IpContext, SessionContext

    state = EngineState()
    out: list[Decision] = []
    for i in range(0, len(stream), 250):
        out.extend(detector.process(stream[i : i + 250], state))
        state = EngineState(
            {k: Baseline.from_dict(v.to_dict()) for k, v in state.baselines.items()},
            {k: IpContext.from_dict(v.to_dict()) for k, v in state.ips.items()},
            {k: SessionContext.from_dict(v.to_dict()) for k, v in state.sessions.items()},
        )
    assert _key(out) == _key(sequential)


def test_interleaving_other_entities_does_not_change_a_devices_decisions(
    detector: Detector, stream: list[Event]
) -> None:
    # A device has no auth events and so no cross-entity context: its
    # decisions must not depend on anything else in the stream.
    device = next(e.entity_key for e in stream if e.entity_kind.value == "device")
    alone = [e for e in stream if e.entity_key == device]
    mixed = [d for d in _run(detector, stream, [97]) if d.event.entity_key == device]
    assert len(alone) > 5
    assert _key(_run(detector, alone, [1])) == _key(mixed)


def test_revoked_events_are_not_learned(detector: Detector, sequential: list[Decision]) -> None:
    for d in sequential:
        if d.action is Action.REVOKE:
            assert d.learn_weight == 0.0
        if d.action is Action.ALLOW:
            assert d.learn_weight == 1.0


def test_signals_are_deduplicated_per_session(detector: Detector) -> None:
    state = EngineState()
    t = START_MS + 9 * 3_600_000
    events = [make_auth(id="open", ts=t, session="s-9")] + [
        make_auth(id=f"hijack-{i}", ts=t + (i + 1) * 60_000, session="s-9", country="BR",
                  city="Recife", lat=-8.05, lon=-34.9, asn=14061, ip=f"203.0.113.{i + 1}")
        for i in range(5)
    ]
    ds = detector.process(events, state)
    revokes = [d for d in ds if d.action is Action.REVOKE]
    assert len(revokes) == 5
    assert [d.signal_id is not None for d in revokes] == [True, False, False, False, False]
    assert revokes[0].signal_id == signal_id_for(events[1], Action.REVOKE)


def test_empty_batch(detector: Detector) -> None:
    assert detector.process([], EngineState()) == []


def test_decisions_carry_every_field(detector: Detector, sequential: list[Decision]) -> None:
    """The hot path builds Decisions from plain tuples: each must have all the fields."""
    kept = detector.process([sequential[0].event], EngineState(), keep_features=True)
    for d in [*sequential, *kept]:
        assert len(d) == len(Decision._fields)
        assert d.model_version == detector.model.version
    assert kept[0].features is not None
