"""The compiled batch loop (``ProcessKernel``) against ``Detector.process``'s Python loop.

The kernel must give the same decisions (every field, same types, the same
objects where the Python loop reuses them) and leave the same ``EngineState``
(baselines in the same insertion order), for any batch size, with and without
feature rows, with contexts computed by ``process`` or passed in by a stream
stage; and whether the detector's other pieces are Python or compiled.
"""

from __future__ import annotations

import gc
import struct
import tempfile
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector import native
from detector.baseline import Baseline
from detector.engine import Decision, Detector, EngineState, combine_context
from detector.events import Event, EventKind
from detector.features import EventContext
from detector.model import Model, load_model
from detector.policy import Action, Verdict
from tests.conftest import DEFAULT_MODEL, START_MS, make_auth, make_net
from tests.test_engine import _key, _run

# Part of every install: a missing build fails here, not silently.
_mod = native.load()


def _kernel_only(model: Model) -> Detector:
    """A pure-Python detector whose batch loop alone is the compiled one."""
    det = Detector(model, native=False)
    assert _mod is not None
    det._process_kernel = native.process_kernel(_mod, det)
    assert det._process_kernel is not None
    return det


def _all_native(model: Model) -> Detector:
    """A detector with every compiled piece this build has, the loop included."""
    det = Detector(model, native=True)
    assert det._process_kernel is not None
    return det


_BUILDS: dict[str, Callable[[Model], Detector]] = {
    "loop": _kernel_only,
    "all": _all_native,
}


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def stream() -> list[Event]:
    """3,175 generated events with attacks: 112 non-allow decisions, and at
    every batch size here events of an entity after its non-allow decision in
    the same batch (the recompute path; asserted below)."""
    from detector.events import parse_event
    from detector.generate import GeneratorConfig, write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(GeneratorConfig(users=24, days=3, seed=29, attacks=True), Path(tmp))
        lines = (Path(tmp) / "events.jsonl").read_bytes().splitlines()
    return [parse_event(line) for line in lines[3000:]]


def _process(
    det: Detector,
    events: Sequence[Event],
    size: int,
    keep: bool = False,
    passed: bool = False,
) -> tuple[list[Decision], EngineState]:
    """Run ``events`` in batches of ``size``; with ``passed``, the contexts come
    from separate IP and session tables, as the stream stages compute them."""
    state = EngineState()
    ips: dict[str, Any] = {}
    sessions: dict[str, Any] = {}
    out: list[Decision] = []
    for i in range(0, len(events), size):
        batch = events[i : i + size]
        if passed:
            contexts = combine_context(
                det.ip_stats(batch, ips), det.session_changes(batch, sessions)
            )
            out.extend(det.process(batch, state, keep_features=keep, contexts=contexts))
        else:
            out.extend(det.process(batch, state, keep_features=keep))
    if passed:
        state.ips, state.sessions = ips, sessions
    return out, state


_reference: dict[int, tuple[list[Decision], EngineState]] = {}


def _python(model: Model, stream: list[Event], size: int) -> tuple[list[Decision], EngineState]:
    if size not in _reference:
        _reference[size] = _process(Detector(model, native=False), stream, size, keep=True)
    return _reference[size]


def _bits(x: object) -> object:
    return struct.pack("<d", x) if type(x) is float else x


def _fields(d: Decision, keep: bool) -> tuple[object, ...]:
    """Every field of a decision, floats by their bits, with their types."""
    return (
        d.event,
        d.action,
        _bits(d.risk),
        _bits(d.model_risk),
        _bits(d.score),
        d.reasons,
        d.cold_start,
        _bits(d.learn_weight),
        d.signal_id,
        d.model_version,
        [_bits(v) for v in d.features] if keep and d.features is not None else d.features,
        tuple(type(v).__name__ for v in d),
    )


def _assert_same(
    got: tuple[list[Decision], EngineState],
    want: tuple[list[Decision], EngineState],
    keep: bool,
) -> None:
    ds, state = got
    ref, ref_state = want
    assert all(type(d) is Decision and len(d) == len(Decision._fields) for d in ds)
    assert [d.to_dict() for d in ds] == [d.to_dict() for d in ref]
    if not keep:
        assert all(d.features is None for d in ds)
        ref = [d._replace(features=None) for d in ref]
    assert [_fields(d, keep) for d in ds] == [_fields(d, keep) for d in ref]
    # Same entities in the same insertion order (serialised state follows it).
    assert list(state.baselines) == list(ref_state.baselines)
    assert {k: v.to_dict() for k, v in state.baselines.items()} == {
        k: v.to_dict() for k, v in ref_state.baselines.items()
    }
    assert {k: v.to_dict() for k, v in state.ips.items()} == {
        k: v.to_dict() for k, v in ref_state.ips.items()
    }
    assert {k: v.to_dict() for k, v in state.sessions.items()} == {
        k: v.to_dict() for k, v in ref_state.sessions.items()
    }


