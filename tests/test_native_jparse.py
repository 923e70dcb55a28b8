"""The raw reader (``ParseKernels.raw``) returns exactly what ``parse_event`` returns, or None.

``native/src/jparse.rs`` reads a document's bytes without orjson and builds
the Event directly; ``parse_event`` tries it first for bytes. Its contract:
for every input, either None (a doubt: the usual path decides) or the very
Event that ``parse_event`` returns with the compiled parser off (same field
values, same types, same float bits, the very enum members). These tests hold
it to that, exactly:

* every line of generated datasets (several seeds), and the share it accepts
  (it must take the vast majority, else it proves nothing and gains nothing);
* hypothesis: documents of every form mutated at the paths the parser reads
  (wrong types, huge ints, floats, -0.0, number literals orjson rejects,
  escaped and unpaired-surrogate strings, long strings, nulls), duplicate and
  escaped keys, whitespace, trailing garbage, invalid UTF-8, deep nesting,
  random byte edits; and ``parse_event`` with everything on equals it with the
  compiled parser off (same Event, or same reason and detail);
* specific doubts (each must be None) and specific acceptances.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import detector.events as events_mod
from detector.events import (
    MAX_EVENT_BYTES,
    MAX_STR_LEN,
    Event,
    EventKind,
    ParseError,
    parse_event,
)
from detector.generate import GeneratorConfig, write_dataset
from tests.test_hostile import DOCS, SPECIAL_LITERALS, dump, mutated_documents
from tests.test_native_parse import (
    FUZZ,
    NATIVE_FORMS,
    OCSF_FIELDS,
    OCSF_FORMS,
    native_documents,
    ocsf_documents,
    outcome,
    python_only,
    typed,
)


def raw_kernel(raw: bytes) -> Event | None:
    """The compiled raw reader, as parse_event binds it."""
    kernel = events_mod._raw_event
    assert kernel is not None, "the raw reader is not in use"
    return kernel(raw)


def check(raw: bytes) -> Event | None:
    """The raw reader against parse_event with the compiled parser off; returns its result.

    Also: parse_event with everything on (the raw reader first) has exactly
    the outcome it has with the compiled parser off.
    """
    got = raw_kernel(raw)
    with python_only():
        want = outcome(raw)
    if got is not None:
        assert want == ("accept", typed(got)), "the raw reader differs from parse_event"
    assert outcome(raw) == want
    return got


def test_raw_reader_is_bound_and_switched_with_the_compiled_parser() -> None:
    assert events_mod._raw_event is not None
    try:
        assert events_mod.use_native_parser(True, raw=False)
        assert events_mod._raw_event is None
        assert events_mod._fast_ocsf is not events_mod._py_fast_ocsf
        assert not events_mod.use_native_parser(False)
        assert events_mod._raw_event is None
    finally:
        assert events_mod.use_native_parser(True)
    assert events_mod._raw_event is not None


def test_parse_event_takes_the_raw_reader_first() -> None:
    """With the raw reader on, an ordinary document never reaches orjson.loads."""
    raw = dump(DOCS["ocsf_4001"])
    want = typed(parse_event(raw))
    with mock.patch.object(events_mod.orjson, "loads", side_effect=AssertionError("orjson")):
        assert typed(parse_event(raw)) == want
        with pytest.raises(AssertionError, match="orjson"):
            parse_event(bytearray(raw))  # not bytes: the usual path


def test_the_comparison_can_fail() -> None:
    ev = raw_kernel(dump(DOCS["ocsf_3002"]))
    assert ev is not None
    assert typed(ev) != typed(ev._replace(ts_ms=float(ev.ts_ms)))
    assert typed(ev) != typed(ev._replace(kind="auth"))  # an equal str, not the member
    assert typed(ev) != typed(tuple(ev))


# ------------------------------------------------------------------ generated data


@pytest.fixture(scope="module", params=[3, 17, 2024])
def generated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[bytes]:
    out: Path = tmp_path_factory.mktemp(f"gen{request.param}")
    write_dataset(GeneratorConfig(users=60, days=3, seed=request.param), out)
    return (out / "events.jsonl").read_bytes().splitlines()


def test_every_generated_line(generated: list[bytes]) -> None:
    """Equal on every line, and the raw reader takes the vast majority of them."""
    assert len(generated) > 5000
    accepted = sum(check(raw) is not None for raw in generated)
    print(f"raw reader accepted {accepted} of {len(generated)} generated lines")
    assert accepted > 0.95 * len(generated)


def test_generated_lines_reshaped(generated: list[bytes]) -> None:
    """Every 13th line re-serialised: pretty-printed, keys sorted, no event id, ids as ints."""
    rng = random.Random(7)
    for raw in generated[::13]:
        doc = orjson.loads(raw)
        pretty = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        assert typed(check(pretty)) == typed(check(raw))  # whitespace and order: same Event
        no_id = dict(doc, metadata={k: v for k, v in doc["metadata"].items() if k != "uid"})
        assert check(orjson.dumps(no_id)) is None  # the derived id: a doubt
        doc["metadata"]["uid"] = rng.choice([0, 7, -3, 2**63 - 1, -(2**63), 2**63, 2**64])
        check(dump(doc))


# ------------------------------------------------------------------ property tests


@FUZZ
@given(mutated_documents())
def test_mutated_documents_of_every_form(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(ocsf_documents())
def test_ocsf_documents_with_edge_values(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(native_documents())
def test_native_documents_with_edge_values(raw: bytes) -> None:
    check(raw)


def _escaped(text: str, data: st.DataObject) -> bytes:
    """``text`` as a JSON string literal, each character plain or escaped at random."""
    out = [b'"']
    for ch in text:
        how = data.draw(st.integers(min_value=0, max_value=3))
        code = ord(ch)
        if how == 0 or code < 0x20 or ch in '"\\':
            out.append(orjson.dumps(ch)[1:-1])  # orjson's own (minimal) escaping
        elif how == 1 and code < 0x10000:
            out.append(f"\\u{code:04x}".encode())
        elif how == 2 and code >= 0x10000:
            hi, lo = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
            out.append(f"\\u{hi:04X}\\u{lo:04x}".encode())
        elif how == 3 and ch in "/\b\f\n\r\t":
            short = {"/": b"/", "\b": b"b", "\f": b"f", "\n": b"n", "\r": b"r", "\t": b"t"}
            out.append(b"\\" + short[ch])
        else:
            out.append(ch.encode("utf-8", "surrogatepass"))
    out.append(b'"')
    return b"".join(out)


#: JSON value texts that only a hand-written document holds.
number_texts = st.one_of(
    st.sampled_from(SPECIAL_LITERALS),
    st.sampled_from([b"1E3", b"1e+3", b"2.5E-1", b"-0", b"-0.0", b"0.0", b"1e-400", b"1e308"]),
    st.sampled_from([b"1.7976931348623157e308", b"1.7976931348623159e308", b"4.9e-324"]),
    st.sampled_from([b"9223372036854775807", b"9223372036854775808", b"-9223372036854775808"]),
    st.sampled_from([b"-9223372036854775809", b"18446744073709551616", b"1" + b"0" * 30]),
    st.sampled_from([b"1772442000000.0", b"1.772442e12", b"17724420000000e-1", b"015"]),
    st.tuples(
        st.integers(min_value=-(10**20), max_value=10**20),
        st.integers(min_value=0, max_value=10**6),
        st.integers(min_value=-330, max_value=330),
    ).map(lambda t: f"{t[0]}.{t[1]}e{t[2]}".encode()),
)
unicode_texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=10
) | st.sampled_from(["Admin", "TCP", "10.0.0.1", "ADM\u0130N", "\u212aelvin", "US", "auth"])
lone_surrogates = st.sampled_from([b'"\\ud800"', b'"x\\udc00"', b'"\\ud800\\u0041"', b'"\\ud800\\'])


@st.composite
def string_texts(draw: st.DrawFn) -> bytes:
    """A JSON string literal with escapes, unicode, control characters or a bad surrogate."""
    if draw(st.integers(min_value=0, max_value=7)) == 0:
        return draw(lone_surrogates)
    text = draw(unicode_texts)
    if draw(st.booleans()):
        text = draw(st.sampled_from(["é", "x", "\U0001f600"])) * draw(
            st.sampled_from([MAX_STR_LEN - 1, MAX_STR_LEN, MAX_STR_LEN + 1])
        )
    return _escaped(text, draw(st.data()))


value_texts = number_texts | string_texts() | st.sampled_from([b"null", b"true", b"{}", b"[]"])


def _put_text(doc: dict[str, Any], path: tuple[str, ...], text: bytes) -> bytes:
    """The document with the value at ``path`` written as ``text`` (verbatim JSON)."""
    marker = "\x00marker\x00"
    node = doc = orjson.loads(orjson.dumps(doc))
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = marker
    return orjson.dumps(doc).replace(orjson.dumps(marker), text)


@FUZZ
@given(st.sampled_from(OCSF_FORMS), st.sampled_from(OCSF_FIELDS), value_texts)
def test_ocsf_fields_written_by_hand(name: str, path: tuple[str, ...], text: bytes) -> None:
    """Number literals, escaped strings, surrogates and long strings at every field read."""
    check(_put_text(DOCS[name], path, text))


NATIVE_KEYS = sorted({key for name in NATIVE_FORMS for key in DOCS[name]})


@FUZZ
@given(st.sampled_from(NATIVE_FORMS), st.sampled_from(NATIVE_KEYS), value_texts)
def test_native_fields_written_by_hand(name: str, key: str, text: bytes) -> None:
    check(_put_text(DOCS[name], (key,), text))


FORMS = sorted(DOCS)
#: Bytes orjson treats as whitespace, and some it does not.
spaces = st.sampled_from([b" ", b"\t", b"\n", b"\r", b"\r\n  ", b"\x0c", b"\x0b", b"\xc2\xa0"])
junk_bytes = st.sampled_from(
    [b"x", b"}", b",", b"{}", b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf"]
    + [b"\xc0\x80", b"\xf4\x90\x80\x80", b"\x80", b'"', b"\\", b"[", b"1", b"\xe2\x82"]
)


@st.composite
def byte_edits(draw: st.DrawFn) -> bytes:
    """A valid document with a few byte-level edits: whitespace, junk, deletions, copies."""
    raw = bytearray(dump(DOCS[draw(st.sampled_from(FORMS))]))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        op = draw(st.sampled_from(["space", "junk", "delete", "trail", "lead", "dup"]))
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        if op == "space":
            raw[at:at] = draw(spaces)
        elif op == "junk":
            raw[at:at] = draw(junk_bytes)
        elif op == "delete":
            del raw[at : at + draw(st.integers(min_value=1, max_value=3))]
        elif op == "trail":
            raw += draw(spaces | junk_bytes)
        elif op == "lead":
            raw[0:0] = draw(spaces | junk_bytes)
        else:  # copy a slice elsewhere: repeated keys, broken grammar
            end = draw(st.integers(min_value=at, max_value=min(len(raw), at + 40)))
            to = draw(st.integers(min_value=0, max_value=len(raw)))
            raw[to:to] = raw[at:end]
    return bytes(raw)


@FUZZ
@given(byte_edits())
def test_byte_level_edits(raw: bytes) -> None:
    check(raw)


#: Where a repeated or escaped key goes: every object the parsers read.
OBJECT_PATHS = [(), ("metadata",), ("src_endpoint",), ("src_endpoint", "location")]
OBJECT_PATHS += [("dst_endpoint",), ("user",), ("actor",), ("connection_info",), ("traffic",)]


def _insert_member(raw: bytes, doc: dict[str, Any], path: tuple[str, ...], member: bytes) -> bytes:
    """``raw`` with ``member`` (``"key":value``) added first in the object at ``path``."""
    node: Any = doc
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return raw
    # re-serialise with a marker key first in that object, then splice
    marker = {"\x00m\x00": 0}
    rebuilt = orjson.loads(raw)
    target = rebuilt
    for key in path:
        target = target[key]
    target_items = dict(target)
    target.clear()
    target.update(marker)
    target.update(target_items)
    return orjson.dumps(rebuilt).replace(b'"\\u0000m\\u0000":0', member, 1)


@FUZZ
@given(
    st.sampled_from(FORMS),
    st.sampled_from(OBJECT_PATHS),
    st.data(),
)
def test_repeated_and_escaped_keys(name: str, path: tuple[str, ...], data: st.DataObject) -> None:
    doc = DOCS[name]
    raw = dump(doc)
    node: Any = doc
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    keys = sorted(node) if isinstance(node, dict) and node else ["uid"]
    key = data.draw(st.sampled_from(keys + ["class_uid", "kind", "event", "time", "ts"]))
    if data.draw(st.booleans()):  # the key again, first (Python keeps the last value)
        key_text = orjson.dumps(key)
    else:  # the key spelled with an escape
        key_text = _escaped(key, data)
    same = dump(node.get(key)) if isinstance(node, dict) else b"1"  # the very value again
    value = data.draw(value_texts | st.just(same))
    check(_insert_member(raw, doc, path, key_text + b":" + value))


@FUZZ
@given(
    st.sampled_from(FORMS),
    st.integers(min_value=1, max_value=40),
    st.sampled_from([b"[", b'{"a":']),
    st.sampled_from(["x", "metadata", "user", "src_endpoint", "ts", "event"]),
)
def test_deep_nesting(name: str, depth: int, opener: bytes, key: str) -> None:
    closer = b"]" if opener == b"[" else b"}"
    member = orjson.dumps(key) + b":" + opener * depth + b"1" + closer * depth
    raw = dump(DOCS[name])
    check(b"{" + member + b"," + raw[1:])
    check(raw[:-1] + b"," + member + b"}")


# ------------------------------------------------------------------- specifics


OCSF = dump(DOCS["ocsf_3002"])
NET = dump(DOCS["ocsf_4001"])


@pytest.mark.parametrize(
    "raw",
    [
        b"\xef\xbb\xbf" + OCSF,  # a byte order mark
        OCSF + b"\x0c",  # not JSON whitespace
        OCSF + b"x",
        OCSF + OCSF,
        OCSF.replace(b'"class_uid"', b'"\\u0063lass_uid"'),  # an escaped key
        OCSF.replace(b'"time"', b'"time":1,"time"'),  # a repeated key
        OCSF.replace(b'"uid":"o-1"', b'"uid":"o-1","uid":"o-2"'),  # repeated, nested
        OCSF.replace(b'"uid":"o-1"', b'"uid":""'),  # no event id: the derived id
        OCSF.replace(b'"uid":"o-1"', b'"uid":null'),
        OCSF.replace(b'"uid":"o-1"', b'"uid":9223372036854775808'),  # an int beyond int64
        OCSF.replace(b"3002", b"3002.0"),
        OCSF.replace(b"3002", b"3003"),
        OCSF.replace(b'"ok"', b'"\\ud800"'),  # a lone surrogate
        OCSF.replace(b'"ok"', b'"\xed\xa0\x80"'),  # an encoded surrogate
        OCSF.replace(b'"ok"', b'"\x01"'),  # a raw control character
        OCSF.replace(b'"ok"', b'"\xff"'),
        NET.replace(b'"traffic":{', b'"traffic":{"x":1e400,'),  # infinity, unread
        NET.replace(b'"traffic":{', b'"traffic":{"x":01,'),  # a leading zero, unread
        NET.replace(b'"traffic":{', b'"traffic":{"x":NaN,'),
        b"[" + OCSF + b"]",
        b'{"kind":"auth","ts":1,"user":"u"}'.replace(b'"auth"', b'"\\u0061uth"'),
        dump(DOCS["ecs_auth"]),
        dump(DOCS["ecs_network"]),
        b'{"a":' * 40 + b"1" + b"}" * 40,
    ],
)
def test_doubts(raw: bytes) -> None:
    assert check(raw) is None


@pytest.mark.parametrize(
    "raw",
    [
        OCSF,
        NET,
        dump(DOCS["native_auth"]),
        dump(DOCS["native_network"]),
        b" \t\r\n" + OCSF.replace(b",", b" ,\n\t").replace(b":", b" : ") + b"\n",
        OCSF.replace(b'"ok"', b'"\\u006f\\u004B \\"\\\\\\/\\b\\f\\n\\r\\t'
                     b' \\ud83d\\ude00 \xc3\xa9"'),
        OCSF.replace(b'"ok"', b'"' + "é".encode() * MAX_STR_LEN + b'"'),  # characters, not bytes
        OCSF.replace(b'"ok"', b'"' + b"\\u00e9" * MAX_STR_LEN + b'"'),
        b'{"event":{"category":"network"},' + OCSF[1:],  # class_uid decides, as in Python
        OCSF.replace(b'"uid":"o-1"', b'"uid":-0'),
        OCSF.replace(b'"uid":"o-1"', b'"uid":-9223372036854775808'),
        NET.replace(b'"traffic":{', b'"traffic":{"x":[1,{"y":[]}],"z":1e-400,"w":"\\u0000",'),
    ],
)
def test_accepted(raw: bytes) -> None:
    ev = check(raw)
    assert type(ev) is Event


@pytest.mark.parametrize("n", [MAX_STR_LEN, MAX_STR_LEN + 1])
def test_string_limit_is_in_characters(n: int) -> None:
    ev = check(OCSF.replace(b'"ok"', b'"' + "\U0001f600".encode() * n + b'"'))
    assert (ev is None) == (n > MAX_STR_LEN)


def test_values_are_pythons_own_objects() -> None:
    """The IP memo's entries and the enum members themselves, as on the Python path."""
    ev = raw_kernel(NET)
    assert ev is not None
    info = events_mod._IP_MEMO[DOCS["ocsf_4001"]["src_endpoint"]["ip"]]
    assert ev.src_ip is info[0] and ev.src_prefix is info[1]
    assert ev.kind is EventKind.NETWORK and ev.source_format == "ocsf"


