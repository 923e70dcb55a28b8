"""Hostile input never crashes and is never lost: fuzzing and the nasty-case corpus.

Every input must end as an accepted event *with a decision* from the real
engine (shipped ``models/default``) or as a :class:`ParseError` with a
documented reason code. Any other exception fails the test.

* Fuzzing (hypothesis): arbitrary bytes, arbitrary JSON text (including what
  a JSON serializer never writes: NaN/Infinity literals, integers > 2**64,
  lone surrogates, duplicate keys, deep nesting), and the four input forms
  (OCSF 3002, OCSF 4001, ECS, native) with several fields mutated at once.
  ``ZT_FUZZ_EXAMPLES`` sets the examples per test (default 200); the tally of
  cases and outcomes is printed at the end of the run.
* The corpus (``tests/hostile_corpus.py``): in process, and through the
  ``detector replay`` CLI, where in = decisions + rejects and every reject
  carries its reason code.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.engine import Detector, EngineState
from detector.events import MAX_EVENT_BYTES, ParseError, parse_event
from detector.model import load_model
from detector.policy import Action
from detector.stream.stages import DEAD_LETTER_RAW_MAX, Source, parse_stage
from tests.conftest import DEFAULT_MODEL, REPO
from tests.hostile_corpus import (
    ACCEPT,
    MAX_TS_MS,
    T0,
    Case,
    all_cases,
    big_cases,
    load_committed,
    small_cases,
)

EXAMPLES: Final = int(os.environ.get("ZT_FUZZ_EXAMPLES", "200"))
#: The documented reason codes of ParseError (detector/events.py).
REASON: Final = re.compile(
    r"not_json|not_object|too_large|unknown_class|missing_entity|bad_time"
    r"|bad_field:[A-Za-z0-9_@.]+"
)
#: Outcomes of every fuzz case of this run: (test, "accept" or reason code prefix) -> count.
TALLY: Counter[tuple[str, str]] = Counter()

DETECTOR: Final = Detector(load_model(DEFAULT_MODEL))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _reason_prefix(reason: str) -> str:
    return reason.split(":", 1)[0]


def outcome(raw: bytes | str, state: EngineState | None = None) -> str:
    """Parse ``raw`` and, if accepted, decide it; return ``accept`` or the reason code.

    Any exception other than a reason-coded ParseError propagates (a failure).
    """
    try:
        event = parse_event(raw)
    except ParseError as exc:
        assert REASON.fullmatch(exc.reason), exc.reason
        return exc.reason
    assert event.entity, "an accepted event always has an entity"
    assert 0 <= event.ts_ms < MAX_TS_MS
    decisions = DETECTOR.process([event], state if state is not None else EngineState())
    assert len(decisions) == 1
    d = decisions[0]
    assert d.action in Action
    assert math.isfinite(d.risk) and 0.0 <= d.risk <= 1.0
    assert math.isfinite(d.score)
    orjson.dumps(d.to_dict())  # the decision record always serialises
    return ACCEPT


def _tally(test: str, result: str) -> None:
    TALLY[(test, ACCEPT if result == ACCEPT else _reason_prefix(result))] += 1


# ------------------------------------------------------------- raw JSON text


class Raw(bytes):
    """JSON text inserted verbatim (what no serializer would write)."""


def dump(value: Any) -> bytes:
    """Serialize ``value`` to JSON text, allowing :class:`Raw` and unbounded ints."""
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, dict):
        return b"{" + b",".join(dump(str(k)) + b":" + dump(v) for k, v in value.items()) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(dump(v) for v in value) + b"]"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    return orjson.dumps(value)


SPECIAL_LITERALS = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"-0",
    b"-0.0",
    b'"\\ud800"',
    b'"\\udfff\\ud800"',
    b'"\\u0000"',
    b'"\\ud83d\\ude00"',
    b"00",
    b"+1",
    b"0x10",
    b"1.",
    b".5",
    b"tru",
    b"nul",
    b"'single'",
    b"[1,]",
    b"{,}",
    b'"a" "b"',
]
huge_ints = st.integers(min_value=2**63 - 2, max_value=2**200) | st.integers(
    min_value=-(2**200), max_value=-(2**63) + 2
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | huge_ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.text(min_size=1020, max_size=1030)  # around MAX_STR_LEN
    | st.sampled_from(
        [
            "",
            " ",
            "3002",
            "4001",
            "auth",
            "network",
            "10.0.0.1",
            "::1",
            "256.1.1.1",
            "DE",
            "us",
            "Admin",
            "service",
            "logon",
            "lateral",
            "success",
            "failure",
            "1970-01-01T00:00:00Z",
            "2099-12-31T23:59:59.999Z",
            "2100-01-01T00:00:00Z",
            "2026-03-02T09:00:00+14:00",
            "2026-02-30T00:00:00Z",
        ]
    )
    | st.sampled_from([0, -1, 1, 3002, 4001, T0, MAX_TS_MS - 1, MAX_TS_MS, 2**31, 65536])
    | st.sampled_from(SPECIAL_LITERALS).map(Raw)
)
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)
deep_junk = st.integers(min_value=1, max_value=1500).map(lambda n: Raw(b"[" * n + b"]" * n))
values = junk | deep_junk

# ---------------------------------------------------------- valid documents

OCSF_AUTH: Final[dict[str, Any]] = {
    "class_uid": 3002,
    "activity_id": 1,
    "time": T0,
    "status_id": 1,
    "status_detail": "ok",
    "is_mfa": True,
    "metadata": {"uid": "o-1", "product": {"name": "Okta"}},
    "user": {"uid": "u-1", "name": "alice", "type": "Admin", "type_id": 2},
    "src_endpoint": {
        "ip": "203.0.113.77",
        "hostname": "h",
        "uid": "d-9",
        "location": {"country": "DE", "city": "Berlin", "lat": 52.5, "long": 13.4},
        "autonomous_system": {"number": 3320, "name": "DTAG"},
    },
    "device": {"uid": "dev-42"},
    "dst_endpoint": {"hostname": "sso", "ip": "10.0.0.5", "port": 443},
    "http_request": {"user_agent": "Mozilla/5.0"},
    "session": {"uid": "s-1"},
    "service": {"name": "okta"},
}
OCSF_NET: Final[dict[str, Any]] = {
    "class_uid": 4001,
    "activity_id": 6,
    "time": T0,
    "direction_id": 2,
    "metadata": {"uid": "n-1"},
    "user": {"uid": "u-1"},
    "src_endpoint": {"ip": "10.0.0.8", "uid": "ws-1", "hostname": "ws-1"},
    "dst_endpoint": {
        "ip": "93.184.216.34",
        "port": 443,
        "hostname": "example.com",
        "location": {"country": "US"},
        "autonomous_system": {"number": 15133},
    },
    "connection_info": {"protocol_name": "TCP", "direction_id": 2},
    "traffic": {"bytes_in": 1000, "bytes_out": 200, "packets_in": 4, "packets_out": 3},
    "duration": 1500,
}
ECS_AUTH: Final[dict[str, Any]] = {
    "@timestamp": "2026-03-02T09:00:00.000Z",
    "event": {
        "id": "e-1",
        "category": ["authentication"],
        "type": ["start"],
        "outcome": "success",
        "action": "user-login",
        "duration": 10_000_000,
    },
    "user": {"id": "u-1", "name": "alice", "roles": ["admin"]},
    "source": {
        "ip": "203.0.113.77",
        "geo": {
            "country_iso_code": "DE",
            "city_name": "Berlin",
            "location": {"lat": 52.5, "lon": 13.4},
        },
        "as": {"number": 3320, "organization": {"name": "DTAG"}},
    },
    "user_agent": {"original": "Mozilla/5.0"},
    "session": {"id": "s-1"},
    "host": {"id": "h-1", "name": "laptop"},
    "service": {"name": "sso"},
}
ECS_NET: Final[dict[str, Any]] = {
    "@timestamp": "2026-03-02T09:00:00Z",
    "event": {"id": "en-1", "category": "network"},
    "host": {"id": "ws-2"},
    "source": {"ip": "10.0.0.8", "bytes": 100, "packets": 2},
    "destination": {"ip": "10.1.0.10", "port": 445, "domain": "files", "bytes": 5000, "packets": 7},
    "network": {"transport": "TCP", "direction": "internal"},
}
NATIVE_AUTH: Final[dict[str, Any]] = {
    "kind": "auth",
    "id": "na-1",
    "ts": T0,
    "user": "ana",
    "user_type": "vendor",
    "activity": "logon",
    "ok": False,
    "mfa": True,
    "ip": "198.51.100.7",
    "country": "US",
    "city": "Chicago",
    "lat": 41.9,
    "lon": -87.6,
    "asn": 7922,
    "as_name": "Comcast",
    "device": "laptop-1",
    "ua": "Mozilla/5.0",
    "service": "mail",
    "session": "s-1",
}
NATIVE_NET: Final[dict[str, Any]] = {
    "kind": "network",
    "id": "nn-1",
    "ts": T0,
    "device": "ws-3",
    "ip": "10.0.0.5",
    "dst_ip": "8.8.8.8",
    "dst_host": "dns",
    "dst_port": 53,
    "dst_country": "US",
    "dst_asn": 15169,
    "direction": "outbound",
    "proto": "UDP",
    "bytes_in": 90,
    "bytes_out": 60,
    "packets_in": 1,
    "packets_out": 1,
    "duration_ms": 3,
}
DOCS: Final = {
    "ocsf_3002": OCSF_AUTH,
    "ocsf_4001": OCSF_NET,
    "ecs_auth": ECS_AUTH,
    "ecs_network": ECS_NET,
    "native_auth": NATIVE_AUTH,
    "native_network": NATIVE_NET,
}


def _paths(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, value in doc.items():
        out.append(prefix + (key,))
        if isinstance(value, dict):
            out.extend(_paths(value, prefix + (key,)))
    return out


PATHS: Final = {name: _paths(doc) for name, doc in DOCS.items()}
_DELETE: Final = object()


def _copy(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _copy(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_copy(v) for v in doc]
    return doc


def mutate(doc: dict[str, Any], path: tuple[str, ...], op: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``doc`` with one field at ``path`` changed by ``op``."""
    out = _copy(doc)
    parent = out
    for key in path[:-1]:
        child = parent.get(key)
        if not isinstance(child, dict):  # an earlier mutation replaced the parent
            return out
        parent = child
    last = path[-1]
    old = parent.get(last)
    if op == "delete":
        parent.pop(last, None)
    elif op == "null":
        parent[last] = None
    elif op == "wrap":
        parent[last] = [old]
    elif op == "stringify":
        parent[last] = dump(old).decode("utf-8", "replace")
    elif op == "negate" and isinstance(old, int | float) and not isinstance(old, bool):
        parent[last] = -old - 1
    else:  # "replace"
        parent[last] = value
    return out


