"""Golden end-to-end replay: a fixed stream through models/default gives fixed decisions.

Regenerate with ``python tests/data/make_golden.py`` after an intended change,
and review the decision diff.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson

from detector.cli import main
from tests.conftest import DEFAULT_MODEL, read_jsonl

DATA = Path(__file__).resolve().parent / "data"


def test_golden_replay(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(gzip.decompress((DATA / "golden_events.jsonl.gz").read_bytes()))
    out = tmp_path / "decisions.jsonl"
    rejects = tmp_path / "rejects.jsonl"
    assert main(["replay", "--model", str(DEFAULT_MODEL), "--events", str(events),
                 "--decisions", str(out), "--rejects", str(rejects), "--batch-size", "64"]) == 0
    expected = [
        orjson.loads(line)
        for line in gzip.decompress((DATA / "golden_decisions.jsonl.gz").read_bytes()).splitlines()
    ]
    got = list(read_jsonl(out))
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g == e, g["event_id"]
    actions = {d["action"] for d in got}
    assert actions == {"allow", "step_up", "revoke"}
    assert [r["reason"] for r in read_jsonl(rejects)] == [
        "not_json", "not_object", "bad_time", "missing_entity", "unknown_class"
    ]
