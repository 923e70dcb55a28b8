"""``event_batches``: the replay CLI's chunked way in equals line-by-line parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.generate import GeneratorConfig, write_dataset
from detector.replay import Reject, batched_events, event_batches, iter_lines, parse_lines
from tests.test_native_parse import typed

BAD = [b"not json", b"[1, 2]", b'{"class_uid": 1001, "time": 1}',
       b'{"kind": "auth", "ts": 1767225600000}', b"x" * 70_000, b"\xff\xfe not utf-8"]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mixed")
    write_dataset(GeneratorConfig(users=8, days=2, seed=5), out)
    lines = (out / "events.jsonl").read_bytes().splitlines()[:900]
    body = []
    for i, line in enumerate(lines):
        body.append(line)
        if i % 97 == 0:
            body.append(BAD[(i // 97) % len(BAD)])
        if i % 211 == 0:
            body.append(b"   ")  # blank: skipped, not a line of data
    path = out / "mixed.jsonl"
    path.write_bytes(b"\n".join(body) + b"\n")
    return path


@pytest.mark.parametrize("size", [1, 7, 100, 5000])
def test_same_events_and_rejects_as_line_by_line(mixed: Path, size: int) -> None:
    want_rejects: list[Reject] = []
    want = [e for b in batched_events(parse_lines(iter_lines([mixed])), size,
                                      want_rejects.append) for e in b]
    rejects: list[Reject] = []
    chunks: list[int] = []
    batches = list(event_batches(iter_lines([mixed]), size, rejects.append, chunks.append))
    got = [e for b in batches for e in b]
    assert [typed(e) for e in got] == [typed(e) for e in want]
    assert rejects == want_rejects and len(rejects) >= 9
    assert all(0 < len(b) <= size for b in batches)
    assert sum(chunks) == len(got) + len(rejects)  # every line of data, once
    assert all(c <= size for c in chunks)