mutation = st.tuples(
    st.sampled_from(["replace", "replace", "delete", "null", "wrap", "stringify", "negate"]),
    values,
)


@st.composite
def mutated_documents(draw: st.DrawFn) -> bytes:
    """A valid document of any form with 1-4 fields mutated, sometimes with duplicate keys."""
    name = draw(st.sampled_from(sorted(DOCS)))
    doc = DOCS[name]
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(PATHS[name]))
        op, value = draw(mutation)
        doc = mutate(doc, path, op, value)
    raw = dump(doc)
    if draw(st.booleans()) and raw.startswith(b"{") and len(raw) > 2:
        # a duplicate top-level key in front: JSON parsers keep the last one
        key = draw(st.sampled_from(sorted({p[0] for p in PATHS[name]})))
        raw = b"{" + dump(key) + b":" + dump(draw(values)) + b"," + raw[1:]
    return raw


# ------------------------------------------------------------------- fuzzing


@FUZZ
@given(st.binary(max_size=512) | st.text(max_size=200))
def test_fuzz_arbitrary_bytes_parse_and_decide(raw: bytes | str) -> None:
    _tally("arbitrary bytes/text", outcome(raw))


@FUZZ
@given(junk)
def test_fuzz_arbitrary_json_text(value: Any) -> None:
    _tally("arbitrary JSON text", outcome(dump(value)))


