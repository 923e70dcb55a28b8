"""The parser's fast paths agree with the careful parsers, value for value and reason for reason.

``parse_event`` runs an inlined fast parser per form and falls back to the
careful, field-by-field parser on any doubt (``detector/events.py``, "fast
paths"). These tests hold the two to each other: every input gives the same
Event (same field values *and* types) or the same reason code and detail with
the fast paths as with the careful parsers alone. They also check that the
fast paths are really taken for ordinary documents (else the comparison would
prove nothing), and the edge handling the fast paths add: string lengths
checked only in long documents, and the bounded IP memo.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import detector.events as events_mod
from detector.events import MAX_STR_LEN, Event, ParseError, parse_event
from detector.generate import GeneratorConfig, write_dataset
from tests.test_hostile import DOCS, PATHS, dump, junk, mutate, mutated_documents, mutation

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@contextmanager
def careful_only() -> Iterator[None]:
    """Within the block, parse_event uses the careful parsers only."""

    def never(*_args: Any) -> None:
        return None

    with (
        mock.patch.object(events_mod, "_fast_ocsf", never),
        mock.patch.object(events_mod, "_fast_ecs", never),
        mock.patch.object(events_mod, "_fast_native", never),
        mock.patch.object(events_mod, "_raw_event", None),  # the compiled raw reader too
    ):
        yield


def _value(v: Any) -> Any:
    """A field value with its exact type, so that 1 != 1.0 != True and -0.0 != 0.0."""
    if isinstance(v, enum.Enum):
        return (type(v).__name__, v.value)
    if type(v) is float:
        return ("float", v.hex() if math.isfinite(v) else repr(v))
    return (type(v).__name__, v)


def outcome(raw: bytes | str) -> Any:
    """The exact outcome of parse_event: every field typed, or (reason, detail)."""
    try:
        ev = parse_event(raw)
    except ParseError as exc:
        return ("reject", exc.reason, exc.detail)
    assert type(ev) is Event
    return ("accept", tuple(_value(v) for v in ev))


def assert_same(raw: bytes | str) -> Any:
    """Assert fast+careful == careful-only for ``raw``; return the outcome."""
    fast = outcome(raw)
    with careful_only():
        careful = outcome(raw)
    assert fast == careful
    return fast


# ------------------------------------------------------------------ property tests


@FUZZ
@given(mutated_documents())
def test_fast_equals_careful_for_mutated_documents(raw: bytes) -> None:
    assert_same(raw)


@FUZZ
@given(st.sampled_from(sorted(DOCS)), st.data())
def test_fast_equals_careful_for_every_field_of_every_form(name: str, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(PATHS[name]))
    op, value = data.draw(mutation)
    assert_same(dump(mutate(DOCS[name], path, op, value)))


@FUZZ
@given(st.sampled_from(sorted(DOCS)), junk)
def test_fast_equals_careful_with_junk_top_level_keys(name: str, value: Any) -> None:
    """Unknown or junk-valued keys next to a valid document."""
    raw = dump({**DOCS[name], "x": value})
    assert_same(raw)
    assert_same(raw.decode("utf-8", "replace"))


@pytest.fixture(scope="module")
def generated_lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    out: Path = tmp_path_factory.mktemp("gen")
    write_dataset(GeneratorConfig(users=30, days=2, seed=5), out)
    return (out / "events.jsonl").read_bytes().splitlines()


def test_fast_equals_careful_on_generated_data(generated_lines: list[bytes]) -> None:
    """The synthetic workforce (OCSF 3002/4001), as sent and without metadata.uid."""
    assert len(generated_lines) > 1000
    for line in generated_lines:
        assert assert_same(line)[0] == "accept"
    for line in generated_lines[:300]:
        doc = orjson.loads(line)
        doc["metadata"].pop("uid")
        assert_same(orjson.dumps(doc))  # the derived content id


# ---------------------------------------------------------- fast paths are taken


FAST = {
    "ocsf_3002": ("_fast_ocsf", "_parse_ocsf"),
    "ocsf_4001": ("_fast_ocsf", "_parse_ocsf"),
    "ecs_auth": ("_fast_ecs", "_parse_ecs"),
    "ecs_network": ("_fast_ecs", "_parse_ecs"),
    "native_auth": ("_fast_native", "_parse_native"),
    "native_network": ("_fast_native", "_parse_native"),
}


@pytest.mark.parametrize("name", sorted(DOCS))
@pytest.mark.parametrize("drop_id", [False, True])
def test_ordinary_documents_never_reach_the_careful_parser(name: str, drop_id: bool) -> None:
    doc = orjson.loads(orjson.dumps(DOCS[name]))
    if drop_id:  # the derived content id is computed on the fast path too
        for holder, key in ((doc.get("metadata"), "uid"), (doc.get("event"), "id"), (doc, "id")):
            if isinstance(holder, dict):
                holder.pop(key, None)
    fast_name, careful_name = FAST[name]
    careful = getattr(events_mod, careful_name)
    raw = orjson.dumps(doc)
    with mock.patch.object(events_mod, careful_name, side_effect=careful) as spy:
        parse_event(raw)
    assert spy.call_count == 0, f"{fast_name} gave up on an ordinary {name} document"
    assert assert_same(raw)[0] == "accept"


def test_unusual_but_valid_shapes_still_accepted() -> None:
    """Values the fast paths hand to the careful helpers: string ASNs, float counters."""
    net = {**DOCS["native_network"], "dst_asn": "15169", "bytes_in": 90.7, "ts": 1.5e12}
    assert assert_same(dump(net))[0] == "accept"
    ev = parse_event(dump(net))
    assert (ev.dst_asn, ev.bytes_in, ev.ts_ms) == (15169, 90, 1_500_000_000_000)
    ocsf = orjson.loads(orjson.dumps(DOCS["ocsf_4001"]))
    ocsf["dst_endpoint"]["autonomous_system"]["number"] = "15133"
    ocsf["traffic"]["bytes_in"] = 1000.9
    ocsf["metadata"]["uid"] = 77
    ev = parse_event(orjson.dumps(ocsf))
    assert (ev.dst_asn, ev.bytes_in, ev.event_id) == (15133, 1000, "77")
    assert_same(orjson.dumps(ocsf))


# ------------------------------------------------------- long documents, long strings

#: (form, dotted path of a string field, reason when it is too long)
LONG_FIELDS = [
    ("ocsf_3002", "src_endpoint.hostname", "bad_field:src_endpoint.hostname"),
    ("ocsf_3002", "user.name", "bad_field:user.name"),
    ("ocsf_3002", "http_request.user_agent", "bad_field:http_request.user_agent"),
    ("ocsf_4001", "connection_info.protocol_name", "bad_field:connection_info.protocol_name"),
    ("ocsf_4001", "metadata.uid", "bad_field:metadata.uid"),
    ("ecs_auth", "user_agent.original", "bad_field:user_agent.original"),
    ("ecs_auth", "event.action", "bad_field:event.action"),
    ("ecs_network", "network.transport", "bad_field:network.transport"),
    ("native_auth", "ua", "bad_field:ua"),
    ("native_auth", "as_name", "bad_field:as_name"),
    ("native_network", "proto", "bad_field:proto"),
]


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(orjson.dumps(doc))
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return out


@pytest.mark.parametrize(("name", "path", "reason"), LONG_FIELDS)
@pytest.mark.parametrize("length", [MAX_STR_LEN - 1, MAX_STR_LEN, MAX_STR_LEN + 1])
def test_string_length_limit_in_long_documents(
    name: str, path: str, reason: str, length: int
) -> None:
    """Long strings make long documents, where the fast paths check every length."""
    raw = orjson.dumps(_set(DOCS[name], path, "x" * length))
    assert len(raw) > events_mod._NO_LONG_STRINGS
    got = assert_same(raw)
    if length > MAX_STR_LEN:
        assert got[:2] == ("reject", reason)
    else:
        assert got[0] == "accept"


@pytest.mark.parametrize("name", sorted(DOCS))
def test_long_document_with_only_short_strings_stays_on_the_fast_path(name: str) -> None:
    raw = orjson.dumps({**DOCS[name], "unmapped": "y" * 3000})
    careful_name = FAST[name][1]
    with mock.patch.object(events_mod, careful_name) as spy:
        parse_event(raw)
    assert spy.call_count == 0
    assert assert_same(raw)[0] == "accept"


def test_short_document_cannot_hold_a_too_long_string() -> None:
    """The premise of skipping length checks: a string of n chars needs n + 2 bytes."""
    smallest = orjson.dumps("x" * (MAX_STR_LEN + 1))
    assert len(smallest) == events_mod._NO_LONG_STRINGS + 1
    # escapes only make the text longer than the string it stands for
    assert len(orjson.dumps("\u00e9" * 10)) > 10 and len(b'"\\u0041"') > 1


# ---------------------------------------------------------------------- IP memo


def test_ip_memo_is_bounded_and_answers_like_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_mod, "_IP_MEMO_MAX", 4)
    memo: dict[str, Any] = {}
    monkeypatch.setattr(events_mod, "_IP_MEMO", memo)
    texts = [f"192.0.2.{i}" for i in range(10)] + ["2001:db8::1", "not-an-ip", "10.0.0.1"]
    for text in texts * 2:
        assert events_mod._ip_info(text) == events_mod._parse_ip(text)
        assert len(memo) <= 4
    assert "not-an-ip" not in memo  # rejects are not remembered
    # and a parse through the fast path sees the same answers
    for text in texts:
        assert_same(dump({**DOCS["native_auth"], "ip": text}))


# ------------------------------------------------------------- ISO times, ECS words


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("1970-01-01T00:00:00", 0),  # naive means UTC
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T01:00:00+01:00", 0),
        ("1969-12-31T23:59:59.999", None),
        ("2099-12-31T23:59:59.999", 4_102_444_799_999),
        ("2099-12-31T23:59:59.999999+00:00", 4_102_444_799_999),
        ("2100-01-01T00:00:00", None),
        ("0001-01-01T00:00:00", None),
        ("0001-01-01T00:00:00+14:00", None),
        ("9999-12-31T23:59:59.999999", None),
        ("9999-12-31T23:59:59-14:00", None),
        ("2026-03-02T09:00:00.0005", 1_772_442_000_000),  # floored to the millisecond
    ],
)
def test_iso_time_bounds_naive_and_aware(ts: str, expected: int | None) -> None:
    for name, key in (("ecs_auth", "@timestamp"), ("native_auth", "ts")):
        got = assert_same(dump(_set(DOCS[name], key, ts)))
        if expected is None:
            assert got[:2] == ("reject", "bad_time")
        else:
            assert (
                got[0] == "accept"
                and parse_event(dump(_set(DOCS[name], key, ts))).ts_ms == expected
            )


@pytest.mark.parametrize(
    ("action", "activity"),
    [
        ("SIGN-IN", 1),
        ("x-signin-y", 1),
        ("sign_in", None),  # not one of the words
        ("log-on", None),
        ("logoff", 2),
        ("LogOut", 2),
        ("signout", 2),
        ("login-then-logout", 1),  # logon words win
    ],
)
def test_ecs_activity_words(action: str, activity: int | None) -> None:
    doc = _set(_set(DOCS["ecs_auth"], "event.action", action), "event.type", ["info"])
    assert assert_same(dump(doc))[0] == "accept"
    assert parse_event(dump(doc)).activity == activity
