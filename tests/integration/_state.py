"""Read the worker's state back from its changelog, and the replay's state to compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from detector.engine import Detector, EngineState
from detector.events import parse_event
from detector.model import load_model
from tests.integration._stream import MODEL, WorkerProcess, read_topic, wait_all_decided


def changelog_baselines(bootstrap: str, app_id: str) -> dict[str, dict[str, Any]]:
    """Return the last baseline written per entity key, as stored (applied log removed)."""
    # read_topic stops once records stop coming, so the long deadline only
    # costs time when nothing arrives: on a loaded machine the first records
    # once took more than 30 s (a flaky "0 events held" failure).
    records = read_topic(bootstrap, f"{app_id}-baselines-changelog", timeout_s=90)
    out: dict[str, dict[str, Any]] = {}
    for r in records:  # in offset order per partition; a key lives in one partition
        value = orjson.loads(r.value)
        value.pop("_applied", None)
        out[r.key.decode()] = value
    return out


def replay_baselines(events: Path) -> dict[str, dict[str, Any]]:
    """Return every entity's baseline after a replay of ``events`` (one batch, in order)."""
    detector = Detector(load_model(MODEL))
    state = EngineState()
    parsed = [parse_event(line) for line in events.read_bytes().splitlines() if line.strip()]
    detector.process(parsed, state)
    return {k: orjson.loads(orjson.dumps(b.to_dict())) for k, b in state.baselines.items()}


def replay_decisions(events: Path) -> list[dict[str, Any]]:
    """Return the decisions of ``detector replay`` on ``events``, in order, as dicts."""
    from io import BytesIO

    from detector.replay import replay

    out = BytesIO()
    replay(Detector(load_model(MODEL)), [events], out, None)
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def events_seen(baselines: dict[str, dict[str, Any]]) -> int:
    """Return how many events the baselines hold: the sum of every entity's ``n`` (n_seen).

    Every decided event increments its entity's ``n`` by one (learned or not),
    so this equals the number of distinct events decided exactly when none was
    lost from the state and none was applied twice.
    """
    return sum(int(b["n"]) for b in baselines.values())


def wait_all_decided_without_gaps(
    bootstrap: str, topic: str, event_ids: set[str], workers: list[WorkerProcess],
    timeout_s: float = 180.0,
) -> None:
    """Wait until every event is decided; then no running worker may report a skipped offset.

    A message the consumer skipped (issue 3, docs/streaming.md, fixed in
    ``detector/stream/transport.py``) is either lost, which the wait reports,
    or redelivered by an upstream stage, which only the worker's offset
    check (``detector_input_gap_offsets_total``) shows: both fail the test.
    """
    wait_all_decided(bootstrap, topic, event_ids, timeout_s=timeout_s)
    gaps = {w.log_path.name: w.metric("detector_input_gap_offsets_total")
            for w in workers if w.alive()}
    assert not any(gaps.values()), f"offsets skipped before a stage: {gaps}"