@FUZZ
@given(mutated_documents())
def test_fuzz_mutated_documents_every_form(raw: bytes) -> None:
    _tally("documents, 1-4 fields mutated", outcome(raw))


@FUZZ
@given(st.sampled_from(sorted(DOCS)), st.data())
def test_fuzz_every_field_of_every_form(name: str, data: st.DataObject) -> None:
    """Each field path of each form, replaced by hostile values (one mutation, all paths)."""
    path = data.draw(st.sampled_from(PATHS[name]))
    op, value = data.draw(mutation)
    _tally("documents, one field mutated", outcome(dump(mutate(DOCS[name], path, op, value))))


@st.composite
def timelines(draw: st.DrawFn) -> list[bytes]:
    """30-60 events of one user at arbitrary times in [1970, 2100), some mutated."""
    n = draw(st.integers(min_value=30, max_value=60))
    anchor = draw(st.sampled_from([0, T0, MAX_TS_MS - 1]))
    spread = draw(st.sampled_from([3_600_000, 86_400_000 * 365, MAX_TS_MS]))
    out = []
    for i in range(n):
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            ts = draw(st.integers(min_value=0, max_value=MAX_TS_MS - 1))  # a far jump
        else:
            ts = min(max(anchor + draw(st.integers(-spread, spread)), 0), MAX_TS_MS - 1)
        doc = {
            **NATIVE_AUTH,
            "id": f"t-{i}",
            "ts": ts,
            "ok": draw(st.booleans()),
            "session": draw(st.sampled_from(["s-1", "s-2", None])),
        }
        out.append(dump(doc))
    return out