def test_module_has_the_loop(model: Model) -> None:
    assert _mod is not None
    assert hasattr(_mod, "ProcessKernel")
    assert Detector(model)._process_kernel is not None
    assert Detector(model, native=False)._process_kernel is None


@pytest.mark.parametrize("size", [1, 3, 64, 1000])
def test_stream_exercises_the_recompute_path(
    model: Model, stream: list[Event], size: int
) -> None:
    """Guard on the data: later events of an entity after its non-allow
    decision in the same batch (else the tests below prove little)."""
    ds, _ = _python(model, stream, size)
    recomputed = 0
    for start in range(0, len(stream), size):
        diverged: set[str] = set()
        for j in range(start, min(start + size, len(stream))):
            key = stream[j].entity_key
            recomputed += key in diverged
            if ds[j].action is not Action.ALLOW:
                diverged.add(key)
    assert sum(d.action is not Action.ALLOW for d in ds) > 50
    assert sum(d.signal_id is not None for d in ds) > 10
    assert recomputed > (5 if size > 1 else -1)


@pytest.mark.parametrize("build", sorted(_BUILDS))
@pytest.mark.parametrize("size", [1, 3, 64, 1000])
@pytest.mark.parametrize("keep,passed", [(False, False), (True, False), (False, True)])
def test_same_decisions_and_state_as_python(
    model: Model, stream: list[Event], build: str, size: int, keep: bool, passed: bool
) -> None:
    det = _BUILDS[build](model)
    got = _process(det, stream, size, keep=keep, passed=passed)
    _assert_same(got, _python(model, stream, size), keep)


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=6))
def test_any_chunking_equals_python_sequential(
    model: Model, stream: list[Event], sizes: list[int]
) -> None:
    """tests/test_engine.py's chunking property, on the compiled loop."""
    sequential, _ = _python(model, stream, 1)
    assert _key(_run(_kernel_only(model), stream, sizes)) == _key(sequential)


# --------------------------------------------- generated sequences: few entities, many anomalies

_USERS = ["ana", "bob", "svc-backup"]
_PLACES = [
    ("US", "Chicago", 41.88, -87.63, 7922, "198.51.100.7"),
    ("BR", "Recife", -8.05, -34.9, 14061, "203.0.113.9"),
    ("RU", "Moscow", 55.75, 37.62, 12389, "203.0.113.77"),
]


@st.composite
def _events(draw: st.DrawFn) -> list[Event]:
    n = draw(st.integers(min_value=1, max_value=40))
    ts = START_MS + 9 * 3_600_000
    out = []
    for i in range(n):
        ts += draw(st.sampled_from([0, 1_000, 60_000, 3_600_000, 5 * 86_400_000]))
        user = draw(st.sampled_from(_USERS))
        if draw(st.booleans()):
            country, city, lat, lon, asn, ip = draw(st.sampled_from(_PLACES))
            out.append(make_auth(
                id=f"a{i}", ts=ts, user=user, ok=draw(st.booleans()), country=country,
                city=city, lat=lat, lon=lon, asn=asn, ip=ip,
                session=draw(st.sampled_from(["s-1", "s-2", None])),
                device=draw(st.sampled_from(["laptop-1", "kiosk-9", None])),
            ))
        else:
            out.append(make_net(
                id=f"n{i}", ts=ts, user=user,
                dst_port=draw(st.sampled_from([445, 22, 3389, 8443])),
                dst_host=draw(st.sampled_from(["files-1", "db-7", "x.example"])),
                bytes_out=draw(st.sampled_from([20_000, 10**9, 0])),
            ))
    return out


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_events(), st.integers(min_value=1, max_value=12), st.booleans())
def test_generated_sequences(
    model: Model, events: list[Event], size: int, keep: bool
) -> None:
    want = _process(Detector(model, native=False), events, size, keep=True)
    _assert_same(_process(_kernel_only(model), events, size, keep=keep), want, keep)


# ------------------------------------------------------------- objects, odd input, errors


def test_decisions_reuse_the_pieces_objects(model: Model, stream: list[Event]) -> None:
    """The row list (keep_features) and the verdict's reasons are the very
    objects the pieces returned, as in the Python loop."""
    det = Detector(model, native=False)
    rows: dict[str, list[list[float]]] = {}
    verdicts: dict[str, list[Verdict]] = {}
    extract, verdict = det._extract, det._verdict

    def recording_extract(e: Event, b: Baseline, ctx: EventContext) -> list[float]:
        row = extract(e, b, ctx)
        rows.setdefault(e.event_id, []).append(row)
        return row

    def recording_verdict(e: Event, *args: Any) -> Verdict:
        v = verdict(e, *args)
        verdicts.setdefault(e.event_id, []).append(v)
        return v

    det._extract, det._verdict = recording_extract, recording_verdict
    assert _mod is not None
    det._process_kernel = native.process_kernel(_mod, det)
    ds = det.process(stream[:1000], EngineState(), keep_features=True)
    assert sum(d.action is not Action.ALLOW for d in ds) > 0
    for e, d in zip(stream, ds, strict=False):
        assert d.event is e
        assert d.features is rows[d.event_id][-1]
        assert d.reasons is verdicts[d.event_id][-1].reasons


