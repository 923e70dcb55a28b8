"""The compiled codec of internal records: what ``pack`` and ``decode_records`` do, or None.

``native/src/codec.rs`` (``RoutedCodec``) reads the packed records the
worker forwards between its stages and builds the ``Routed`` events directly
(``decode``), and writes each event of such a record (``encode``);
``stages.decode_records`` and ``stages.pack`` try it first. The decoder's
contract: for every input, either None (a doubt: the Python decoder decides)
or the very list the Python decoder returns (same values, same types, same
float bits, the very enum members). The encoder's: None, or JSON that the
Python decoder reads as exactly what it reads from orjson's encoding of the
same event. These tests hold both to that:

* every line of generated datasets, packed as the worker packs them, with
  varied context (it must accept all of them);
* hypothesis: events of every form with edge values, origins and session
  changes with arbitrary text (escapes, non-ASCII, surrogate pairs), big
  offsets, and random byte edits of valid records;
* specific doubts (each must be None, and ``decode_records`` still decides);
* the encoder on the same events, and on values it must leave to orjson.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector.context import IpStats
from detector.events import ParseError, parse_event
from detector.generate import GeneratorConfig, write_dataset
from detector.stream import stages
from detector.stream.stages import Routed, Source, decode_records, pack
from tests.test_native_parse import FUZZ, _value, native_documents, ocsf_documents, typed


@contextmanager
def python_only() -> Iterator[None]:
    """Within the block, decode_records runs the Python decoder only."""
    assert not stages.use_native_codec(False)
    try:
        yield
    finally:
        assert stages.use_native_codec(True)


def typed_routed(items: Any) -> Any:
    """Routed events as exact types and typed values (see tests.test_native_parse.typed)."""
    out = []
    for r in items:
        assert type(r) is Routed
        ip = None if r.ip is None else (type(r.ip), r.ip.users, r.ip.failures, r.ip.fail_users)
        changes = r.session_changes
        out.append((
            typed(r.event),
            type(r.origin), tuple(_value(v) for v in r.origin),
            ip,
            None if changes is None else (type(changes), tuple(
                (type(c), tuple(_value(v) for v in c)) for c in changes)),
        ))
    return (type(items), out)


def python_outcome(raw: bytes) -> Any:
    """What the Python decoder returns (typed), or the ValueError it raises."""
    with python_only():
        try:
            return typed_routed(decode_records(raw))
        except ValueError as exc:
            return ("error", str(exc))


def kernel(raw: bytes) -> Any:
    assert stages._decode_kernel is not None, "the compiled decoder is not in use"
    return stages._decode_kernel(raw)


def check(raw: bytes) -> Any:
    """The kernel against the Python decoder; returns the kernel's result."""
    fast = kernel(raw)
    if fast is not None:
        assert typed_routed(fast) == python_outcome(raw)
    # With the kernel on, decode_records has exactly the Python outcome.
    try:
        on = typed_routed(decode_records(raw))
    except ValueError as exc:
        on = ("error", str(exc))
    assert on == python_outcome(raw)
    return fast


def test_the_compiled_codec_is_built_and_in_use() -> None:
    assert stages._decode_kernel is not None and stages._encode_kernel is not None
    assert stages.use_native_codec(True)


def encoded_by_both(r: Routed) -> tuple[bytes | None, bytes]:
    """The compiled encoder's record of ``r`` (None: a doubt) and orjson's, each alone."""
    assert stages._encode_kernel is not None
    part = stages._encode_kernel(r)
    compiled = None if part is None else stages._records([part])
    return compiled, stages._records([orjson.dumps(r._wire())])


def check_encoded(r: Routed) -> bytes | None:
    """The compiled encoder against orjson, both read by the Python decoder."""
    compiled, python = encoded_by_both(r)
    if compiled is not None:
        assert python_outcome(compiled) == python_outcome(python)
        assert python_outcome(python) == typed_routed([r])  # orjson's round trip itself
    return compiled


