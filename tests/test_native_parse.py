"""The compiled parser fast path equals the Python one, value for value and type for type.

``detector._native.ParseKernels`` (``native/src/parse.rs``) is a drop-in for
``detector.events._fast_ocsf``: for every document it returns the Event the
Python fast path returns (same field values, same types, the very enum
members, the same float bits), or None when it has any doubt, and then
``parse_event`` runs the careful Python parser. These tests hold it to that:

* kernel level: the kernel against ``events._py_fast_ocsf`` (the Python
  specification) on every line of a generated dataset (attacks on), with and
  without ``metadata.uid``, and on hypothesis documents (mutated valid
  documents, typed field values around every limit, long documents);
* ``parse_event`` level: with the kernel and with ``use_native_parser(False)``
  (pure Python), the same outcome (Event or reason code and detail) for the
  same inputs, including the hostile corpus;
* coverage: how often the kernel returns None on ordinary data (it must not,
  else it proves nothing and gains nothing).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import detector.events as events_mod
from detector import native
from detector.events import (
    MAX_STR_LEN,
    MAX_TS_MS,
    EntityClass,
    EntityKind,
    Event,
    EventKind,
    ParseError,
    parse_event,
)
from detector.generate import GeneratorConfig, write_dataset
from tests.hostile_corpus import all_cases
from tests.test_hostile import DOCS, PATHS, dump, junk, mutate, mutated_documents, mutation

# Part of every install (pip builds it): a missing build fails here, not silently.
_native = native.load()

FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
OCSF_FORMS = ("ocsf_3002", "ocsf_4001")


def test_module_is_built_and_the_kernel_is_in_use() -> None:
    assert _native is not None
    assert events_mod._fast_ocsf is not events_mod._py_fast_ocsf
    assert events_mod._fast_native is not events_mod._py_fast_native
    assert events_mod.use_native_parser(True)


@contextmanager
def python_only() -> Iterator[None]:
    """Within the block, parse_event runs the Python fast paths (native off)."""
    events_mod.use_native_parser(False)
    try:
        assert events_mod._fast_ocsf is events_mod._py_fast_ocsf
        assert events_mod._fast_native is events_mod._py_fast_native
        yield
    finally:
        assert events_mod.use_native_parser(True)


def _value(v: Any) -> Any:
    """A field value with its exact type (1 != 1.0 != True, -0.0 != 0.0, enum members by id)."""
    if isinstance(v, enum.Enum):
        return (type(v).__name__, v.value, id(v))
    if type(v) is float:
        return ("float", v.hex() if math.isfinite(v) else repr(v))
    return (type(v).__name__, v)


def typed(ev: Any) -> Any:
    """An Event as its exact type and typed field values (None stays None)."""
    if ev is None:
        return None
    return (type(ev), tuple(_value(v) for v in ev))


def outcome(raw: bytes | str) -> Any:
    """The exact outcome of parse_event: every field typed, or (reason, detail)."""
    try:
        ev = parse_event(raw)
    except ParseError as exc:
        return ("reject", exc.reason, exc.detail)
    return ("accept", typed(ev))


def assert_same_parse(raw: bytes | str) -> Any:
    """parse_event with the kernel == parse_event in pure Python; return the outcome."""
    got = outcome(raw)
    with python_only():
        want = outcome(raw)
    assert got == want
    return got


def kernel_vs_python(doc: dict[str, Any], raw: bytes, is_auth: bool | EventKind) -> Any:
    """Compare the kernel with the Python fast path on one decoded document.

    The kernel may return None where Python returns an Event or raises (it is
    only slower then); when it returns an Event, Python must return the very
    same. Returns the kernel's result.
    """
    if isinstance(is_auth, EventKind):  # the native form: its kind
        got = events_mod._fast_native(doc, raw, is_auth)
        python: Any = events_mod._py_fast_native
    else:
        got = events_mod._fast_ocsf(doc, raw, is_auth)
        python = events_mod._py_fast_ocsf
    try:
        want = python(doc, raw, is_auth)
    except ParseError:
        want = ParseError
    if got is not None:
        assert want is not ParseError, "the kernel accepted what the Python fast path rejects"
        assert typed(got) == typed(want)
    return got


def check_raw(raw: bytes) -> None:
    """Both comparisons for one raw document (kernel level for OCSF and native forms)."""
    assert_same_parse(raw)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    if type(doc) is not dict:
        return
    if type(doc.get("class_uid")) is int and doc["class_uid"] in (3002, 4001):
        kernel_vs_python(doc, raw, doc["class_uid"] == 3002)
    elif type(doc.get("kind")) is str and doc["kind"] in ("auth", "network"):
        kernel_vs_python(doc, raw, EventKind(doc["kind"]))


# ------------------------------------------------------------ the comparison can fail


def test_the_comparison_sees_type_enum_and_float_bit_differences() -> None:
    ev = parse_event(dump(DOCS["ocsf_3002"]))
    assert typed(ev) == typed(ev._replace())
    assert typed(ev) != typed(ev._replace(ts_ms=float(ev.ts_ms)))
    assert typed(ev) != typed(ev._replace(src_lat=-0.0)) != typed(ev._replace(src_lat=0.0))
    assert typed(ev) != typed(ev._replace(entity_kind="user"))  # equal str, not the member
    assert typed(ev) != typed(tuple(ev))  # a plain tuple is not an Event


# ------------------------------------------------------------------ generated data


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    out: Path = tmp_path_factory.mktemp("gen")
    write_dataset(GeneratorConfig(users=40, days=3, seed=11, attacks=True), out)
    return (out / "events.jsonl").read_bytes().splitlines()


def test_kernel_equals_python_on_every_generated_line(generated: list[bytes]) -> None:
    """Every line, as sent and without metadata.uid: equal, and the kernel never gives up."""
    assert len(generated) > 5000
    nones = 0
    for i, raw in enumerate(generated):
        doc = orjson.loads(raw)
        is_auth = doc["class_uid"] == 3002
        ev = kernel_vs_python(doc, raw, is_auth)
        nones += ev is None
        assert ev is not None and ev == parse_event(raw)
        if i % 7 == 0:  # the derived content id (sha256 of the document)
            doc["metadata"].pop("uid")
            raw2 = orjson.dumps(doc)
            nones += kernel_vs_python(doc, raw2, is_auth) is None
            assert_same_parse(raw2)
    assert nones == 0, f"the kernel gave up on {nones} generated documents"


def test_parse_event_equal_with_and_without_kernel_on_generated_data(
    generated: list[bytes],
) -> None:
    native_events = [outcome(raw) for raw in generated]
    with python_only():
        python_events = [outcome(raw) for raw in generated]
    assert native_events == python_events
    assert all(o[0] == "accept" for o in native_events)


# ------------------------------------------------------------------ hostile corpus


def test_hostile_corpus_same_events_and_reasons() -> None:
    cases = all_cases()
    got = [outcome(case.raw) for case in cases]
    with python_only():
        want = [outcome(case.raw) for case in cases]
    assert got == want
    for case, o in zip(cases, got, strict=True):  # and the corpus' own expectations
        assert (o[0] if o[0] == "accept" else o[1]) == case.expect, case.name


# ------------------------------------------------------------------ property tests


@FUZZ
@given(mutated_documents())
def test_mutated_documents(raw: bytes) -> None:
    check_raw(raw)


@FUZZ
@given(st.sampled_from(OCSF_FORMS), st.data())
def test_every_field_of_ocsf_mutated(name: str, data: st.DataObject) -> None:
    doc = DOCS[name]
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        path = data.draw(st.sampled_from(PATHS[name]))
        op, value = data.draw(mutation)
        doc = mutate(doc, path, op, value)
    check_raw(dump(doc))


EDGE_INTS = [0, 1, 2, 3, 99, -1, 65535, 65536, 2**31 - 1, 2**31, 4_294_967_295, 4_294_967_296]
EDGE_INTS += [2**63 - 1, 2**63, 2**64 - 1, MAX_TS_MS - 1, MAX_TS_MS, 1_772_442_000_000]
EDGE_FLOATS = [-0.0, 0.0, 90.0, -90.0, 90.00000000000001, 180.0, -180.0, 0.5, 1e19]
EDGE_FLOATS += [9.223372036854775e18, 9.223372036854776e18, MAX_TS_MS - 0.5, 1.5e12]
#: Countries, protocols, user types (ASCII and Unicode case mappings), IPs, digit strings.
EDGE_STRS = ["", "US", "us", "USA", "\u00c9U", "TCP", "Udp", "ADMIN", "Service", "third-party"]
EDGE_STRS += ["Vendor", "ADM\u0130N", "\u212aelvin", "\u017fervice", "10.0.0.1", "2001:db8::1"]
EDGE_STRS += ["100.64.0.1", "::ffff:10.0.0.1", "fe80::1%eth0", "999.1.1.1", "15169"]

#: Values around every limit the fast path checks, of every JSON type.
edge_values = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(EDGE_INTS),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(EDGE_FLOATS),
    st.sampled_from(EDGE_STRS),
    st.text(max_size=12),
    st.integers(min_value=MAX_STR_LEN - 2, max_value=MAX_STR_LEN + 2).map(lambda n: "\u00e9" * n),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["uid", "name", "x"]), st.text(max_size=3), max_size=2),
)

#: Every field the OCSF fast path reads, by form.
OCSF_FIELDS = [
    ("time",), ("metadata",), ("metadata", "uid"), ("src_endpoint",), ("src_endpoint", "ip"),
    ("src_endpoint", "uid"), ("src_endpoint", "hostname"), ("src_endpoint", "location"),
    ("src_endpoint", "location", "country"), ("src_endpoint", "location", "city"),
    ("src_endpoint", "location", "lat"), ("src_endpoint", "location", "long"),
    ("src_endpoint", "autonomous_system"), ("src_endpoint", "autonomous_system", "number"),
    ("src_endpoint", "autonomous_system", "name"), ("device",), ("device", "uid"),
    ("dst_endpoint",), ("dst_endpoint", "ip"), ("dst_endpoint", "hostname"),
    ("dst_endpoint", "port"), ("dst_endpoint", "location", "country"),
    ("dst_endpoint", "autonomous_system", "number"), ("user",), ("user", "uid"),
    ("user", "name"), ("user", "email_addr"), ("user", "type"), ("user", "type_id"),
    ("status_id",), ("status_detail",), ("is_mfa",), ("service",), ("service", "name"),
    ("actor",), ("actor", "user"), ("actor", "user", "uid"), ("actor", "user", "name"),
    ("actor", "user", "type"), ("actor", "user", "type_id"), ("actor", "session", "uid"),
    ("connection_info",), ("connection_info", "protocol_name"),
    ("connection_info", "direction_id"), ("traffic",), ("traffic", "bytes_in"),
    ("traffic", "bytes_out"), ("traffic", "packets_in"), ("traffic", "packets_out"),
    ("duration",), ("session",), ("session", "uid"), ("activity_id",), ("http_request",),
    ("http_request", "user_agent"),
]  # fmt: skip


def _put(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = doc
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


@st.composite
def ocsf_documents(draw: st.DrawFn) -> bytes:
    """A valid OCSF document (of either class) with 1-6 fields set to edge values."""
    name = draw(st.sampled_from(OCSF_FORMS))
    doc = orjson.loads(orjson.dumps(DOCS[name]))
    if name == "ocsf_4001" and draw(st.booleans()):
        doc["actor"] = {"user": doc.pop("user"), "session": {"uid": "as-1"}}
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        path = draw(st.sampled_from(OCSF_FIELDS))
        if draw(st.integers(min_value=0, max_value=5)) == 0:
            doc = mutate(doc, path, "delete", None)
        else:
            _put(doc, path, draw(edge_values))
    if draw(st.booleans()):  # a long document: string lengths are checked there
        doc["unmapped"] = "y" * draw(st.sampled_from([1000, 3000]))
    return dump(doc)


@FUZZ
@given(ocsf_documents())
def test_ocsf_documents_with_edge_values(raw: bytes) -> None:
    check_raw(raw)


@FUZZ
@given(st.sampled_from(OCSF_FORMS), junk)
def test_junk_top_level_keys(name: str, value: Any) -> None:
    check_raw(dump({**DOCS[name], "x": value}))


# -------------------------------------------------------------------- specifics


@pytest.mark.parametrize("name", OCSF_FORMS)
def test_events_are_real_events_with_the_very_enum_members(name: str) -> None:
    raw = dump(DOCS[name])
    doc = orjson.loads(raw)
    ev = events_mod._fast_ocsf(doc, raw, name == "ocsf_3002")
    assert type(ev) is Event and len(ev) == len(Event._fields)
    assert ev.kind is (EventKind.AUTH if name == "ocsf_3002" else EventKind.NETWORK)
    # OCSF_NET carries no actor.user: its entity is the source device
    assert ev.entity_kind is (EntityKind.USER if name == "ocsf_3002" else EntityKind.DEVICE)
    assert ev.entity_class in EntityClass and ev.entity_class is EntityClass(ev.entity_class.value)
    assert ev.entity_key == ev.entity_kind.value + ":" + ev.entity
    assert ev == events_mod._py_fast_ocsf(doc, raw, name == "ocsf_3002")
    assert hash(ev) == hash(tuple(ev)) and ev._replace(entity="x").entity == "x"
    assert ev._asdict()["source_format"] == "ocsf"


@pytest.mark.parametrize("length", [MAX_STR_LEN - 1, MAX_STR_LEN, MAX_STR_LEN + 1])
@pytest.mark.parametrize(
    ("name", "path"),
    [(name, path) for name in OCSF_FORMS for path in OCSF_FIELDS if path[-1] not in {"ip"}],
)
def test_string_length_limit_for_every_field(name: str, path: tuple[str, ...], length: int) -> None:
    doc = orjson.loads(orjson.dumps(DOCS[name]))
    _put(doc, path, "x" * length)
    check_raw(orjson.dumps(doc))


def test_ip_memo_is_shared_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """New addresses go through events._ip_info (its memo and bound); answers stay Python's."""
    monkeypatch.setattr(events_mod, "_IP_MEMO_MAX", 4)
    monkeypatch.setattr(events_mod, "_IP_MEMO", {})
    for i in range(12):
        doc = orjson.loads(orjson.dumps(DOCS["ocsf_4001"]))
        doc["src_endpoint"]["ip"] = f"192.0.2.{i}"
        doc["dst_endpoint"]["ip"] = ["100.64.0.9", "fe80::1", "8.8.8.8", "::1"][i % 4]
        check_raw(orjson.dumps(doc))
        assert len(events_mod._IP_MEMO) <= 4


