"""The hostile-input corpus: nasty messages and the outcome each must have.

Each :class:`Case` is one raw message and its expected outcome: ``"accept"``
(the parser accepts it and the engine decides it) or a parser reason code.
The small cases are committed as ``tests/data/hostile/corpus.jsonl`` (raw
bytes in base64, so invalid UTF-8 and BOMs survive); the big ones (10 MB,
10,000-deep nesting) are built at test time and never committed.

Regenerate the committed file (a test checks it is up to date)::

    python -m tests.hostile_corpus
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

CORPUS_FILE: Final = Path(__file__).resolve().parent / "data" / "hostile" / "corpus.jsonl"
ACCEPT: Final = "accept"
#: 2026-03-02T09:00:00Z, a Monday morning: the corpus' ordinary event time.
T0: Final = 1_772_442_000_000
HOUR_MS: Final = 3_600_000
MAX_TS_MS: Final = 4_102_444_800_000  # 2100-01-01T00:00:00Z, excluded
MB: Final = 1024 * 1024


@dataclass(frozen=True)
class Case:
    """One hostile message and its expected outcome (``accept`` or a reason code)."""

    name: str
    raw: bytes
    expect: str

    @property
    def line_safe(self) -> bool:
        """Return True when the message can be one JSONL line (no CR/LF, not blank)."""
        return b"\n" not in self.raw and b"\r" not in self.raw and bool(self.raw.strip())

    def to_dict(self) -> dict[str, Any]:
        """Return the committed record."""
        return {
            "name": self.name,
            "expect": self.expect,
            "raw_b64": base64.b64encode(self.raw).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Case:
        """Rebuild a case from :meth:`to_dict` output."""
        return cls(str(d["name"]), base64.b64decode(d["raw_b64"]), str(d["expect"]))


def _auth(i: str, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "auth",
        "id": f"hostile-{i}",
        "ts": T0,
        "user": "hostile-ana",
        "ok": True,
        "ip": "198.51.100.7",
        "country": "US",
        "device": "laptop-1",
        "ua": "Mozilla/5.0",
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


def _j(doc: Any) -> bytes:
    return orjson.dumps(doc)


def _raw_doc(i: str, field: str, literal: bytes) -> bytes:
    """An auth document whose ``field`` is the raw JSON text ``literal`` (NaN, 1e400...)."""
    doc = _auth(i)
    doc.pop(field, None)
    body = _j(doc)
    return body[:-1] + b',"' + field.encode() + b'":' + literal + b"}"


def _nested(depth: int, open_: bytes, close: bytes) -> bytes:
    return open_ * depth + close * depth


def small_cases() -> list[Case]:
    """Return the committed corpus (every case well under 1 MB), in send order."""
    c: list[Case] = []

    def add(name: str, raw: bytes, expect: str) -> None:
        c.append(Case(name, raw, expect))

    add("ok_first", _j(_auth("ok-1")), ACCEPT)
    # --- nesting (orjson refuses depth > 1024; dumps of the derived id stops at 255)
    deep_ok = _j(_auth("deep-ok"))[:-1] + b',"junk":' + _nested(200, b"[", b"]") + b"}"
    add("nesting_200_deep_ignored_field", deep_ok, ACCEPT)
    no_id = _j(_auth("x", id=None))[:-1] + b',"junk":' + _nested(1000, b"[", b"]") + b"}"
    add("nesting_1000_deep_no_id", no_id, ACCEPT)
    add("nesting_2000_deep_arrays", _nested(2000, b"[", b"]"), "not_json")
    add("nesting_2000_deep_objects", b'{"a":' * 2000 + b"1" + b"}" * 2000, "not_json")
    # --- non-finite numbers and huge integers
    add("nan_literal_ts", _raw_doc("nan", "ts", b"NaN"), "not_json")
    add("infinity_literal_lat", _raw_doc("inf", "lat", b"Infinity"), "not_json")
    add("neg_infinity_literal_lon", _raw_doc("ninf", "lon", b"-Infinity"), "not_json")
    add("float_overflow_1e400", _raw_doc("1e400", "ts", b"1e400"), "not_json")
    add("huge_int_ts_2_64_plus_1", _raw_doc("h1", "ts", b"18446744073709551617"), "bad_time")
    add("huge_int_ts_10_30", _raw_doc("h2", "ts", b"1" + b"0" * 30), "bad_time")
    add("huge_int_id_2_70", _raw_doc("h3", "id", str(2**70).encode()), "bad_field:id")
    add("huge_int_asn", _raw_doc("h4", "asn", str(2**65).encode()), "bad_field:asn")
    add("int_id_accepted", _j(_auth("x", id=2**63 - 1)), ACCEPT)
    add("negative_huge_ts", _raw_doc("h5", "ts", b"-99999999999999999999999"), "bad_time")
    net = {
        "kind": "network",
        "id": "hostile-net-max",
        "ts": T0,
        "user": "hostile-ana",
        "device": "laptop-1",
        "ip": "10.0.0.5",
        "dst_ip": "10.1.0.10",
        "dst_port": 445,
        "direction": "lateral",
        "bytes_out": 2**63 - 1,
        "bytes_in": 0,
    }
    add("bytes_int64_max_accepted", _j(net), ACCEPT)
    huge = _j({**net, "id": "hostile-net-huge", "bytes_out": 0})
    add(
        "bytes_2_100",
        huge.replace(b'"bytes_out":0', b'"bytes_out":' + str(2**100).encode()),
        "bad_field:bytes_out",
    )
    add(
        "bytes_negative", _j({**net, "id": "hostile-net-neg", "bytes_in": -1}), "bad_field:bytes_in"
    )
    # --- wrong types
    add("user_is_number", _j(_auth("t1", user=12345)), "bad_field:user")
    add("user_is_object", _j(_auth("t2", user={"name": "x"})), "bad_field:user")
    add("ok_is_string", _j(_auth("t3", ok="yes")), "bad_field:ok")
    add("ts_is_word", _j(_auth("t4", ts="yesterday")), "bad_time")
    add("ts_is_bool", _j(_auth("t5", ts=True)), "bad_time")
    add("ip_is_number", _j(_auth("t6", ip=3232235777)), "bad_field:ip")
    add("ip_is_garbage", _j(_auth("t7", ip="999.1.1.1")), "bad_field:ip")
    add("country_lower", _j(_auth("t8", country="us")), "bad_field:country")
    add("lat_out_of_range", _j(_auth("t9", lat=91.0, lon=0.0)), "bad_field:lat")
    add("user_too_long", _j(_auth("t10", user="u" * 2000)), "bad_field:user")
    add("class_uid_string", _j({"class_uid": "3002", "time": T0}), "unknown_class")
    add("class_uid_unknown", _j({"class_uid": 9999, "time": T0}), "unknown_class")
    add("ocsf_user_list", _j({"class_uid": 3002, "time": T0, "user": ["a"]}), "bad_field:user")
    add(
        "ocsf_endpoint_junk",
        _j({"class_uid": 4001, "time": T0, "src_endpoint": [1, {"ip": 2}]}),
        "bad_field:src_endpoint",
    )
    add(
        "ecs_category_number",
        _j({"@timestamp": "2026-03-02T09:00:00Z", "event": {"category": 7}, "user": {"name": "a"}}),
        "unknown_class",
    )
    add(
        "ecs_bad_timestamp",
        _j(
            {
                "@timestamp": "2026-13-45T99:00:00Z",
                "event": {"category": ["authentication"]},
                "user": {"name": "a"},
            }
        ),
        "bad_time",
    )
    add("kind_unknown", _j(_auth("t11", kind="telepathy")), "unknown_class")
    add("all_fields_null", _j({"kind": "auth", "ts": None, "user": None, "id": None}), "bad_time")
    # --- not an object / not JSON
    add("top_level_array", b"[1,2,3]", "not_object")
    add("top_level_string", b'"hello"', "not_object")
    add("top_level_null", b"null", "not_object")
    add("trailing_garbage", _j(_auth("g1")) + b"}}", "not_json")
    add("truncated", _j(_auth("g2"))[:-5], "not_json")
    add("raw_nul_byte", _j(_auth("g3"))[:10] + b"\x00" + _j(_auth("g3"))[10:], "not_json")
    add("whitespace_only", b" \t ", "not_json")
    add("empty_message", b"", "not_json")
    add("pretty_printed_multiline", orjson.dumps(_auth("ml"), option=orjson.OPT_INDENT_2), ACCEPT)
    # --- encodings
    add("invalid_utf8_in_string", b'{"kind":"auth","ts":1,"user":"\xff\xfe"}', "not_json")
    add("overlong_utf8_slash", b'{"kind":"auth","ts":1,"user":"a\xc0\xaf"}', "not_json")
    add("raw_lone_surrogate_cesu", b'{"kind":"auth","ts":1,"user":"\xed\xa0\x80"}', "not_json")
    add("escaped_lone_surrogate", b'{"kind":"auth","ts":1,"user":"\\ud800"}', "not_json")
    add("escaped_surrogate_pair_ok", _j(_auth("sp"))[:-1] + b',"service":"\\ud83d\\ude00"}', ACCEPT)
    add("utf8_bom", b"\xef\xbb\xbf" + _j(_auth("bom8")), "not_json")
    add("utf16_bom", b"\xff\xfe" + _j(_auth("bom16")).decode().encode("utf-16-le"), "not_json")
    add("escaped_nul_in_user_agent", _j(_auth("nul", ua="Mozilla\u0000/5.0")), ACCEPT)
    add("control_and_rtl_chars", _j(_auth("rtl", ua="\u202egnp.exe\u0007\u001b[31m")), ACCEPT)
    # --- timestamps
    add("ts_epoch_zero_1970", _j(_auth("t1970", ts=0)), ACCEPT)
    add("ts_iso_1970", _j(_auth("t1970iso", ts="1970-01-01T00:00:00Z")), ACCEPT)
    add("ts_negative", _j(_auth("tneg", ts=-1)), "bad_time")
    add("ts_last_ms_before_2100", _j(_auth("t2099", ts=MAX_TS_MS - 1)), ACCEPT)
    add("ts_2100_epoch_ms", _j(_auth("t2100", ts=MAX_TS_MS)), "bad_time")
    add("ts_2100_iso", _j(_auth("t2100iso", ts="2100-01-01T00:00:00Z")), "bad_time")
    add("ts_year_9999_iso", _j(_auth("t9999", ts="9999-12-31T23:59:59Z")), "bad_time")
    add("ts_epoch_seconds_not_ms", _j(_auth("tsec", ts=1_772_442_000)), ACCEPT)
    add("ts_float_ms", _j(_auth("tfloat", ts=T0 + 0.75)), ACCEPT)
    # --- duplicates and ordering (same entity)
    add("duplicate_id_first", _j(_auth("dup", ts=T0 + 2 * HOUR_MS)), ACCEPT)
    add("duplicate_id_again", _j(_auth("dup", ts=T0 + 2 * HOUR_MS)), ACCEPT)
    add("duplicate_id_other_content", _j(_auth("dup", ts=T0 + 3 * HOUR_MS, country="FR")), ACCEPT)
    add("duplicate_json_keys_last_wins", b'{"kind":"auth","ts":1,"user":"a","user":"b"}', ACCEPT)
    add("late_by_5_hours", _j(_auth("late5h", ts=T0 - 5 * HOUR_MS)), ACCEPT)
    add("early_by_30_hours", _j(_auth("early30h", ts=T0 + 30 * HOUR_MS)), ACCEPT)
    add("late_by_7_days", _j(_auth("late7d", ts=T0 - 7 * 24 * HOUR_MS)), ACCEPT)
    # --- entities
    add("empty_user_auth", _j(_auth("e1", user="")), "missing_entity")
    add(
        "empty_user_network_falls_back_to_device",
        _j({**net, "id": "hostile-e2", "user": "", "bytes_out": 1}),
        ACCEPT,
    )
    add(
        "empty_everything_network",
        _j({"kind": "network", "ts": T0, "user": "", "device": "", "host": ""}),
        "missing_entity",
    )
    add("whitespace_user", _j(_auth("e3", user="   ")), ACCEPT)
    add(
        "ocsf_empty_user_uid",
        _j({"class_uid": 3002, "time": T0, "user": {"uid": ""}}),
        "missing_entity",
    )
    add("many_keys", _j({**_auth("keys"), **{f"k{i}": i for i in range(3000)}}), ACCEPT)
    add("ok_last", _j(_auth("ok-2", ts=T0 + 31 * HOUR_MS)), ACCEPT)
    return c


def big_cases() -> list[Case]:
    """Return the cases built at test time: 10 MB messages and 10,000-deep nesting."""
    ten_mb = _j(_auth("10mb", pad="x" * (10 * MB)))
    # The 64 KiB limit itself is accepted; one byte more is not.
    at_limit = _j(_auth("at-limit", pad=""))
    at_limit = _j(_auth("at-limit", pad="x" * (64 * 1024 - len(at_limit))))
    assert len(at_limit) == 64 * 1024
    return [
        Case("size_exactly_64KiB", at_limit, ACCEPT),
        Case("size_64KiB_plus_1", _j(_auth("over", pad="x" * (64 * 1024 + 1))), "too_large"),
        Case("message_10MB_valid_json", ten_mb, "too_large"),
        Case("message_10MB_garbage", b"\xff" * (10 * MB), "too_large"),
        Case("nesting_10000_deep_arrays", _nested(10_000, b"[", b"]"), "not_json"),
        Case(
            "nesting_10000_deep_in_field",
            _j(_auth("deep10k"))[:-1] + b',"x":' + _nested(10_000, b"[", b"]") + b"}",
            "not_json",
        ),
        Case("nesting_10000_deep_objects", b'{"a":' * 10_000 + b"null" + b"}" * 10_000, "not_json"),
    ]


def load_committed() -> list[Case]:
    """Return the committed small corpus, in order."""
    with CORPUS_FILE.open("rb") as fh:
        return [Case.from_dict(orjson.loads(line)) for line in fh if line.strip()]


def all_cases() -> list[Case]:
    """Return the committed corpus followed by the big cases."""
    return load_committed() + big_cases()


def write_committed() -> None:
    """(Re)write ``tests/data/hostile/corpus.jsonl`` from :func:`small_cases`."""
    CORPUS_FILE.parent.mkdir(parents=True, exist_ok=True)
    with CORPUS_FILE.open("wb") as fh:
        for case in small_cases():
            fh.write(orjson.dumps(case.to_dict()) + b"\n")


if __name__ == "__main__":
    write_committed()
    print(f"wrote {CORPUS_FILE} ({len(small_cases())} cases)")