@settings(
    max_examples=max(EXAMPLES // 4, 10),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(timelines())
def test_fuzz_time_warps_one_entity(raws: list[bytes]) -> None:
    """One entity's events at arbitrary event times: one at a time and as one batch."""
    state = EngineState()
    one_by_one = [outcome(raw, state) for raw in raws]
    for r in one_by_one:
        _tally("one entity, arbitrary event times", r)
    events = [parse_event(raw) for raw in raws]
    batch = DETECTOR.process(events, EngineState())
    assert len(batch) == len(events)
    assert all(math.isfinite(d.risk) for d in batch)


# -------------------------------------------------------------------- corpus


def test_committed_corpus_is_up_to_date() -> None:
    committed = load_committed()
    assert [c.to_dict() for c in committed] == [c.to_dict() for c in small_cases()], (
        "regenerate with: python -m tests.hostile_corpus"
    )
    assert len({c.name for c in all_cases()}) == len(all_cases())


def test_corpus_covers_the_issue_list() -> None:
    names = " ".join(c.name for c in all_cases())
    for needle in (
        "10MB",
        "10000_deep",
        "nan",
        "infinity",
        "huge_int",
        "invalid_utf8",
        "surrogate",
        "1970",
        "2100",
        "duplicate_id",
        "late_by",
        "empty_user",
        "bom",
        "user_is_number",
    ):
        assert needle in names, needle


def test_corpus_in_process_every_case_has_its_outcome() -> None:
    """All cases, in order, through one engine state: each ends as its expected outcome."""
    state = EngineState()
    got = [outcome(c.raw, state) for c in all_cases()]
    assert got == [c.expect for c in all_cases()]
    assert set(got) - {ACCEPT}, "the corpus must contain rejects"


def test_big_cases_are_big() -> None:
    sizes = {c.name: len(c.raw) for c in big_cases()}
    assert sizes["message_10MB_valid_json"] >= 10 * 1024 * 1024
    assert sizes["size_64KiB_plus_1"] > MAX_EVENT_BYTES >= sizes["size_exactly_64KiB"]


def test_dead_letter_of_a_10MB_message_is_bounded_and_traceable() -> None:
    """A 10 MB reject must not become a 13 MB dead letter (the producer would refuse it)."""
    ten_mb = next(c.raw for c in big_cases() if c.name == "message_10MB_valid_json")
    small = b"{nope"
    _, dead = parse_stage([(ten_mb, Source("in", 0, 1)), (small, Source("in", 0, 2))])
    big_rec, small_rec = (orjson.loads(d.to_bytes()) for d in dead)
    assert big_rec["reason"] == "too_large"
    assert len(dead[0].to_bytes()) < 2 * DEAD_LETTER_RAW_MAX
    kept = base64.b64decode(big_rec["raw_b64"])
    assert len(kept) == DEAD_LETTER_RAW_MAX and ten_mb.startswith(kept)
    assert big_rec["raw_truncated"] is True and big_rec["raw_size"] == len(ten_mb)
    assert big_rec["raw_sha256"] == hashlib.sha256(ten_mb).hexdigest()
    assert base64.b64decode(small_rec["raw_b64"]) == small
    assert small_rec["raw_truncated"] is False and small_rec["raw_size"] == len(small)


def _replay_cli(tmp: Path, cases: list[Case]) -> tuple[dict[str, Any], list[Any], list[Any]]:
    events = tmp / "hostile.jsonl"
    events.write_bytes(b"".join(c.raw + b"\n" for c in cases))
    decisions, rejects = tmp / "decisions.jsonl", tmp / "rejects.jsonl"
    detector = str(Path(sys.executable).with_name("detector"))
    proc = subprocess.run(  # noqa: S603
        [
            detector,
            "replay",
            "--model",
            str(DEFAULT_MODEL),
            "--events",
            str(events),
            "--decisions",
            str(decisions),
            "--rejects",
            str(rejects),
            "--batch-size",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = orjson.loads(proc.stdout)
    return (
        summary,
        [orjson.loads(x) for x in decisions.read_bytes().splitlines()],
        [orjson.loads(x) for x in rejects.read_bytes().splitlines()],
    )


def test_corpus_through_replay_cli_in_equals_decisions_plus_rejects(tmp_path: Path) -> None:
    cases = [c for c in all_cases() if c.line_safe]
    assert len(cases) >= len(all_cases()) - 3  # only multi-line / blank ones are left out
    summary, decisions, rejects = _replay_cli(tmp_path, cases)
    n_accept = sum(c.expect == ACCEPT for c in cases)
    assert summary["lines"] == len(cases) == len(decisions) + len(rejects)
    assert summary["accepted"] == len(decisions) == n_accept
    assert summary["rejected"] == len(rejects)
    want = {i + 1: c.expect for i, c in enumerate(cases) if c.expect != ACCEPT}
    assert {r["line"]: r["reason"] for r in rejects} == want
    assert all(REASON.fullmatch(r["reason"]) for r in rejects)
    assert summary["reject_reasons"] == dict(Counter(want.values()))
    # decisions come in input order; duplicate ids are decided each time
    expected_ids = [parse_event(c.raw).event_id for c in cases if c.expect == ACCEPT]
    assert [d["event_id"] for d in decisions] == expected_ids
    # a reject never carries the raw line, only where it was and why
    for r in rejects:
        assert set(r) == {"source", "line", "reason", "detail"}
        assert len(r["detail"]) < 200


@pytest.mark.parametrize(
    "case", [c for c in small_cases() if not c.line_safe], ids=lambda c: c.name
)
def test_cases_that_are_not_one_jsonl_line_are_still_decided_or_rejected(case: Case) -> None:
    """Blank or multi-line messages cannot be JSONL lines; over Kafka they are messages."""
    assert outcome(case.raw) == case.expect