NUMERIC_FIELDS = [
    ("time",), ("duration",), ("activity_id",), ("status_id",), ("traffic", "bytes_in"),
    ("traffic", "bytes_out"), ("traffic", "packets_in"), ("traffic", "packets_out"),
    ("src_endpoint", "location", "lat"), ("src_endpoint", "location", "long"),
    ("src_endpoint", "autonomous_system", "number"), ("dst_endpoint", "port"),
    ("dst_endpoint", "autonomous_system", "number"), ("connection_info", "direction_id"),
    ("user", "type_id"), ("actor", "user", "type_id"), ("metadata", "uid"),
]  # fmt: skip
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-200.0, max_value=200.0),
    st.floats(min_value=0.0, max_value=2.0**64),
    st.sampled_from([0.5, 1.5, 2.5, 1000.9, -0.0, 0.0, 2.0**63, 2.0**63 - 1024, 1e-300]),
)


@FUZZ
@given(st.sampled_from(OCSF_FORMS), st.sampled_from(NUMERIC_FIELDS), numbers)
def test_numeric_fields(name: str, path: tuple[str, ...], value: float) -> None:
    """Ints and floats of every size in every numeric field: truncation, bounds, float bits."""
    doc = orjson.loads(orjson.dumps(DOCS[name]))
    _put(doc, path, value)
    check_raw(dump(doc))