def test_too_large_documents_are_not_read() -> None:
    raw = OCSF[:-1] + b',"pad":"' + b"x" * MAX_EVENT_BYTES + b'"}'
    check(raw)
    with pytest.raises(events_mod.ParseError) as exc:
        parse_event(raw)
    assert exc.value.reason == "too_large"


# ------------------------------------------------------------------ batches


def _batch_outcomes(raws: Any) -> list[Any]:
    results, rejected = events_mod.parse_batch(raws)
    assert rejected == [i for i, r in enumerate(results) if isinstance(r, ParseError)]
    assert events_mod.accepted_events(results, rejected) == [
        r for r in results if not isinstance(r, ParseError)
    ]
    out = []
    for r in results:
        if isinstance(r, ParseError):
            out.append(("reject", r.reason, r.detail))
        else:
            out.append(("accept", typed(r)))
    return out


def test_parse_batch_equals_parse_event_on_each(generated: list[bytes]) -> None:
    """A batch of generated lines with rejects and odd inputs mixed in: each outcome
    is parse_event's (with the compiled parser on and off), in order."""
    odd: list[Any] = [
        b"nope", b"[1, 2]", b"", b"x" * (MAX_EVENT_BYTES + 1), b'{"kind":"auth"}',
        dump(DOCS["ocsf_3002"]).decode(), bytearray(dump(DOCS["ocsf_4001"])),
        memoryview(dump(DOCS["ocsf_3002"])), 42,
    ]
    raws: list[Any] = list(generated[:400])
    for i, o in enumerate(odd):
        raws.insert(37 * i + 5, o)
    want = [outcome(r) for r in raws]
    assert _batch_outcomes(raws) == want
    assert _batch_outcomes(tuple(raws)) == want  # not a list: parse_event on each
    with python_only():
        assert _batch_outcomes(raws) == want
    assert sum(w[0] == "reject" for w in want) >= 6