@pytest.fixture(scope="module", params=[5, 29])
def generated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[bytes]:
    out = tmp_path_factory.mktemp(f"gen{request.param}")
    write_dataset(GeneratorConfig(users=40, days=2, seed=request.param), out)
    return (out / "events.jsonl").read_bytes().splitlines()


def test_every_generated_event_packed_as_the_worker_packs_it(generated: list[bytes]) -> None:
    rng = random.Random(7)
    routed: list[tuple[str, Routed]] = []
    for i, line in enumerate(generated):
        try:
            event = parse_event(line)
        except ParseError:
            continue
        ip = rng.choice([None, IpStats(rng.randrange(50), rng.randrange(9), rng.randrange(5))])
        changes = rng.choice([None, (), (("s-1", "user:a", "10.0.0.1"),),
                              (("s-é", "user:ü", "2001:db8::1"), ("s\"q", "a\\b", "t\tn"))])
        routed.append((stages.ip_key(event),
                       Routed(event, Source("zt.auth", i % 7, i), ip, changes)))
    assert len(routed) > 1000
    for _, r in routed:
        assert check_encoded(r) is not None, "the encoder must take every event the worker forwards"
    accepted = 0
    for _, raw in pack(routed, 4, max_bytes=64 * 1024):
        fast = check(raw)
        assert fast is not None, "the kernel must take every record the worker writes"
        accepted += len(fast)
    assert accepted == len(routed)


_text = st.text(max_size=12)
_ints = st.one_of(st.integers(min_value=0, max_value=2**31),
                  st.integers(min_value=2**62, max_value=2**64 - 1))


@st.composite
def packed_records(draw: st.DrawFn) -> bytes:
    """A record as pack writes it: 1-4 events of any form with edge values and any context."""
    return pack(draw(routed_events()), 1, max_bytes=10**9)[0][1]


@st.composite
def routed_events(draw: st.DrawFn) -> list[tuple[str, Routed]]:
    """1-4 events of any form with edge values and any context, keyed alike."""
    items: list[tuple[str, Routed]] = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        doc = draw(st.one_of(ocsf_documents(), native_documents()))
        try:
            event = parse_event(doc)
        except ParseError:
            event = parse_event(b'{"kind":"auth","ts":5,"user":"ana"}')
        ip = draw(st.one_of(st.none(), st.builds(IpStats, _ints, _ints, _ints)))
        changes = draw(st.one_of(st.none(), st.lists(st.tuples(_text, _text, _text), max_size=3)
                                 .map(tuple)))
        origin = Source(draw(_text), draw(_ints), draw(_ints))
        items.append(("k", Routed(event, origin, ip, changes)))
    return items


@FUZZ
@given(packed_records())
def test_records_with_edge_values_decode_as_in_python(raw: bytes) -> None:
    fast = check(raw)
    data = orjson.loads(raw)
    ordinary = all(o[1] < 2**63 and o[2] < 2**63 for o in (r["o"] for r in data["r"])) and all(
        r["i"] is None or max(r["i"]) < 2**63 for r in data["r"])
    if ordinary and b"\\ud8" not in raw.lower():
        assert fast is not None, "an ordinary record must not be a doubt"


@FUZZ
@given(routed_events())
def test_the_encoder_writes_what_orjson_writes_as_values(items: list[tuple[str, Routed]]) -> None:
    for _, r in items:
        compiled = check_encoded(r)
        if r.origin.offset < 2**64 and r.origin.partition < 2**64:
            assert compiled is not None, "an ordinary event must not be a doubt"
    with python_only():
        by_python = pack(items, 1)
    assert python_outcome(pack(items, 1)[0][1]) == python_outcome(by_python[0][1])


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("a str subclass", {"origin": Source(type("S", (str,), {})("t"), 1, 2)}),
        ("a bool partition", {"origin": Source("t", True, 2)}),  # type: ignore[arg-type]
        ("a list of changes", {"session_changes": [("a", "b", "c")]}),
        ("a two-item change", {"session_changes": (("a", "b"),)}),
        ("a lone surrogate", {"origin": Source("\ud800", 1, 2)}),
        ("an offset beyond 64 bits", {"origin": Source("t", 1, 2**64)}),
    ],
)
def test_encoder_doubts(name: str, change: dict[str, Any]) -> None:
    r = Routed(parse_event(b'{"kind":"auth","ts":5,"user":"ana"}'), Source("t", 0, 1))._replace(
        **change)
    assert stages._encode_kernel is not None
    assert stages._encode_kernel(r) is None, name