def test_odd_input_takes_the_python_loop(model: Model, stream: list[Event]) -> None:
    """Baselines that are not a plain dict, events that are not exactly
    ``Event``: the kernel declines (None) and process runs Python's loop."""

    class Baselines(dict[str, Baseline]):
        pass

    class SubEvent(Event):
        pass

    batch = stream[:200]
    det = _kernel_only(model)
    ctx = [EventContext()] * len(batch)
    assert det._process_kernel(batch, EngineState(Baselines()), False, ctx) is None
    odd = [SubEvent(*e) for e in batch]
    assert det._process_kernel(odd, EngineState(), False, ctx) is None
    assert det._process_kernel([], EngineState(), False, []) == []
    ref = Detector(model, native=False)
    for events, state, ref_state in [
        (batch, EngineState(Baselines()), EngineState(Baselines())),
        (odd, EngineState(), EngineState()),
        (tuple(batch), EngineState(), EngineState()),
    ]:
        got = det.process(events, state)
        want = ref.process(events, ref_state)
        assert [d.to_dict() for d in got] == [d.to_dict() for d in want]
        assert {k: v.to_dict() for k, v in state.baselines.items()} == {
            k: v.to_dict() for k, v in ref_state.baselines.items()
        }


def _raised(det: Detector, events: list[Event], state: EngineState) -> tuple[type, str]:
    with pytest.raises(Exception) as info:
        det.process(events, state)
    return type(info.value), str(info.value)


def test_same_errors_and_state_left_alone(model: Model, stream: list[Event]) -> None:
    good = stream[:50]
    bad = good[:10] + [good[10]._replace(entity=None)] + good[11:]
    outs = []
    for det in (Detector(model, native=False), _kernel_only(model)):
        state = EngineState()
        det.process(good[:5], state)
        before = dict(state.baselines)
        outs.append(_raised(det, bad, state))
        assert state.baselines == before  # nothing learned from a failed batch
    assert outs[0] == outs[1] and outs[0][0] is TypeError


@pytest.mark.parametrize("cut", ["short_scores", "long_risks", "not_a_pair"])
def test_a_scorers_bad_output_raises_like_python(
    model: Model, stream: list[Event], cut: str
) -> None:
    def broken(score: Callable[[list[list[float]]], Any]) -> Callable[[list[list[float]]], Any]:
        def run(rows: list[list[float]]) -> Any:
            sc, rk = score(rows)
            if cut == "short_scores":
                return list(sc)[:-1], rk
            if cut == "long_risks":
                return sc, [*rk, 0.5]
            return (sc,)
        return run

    outs = []
    for det in (Detector(model, native=False), Detector(model, native=False)):
        det._scorers = {k: broken(f) for k, f in det._scorers.items()}
        outs.append(det)
    assert _mod is not None
    outs[1]._process_kernel = native.process_kernel(_mod, outs[1])
    errors = [_raised(det, stream[:100], EngineState()) for det in outs]
    assert errors[0] == errors[1] and errors[0][0] is ValueError


def test_a_missing_scorer_raises_like_python(model: Model) -> None:
    """A scorer table without the kind: KeyError from both loops."""
    events = [make_auth(id=f"h{i}", ts=START_MS + i * 60_000, session="s-9",
                        country="BR" if i else "US", ip=f"203.0.113.{i + 1}") for i in range(4)]
    outs = []
    for det in (Detector(model, native=False), Detector(model, native=False)):
        det._scorers = {EventKind.AUTH: det._scorers[EventKind.AUTH]}
        outs.append(det)
    assert _mod is not None
    outs[1]._process_kernel = native.process_kernel(_mod, outs[1])
    results = [[d.to_dict() for d in det.process(events, EngineState())] for det in outs]
    assert results[0] == results[1]
    nets = [make_net(id="n1"), make_net(id="n2")]
    errors = [_raised(det, nets, EngineState()) for det in outs]
    assert errors[0] == errors[1] and errors[0][0] is KeyError


def test_detector_with_the_kernel_is_collected(model: Model) -> None:
    """The kernel holds bound methods of its detector: a cycle the GC must see."""
    det = _kernel_only(model)
    det.process([make_auth()], EngineState())
    ref = weakref.ref(det)
    del det
    gc.collect()
    assert ref() is None


def test_decisions_through_new_decision_when_the_type_is_not_tuple_shaped(
    model: Model, stream: list[Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel fills Decision tuples itself only for a tuple-shaped type;
    otherwise it calls ``_new_decision`` like the Python loop."""
    import detector.engine as engine

    class WithDict(tuple):  # type: ignore[type-arg]  # a __dict__: not tuple-shaped
        _fields = Decision._fields

    monkeypatch.setattr(engine, "Decision", WithDict)
    det = _kernel_only(model)
    monkeypatch.undo()
    want = _process(Detector(model, native=False), stream[:600], 64, keep=True)
    _assert_same(_process(det, stream[:600], 64, keep=True), want, True)