def test_parse_batch_reads_the_batch_in_one_call() -> None:
    """Ordinary documents never reach parse_event one by one; doubts do, in order."""
    docs = [dump(DOCS["ocsf_3002"]), b"nope", dump(DOCS["ocsf_4001"]), "{}"]
    seen: list[Any] = []
    real = events_mod.parse_event

    def spy(raw: Any) -> Any:
        seen.append(raw)
        return real(raw)

    with mock.patch.object(events_mod, "parse_event", spy):
        got, rejected = events_mod.parse_batch(docs)
    assert seen == [b"nope", "{}"] and rejected == [1, 3]
    assert [type(g).__name__ for g in got] == ["Event", "ParseError", "Event", "ParseError"]


# ------------------------------------------------------------------ string cache


def _cache_slot(text: str) -> int:
    """The slot of ``text`` in the reader's string cache (``str_cache_hash``, 4,096 slots)."""
    data = text.encode()
    h = len(data)
    for i in range(0, len(data), 8):
        word = int.from_bytes(data[i:i + 8].ljust(8, b"\0"), "little")
        h = ((((h << 5) | (h >> 59)) % 2**64 ^ word) * 0x517CC1B727220A95) % 2**64
    return h >> 52


def _auth(user: str, event_id: str, agent: str = "curl/8") -> bytes:
    return orjson.dumps({"kind": "auth", "id": event_id, "ts": 1, "user": user,
                         "ua": agent, "country": "FR", "service": "vpn"})