def test_floats_keep_their_bits_and_stay_floats() -> None:
    event = parse_event(b'{"kind":"auth","ts":5,"user":"ana","ip":"192.0.2.1"}')
    for lat in (5.0, -0.0, 0.1, 1e-7, 89.99999999999999, 1e16 / 1e15, 2.5e-300):
        fields = list(event)
        fields[20] = lat  # src_lat
        r = Routed(type(event)._make(fields), Source("t", 0, 1))
        compiled = check_encoded(r)
        assert compiled is not None
        back = decode_records(compiled)[0].event[20]
        assert type(back) is float and back.hex() == lat.hex()


@FUZZ
@given(packed_records(), st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255),
                                            st.sampled_from(["set", "insert", "delete"])),
                                  min_size=1, max_size=3))
def test_byte_edits_decode_as_in_python_or_are_doubts(
    raw: bytes, edits: list[tuple[int, int, str]]
) -> None:
    data = bytearray(raw)
    for pos, byte, op in edits:
        i = pos % (len(data) + 1)
        if op == "insert":
            data.insert(i, byte)
        elif data and i < len(data):
            if op == "set":
                data[i] = byte
            else:
                del data[i]
    check(bytes(data))


def _one(**changes: Any) -> bytes:
    event = parse_event(b'{"kind":"auth","ts":5,"user":"ana","ip":"192.0.2.1","session":"s1"}')
    r = Routed(event, Source("zt.auth", 1, 2), IpStats(1, 0, 0), ())
    return pack([("k", r._replace(**changes))], 1)[0][1]


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("version 1 (one event)", Routed(
            parse_event(b'{"kind":"auth","ts":5,"user":"ana"}'), Source("t", 0, 1)).to_bytes()),
        ("whitespace", _one().replace(b'"o":', b'"o": ')),
        ("unknown kind", _one().replace(b'"auth"', b'"authx"', 1)),
        ("escaped enum value", _one().replace(b'"auth"', b'"\\u0061uth"', 1)),
        ("offset beyond int64", _one(origin=Source("zt.auth", 1, 2**64 - 1))),
        ("float partition", _one().replace(b'"zt.auth",1,', b'"zt.auth",1.0,')),
        ("lone surrogate", _one(origin=Source("zt.auth", 1, 2)).replace(
            b'"zt.auth"', b'"\\ud800"')),
        ("38 fields", _one().replace(b'"e":["', b'"e":["', 1).replace(b',null]', b']', 1)),
        ("trailing bytes", _one() + b" "),
        ("truncated", _one()[:-3]),
        ("extra key", _one().replace(b'"s":[]}', b'"s":[],"x":1}')),
    ],
)
def test_doubts(name: str, raw: bytes) -> None:
    assert kernel(raw) is None, name
    check(raw)  # and decode_records decides as in Python


def test_escapes_and_non_ascii_text_are_read_exactly() -> None:
    texts = ["a\"b", "back\\slash", "tab\t\n\r\b\f", "\x00\x1f", "é中", "\U0001f600", "/"]
    raw = _one(origin=Source("".join(texts), 3, 4),
               session_changes=tuple((t, t[::-1], t + "x") for t in texts))
    fast = check(raw)
    assert fast is not None and fast[0].origin.topic == "".join(texts)
    assert fast[0].session_changes == tuple((t, t[::-1], t + "x") for t in texts)


def test_switched_off_the_python_decoder_decides() -> None:
    with python_only():
        assert stages._decode_kernel is None
        assert decode_records(_one())[0].origin == Source("zt.auth", 1, 2)

