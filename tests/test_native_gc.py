"""The compiled ``UpdateKernel`` returns baselines the cyclic GC does not track.

The kernel untracks the acyclic containers it builds (``(weight, last_s)``
entries, traffic stats, burst pairs, ``seen`` and its dicts, the ``Baseline``
itself) so that collections stop walking every baseline. Soundness: an object
may be untracked only when everything it holds is atomic or untracked (or the
module's shared ``_NO_MAP``); a result that holds a tracked object, e.g. a
container reused from a baseline Python built, must stay tracked, so that a
cycle through it is still collected. Values stay Python's (``==`` here; the
bit-level differential lives in ``test_native_update.py``).
"""

from __future__ import annotations

import ctypes
import gc
import tempfile
import weakref
from collections import defaultdict
from pathlib import Path
from typing import Any

from detector import baseline as baseline_module
from detector import native
from detector.baseline import EMPTY, Baseline, update
from detector.engine import Detector, EngineState, e_key
from detector.events import Event, parse_event
from detector.generate import GeneratorConfig, write_dataset
from detector.model import load_model
from tests.conftest import DEFAULT_MODEL, make_auth, make_net

# Part of every install: a missing build fails here instead of skipping.
_native = native.load()
assert _native is not None

_NO_MAP: Any = baseline_module._NO_MAP


def _events(users: int, days: int, seed: int) -> list[Event]:
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(GeneratorConfig(users=users, days=days, seed=seed, attacks=True), Path(tmp))
        lines = (Path(tmp) / "events.jsonl").read_bytes().splitlines()
    return [parse_event(line) for line in lines]


def _detector() -> Detector:
    det = Detector(load_model(DEFAULT_MODEL), native=True)
    assert type(det._update).__name__ == "UpdateKernel"
    return det


def tracked_inside(o: Any, path: str = "b") -> list[str]:
    """Return the paths of every GC-tracked container in ``o`` (``o`` included)."""
    if o is _NO_MAP:
        return []
    found = [path] if gc.is_tracked(o) else []
    if isinstance(o, tuple):
        for i, x in enumerate(o):
            found += tracked_inside(x, f"{path}[{i}]")
    elif isinstance(o, dict):
        for k, v in o.items():
            found += tracked_inside(k, f"{path}.key")
            found += tracked_inside(v, f"{path}[{k!r}]")
    return found


def assert_sound(b: Any) -> None:
    """An untracked baseline holds nothing tracked, at any depth."""
    if not gc.is_tracked(b):
        assert tracked_inside(b) == [], tracked_inside(b)


def test_kernel_chain_results_are_untracked_and_equal() -> None:
    """Every result of a kernel-only chain, per entity, is untracked throughout."""
    det = _detector()
    kernel, cfg = det._update, det.cfg
    by_entity: dict[str, list[Event]] = defaultdict(list)
    for e in _events(25, 4, 5):
        by_entity[e_key(e)].append(e)
    n = 0
    for events in by_entity.values():
        b = EMPTY
        for i, e in enumerate(events):
            weight = 0.0 if i % 17 == 16 else 1.0  # the no-learning path too
            got = kernel(b, e, cfg, weight)
            assert got == update(b, e, cfg, weight)
            assert type(got) is Baseline
            assert tracked_inside(got) == [], (i, tracked_inside(got))
            b = got
            n += 1
    assert n > 5000


def test_replay_baselines_untracked_and_sound() -> None:
    """After a native replay, nearly every baseline is untracked, and each untracked one soundly."""
    det = _detector()
    state = EngineState()
    events = _events(30, 4, 7)
    for i in range(0, len(events), 1000):
        det.process(events[i : i + 1000], state)
    tracked = 0
    for b in state.baselines.values():
        assert_sound(b)
        tracked += gc.is_tracked(b)
    # A few may be Python-built last (with_signal's _replace, a fallback);
    # those are tracked by design. The kernel's own results are not.
    assert tracked <= len(state.baselines) // 10, (tracked, len(state.baselines))


def test_python_built_input_is_settled() -> None:
    """Containers reused from a Python-built baseline are untracked once all-atomic."""
    det = _detector()
    cfg = det.cfg
    b = update(update(EMPTY, make_auth(), cfg), make_net(), cfg)
    level = int("1")  # built at run time: a constant tuple would be untracked
    b = b._replace(signals=(("k", level, 5),))
    assert gc.is_tracked(b.seen) and gc.is_tracked(b.signals) and gc.is_tracked(b.signals[0])
    got = det._update(b, make_auth(country="FR"), cfg, 1.0)
    assert got == update(b, make_auth(country="FR"), cfg, 1.0)
    assert tracked_inside(got) == []


def test_tracked_content_keeps_result_tracked() -> None:
    """A result holding a tracked object stays tracked, so a cycle through it is collected."""
    det = _detector()
    cfg = det.cfg

    class Marker:
        pass

    # An unsettleable, tracked object where the kernel only passes it along:
    # in signals, and in a seen dimension the event does not touch.
    holder: list[Any] = [Marker()]
    base = update(EMPTY, make_auth(), cfg)
    for field in ("signals", "seen"):
        value: Any = (("k", 1, 5), holder) if field == "signals" else {
            **base.seen, "port": {"22": holder}}
        b = base._replace(**{field: value})
        got = det._update(b, make_auth(country="FR"), cfg, 1.0)
        assert gc.is_tracked(got), field
        assert_sound(got)
        # A cycle through the result: got -> ... -> holder -> got.
        marker = weakref.ref(holder[0])
        holder.append(got)
        del got, b, value
        holder = [Marker()]
        gc.collect()
        assert marker() is None, f"cycle through {field} was not collected"


def test_assert_sound_catches_a_wrongly_untracked_baseline() -> None:
    """The checker fails on a baseline untracked although it holds a tracked list."""
    b = EMPTY._replace(signals=(["tracked"],))  # type: ignore[arg-type]
    assert gc.is_tracked(b)
    untrack = ctypes.pythonapi.PyObject_GC_UnTrack
    untrack.argtypes = [ctypes.py_object]
    untrack.restype = None
    untrack(b)
    assert not gc.is_tracked(b)
    try:
        assert_sound(b)
    except AssertionError:
        pass
    else:
        raise AssertionError("assert_sound accepted an unsound baseline")
    # Re-track it so the interpreter's bookkeeping is as before.
    track = ctypes.pythonapi.PyObject_GC_Track
    track.argtypes = [ctypes.py_object]
    track.restype = None
    track(b)
    assert gc.is_tracked(b)