def test_repeated_short_strings_are_shared_and_collisions_evict() -> None:
    first, second = raw_kernel(_auth("ana", "e-1")), raw_kernel(_auth("ana", "e-2"))
    assert first is not None and second is not None
    # Repeats across documents: the same str object (from the cache).
    assert first.user_agent == "curl/8" and first.src_country == "FR"
    assert first.user is second.user and first.user_agent is second.user_agent
    assert first.src_country is second.src_country and first.service is second.service
    # Event ids are unique: never cached, so never shared.
    again = raw_kernel(_auth("ana", "e-1"))
    assert again is not None and again.event_id == "e-1" and again.event_id is not first.event_id
    # Long and non-ASCII strings are made afresh.
    long_agent = "x" * 65
    a, b = raw_kernel(_auth("zoë", "e-3", long_agent)), raw_kernel(_auth("zoë", "e-4", long_agent))
    assert a is not None and b is not None
    assert a.user == b.user == "zoë" and a.user is not b.user
    assert a.user_agent == long_agent and a.user_agent is not b.user_agent
    # Two names in one slot: each document still gets its own text.
    names = {}
    for i in range(100_000):
        name = f"u{i}"
        other = names.setdefault(_cache_slot(name), name)
        if other != name:
            break
    x, y = other, name
    assert _cache_slot(x) == _cache_slot(y) and x != y
    seen = [raw_kernel(_auth(n, f"c-{i}")) for i, n in enumerate([x, y, x, y, x, x])]
    assert [e.user for e in seen if e is not None] == [x, y, x, y, x, x]
    assert seen[4] is not None and seen[5] is not None and seen[4].user is seen[5].user
    # y evicted x (the mirror above is the kernel's hash): x is made again.
    assert seen[0] is not None and seen[2] is not None and seen[0].user is not seen[2].user
    for e in seen:
        assert e is not None
        check(_auth(e.user or "", e.event_id))