@pytest.mark.parametrize("value", [0.5, 1.5, 2.5, 1000.9, 2.0**62 + 0.0, 2.0**63 - 1024, 2.0**63])
@pytest.mark.parametrize("path", [("traffic", "bytes_in"), ("duration",), ("time",)])
def test_float_counters_and_times_are_truncated_like_python(
    path: tuple[str, ...], value: float
) -> None:
    doc = orjson.loads(orjson.dumps(DOCS["ocsf_4001"]))
    _put(doc, path, value)
    raw = orjson.dumps(doc)
    ev = kernel_vs_python(orjson.loads(raw), raw, False)
    assert ev is not None or value >= 2.0**63 or (path == ("time",) and value >= MAX_TS_MS)
    check_raw(raw)


# ------------------------------------------------------------------- native form

NATIVE_FORMS = ("native_auth", "native_network")
NATIVE_FIELDS = sorted({key for name in NATIVE_FORMS for key in DOCS[name]} - {"kind"})
native_values = edge_values | st.sampled_from(
    ["inbound", "outbound", "lateral", "Inbound", "logon", "logoff", "other", "LOGON"]
    + ["2026-03-02T09:00:00Z", "2026-03-02T09:00:00", "2100-01-01T00:00:00Z", "yesterday"]
)


@st.composite
def native_documents(draw: st.DrawFn) -> bytes:
    """A valid native-form document with 1-6 fields set to edge values (or dropped)."""
    name = draw(st.sampled_from(NATIVE_FORMS))
    doc = dict(DOCS[name])
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        key = draw(st.sampled_from(NATIVE_FIELDS))
        if draw(st.integers(min_value=0, max_value=5)) == 0:
            doc.pop(key, None)
        else:
            doc[key] = draw(native_values | numbers)
    if draw(st.booleans()):
        doc["unmapped"] = "y" * draw(st.sampled_from([1000, 3000]))
    return dump(doc)


@FUZZ
@given(native_documents())
def test_native_documents_with_edge_values(raw: bytes) -> None:
    check_raw(raw)


@pytest.mark.parametrize("name", NATIVE_FORMS)
@pytest.mark.parametrize("drop_id", [False, True])
def test_native_form_ordinary_documents_take_the_kernel(name: str, drop_id: bool) -> None:
    doc = dict(DOCS[name])
    if drop_id:
        doc.pop("id")
    raw = orjson.dumps(doc)
    ev = kernel_vs_python(orjson.loads(raw), raw, EventKind(doc["kind"]))
    assert type(ev) is Event and ev.source_format == "native"
    assert_same_parse(raw)


@pytest.mark.parametrize("length", [MAX_STR_LEN - 1, MAX_STR_LEN, MAX_STR_LEN + 1])
@pytest.mark.parametrize("key", NATIVE_FIELDS)
def test_native_form_string_length_limits(key: str, length: int) -> None:
    for name in NATIVE_FORMS:
        check_raw(orjson.dumps({**DOCS[name], key: "x" * length}))
