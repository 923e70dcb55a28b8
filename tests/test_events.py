"""Tests for detector.events.parse_event: accepted forms, reason codes, fuzzing."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.events import (
    MAX_EVENT_BYTES,
    EntityClass,
    EntityKind,
    Event,
    EventKind,
    ParseError,
    parse_event,
)

T0 = 1_714_560_000_123  # 2024-05-01T10:40:00.123Z

OCSF_AUTH: dict[str, Any] = {
    "class_uid": 3002,
    "category_uid": 3,
    "activity_id": 1,
    "type_uid": 300201,
    "severity_id": 1,
    "time": T0,
    "metadata": {
        "uid": "evt-0001",
        "version": "1.1.0",
        "product": {"name": "Okta", "vendor_name": "Okta"},
    },
    "status_id": 1,
    "status": "Success",
    "status_detail": "Authentication succeeded",
    "user": {
        "uid": "u-123",
        "name": "alice",
        "email_addr": "alice@example.com",
        "type": "Admin",
    },
    "src_endpoint": {
        "ip": "203.0.113.77",
        "hostname": "alice-laptop",
        "uid": "src-dev-9",
        "location": {"country": "DE", "city": "Berlin", "lat": 52.52, "long": 13.405},
        "autonomous_system": {"number": 3320, "name": "Deutsche Telekom AG"},
    },
    "device": {"uid": "dev-42", "name": "alice-laptop"},
    "dst_endpoint": {"hostname": "sso.example.com", "ip": "10.0.0.5", "port": 443},
    "http_request": {"user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0"},
    "session": {"uid": "sess-1", "is_remote": True},
    "service": {"name": "okta"},
    "is_mfa": True,
    "auth_protocol": "SAML",
    "auth_protocol_id": 5,
    "logon_type_id": 3,
}

OCSF_NET: dict[str, Any] = {
    "class_uid": 4001,
    "category_uid": 4,
    "activity_id": 6,
    "time": T0,
    "metadata": {"uid": "net-77", "version": "1.1.0"},
    "actor": {"user": {"uid": "svc-backup", "type": "Service"}},
    "src_endpoint": {
        "ip": "2001:db8:abcd:12::7",
        "uid": "host-17",
        "hostname": "backup-01",
        "location": {"country": "US"},
        "autonomous_system": {"number": "16509"},
    },
    "dst_endpoint": {
        "ip": "198.51.100.20",
        "port": 8443,
        "hostname": "files.example.net",
        "location": {"country": "NL"},
        "autonomous_system": {"number": 1136},
    },
    "connection_info": {"protocol_name": "TCP", "direction_id": 2},
    "traffic": {"bytes_in": 1200, "bytes_out": 987654.9, "packets_in": 10, "packets_out": 700},
    "duration": 5300,
    "session": {"uid": "tcp-sess-5"},
    "http_request": {"user_agent": "curl/8.5.0"},
}

OCSF_NET_DEVICE: dict[str, Any] = {
    "class_uid": 4001,
    "activity_id": 1,
    "time": T0 + 1.75,
    "src_endpoint": {"ip": "10.1.2.3", "hostname": "ws-12"},
    "dst_endpoint": {"ip": "10.9.9.9", "port": 445},
    "connection_info": {"protocol_name": "tcp", "direction_id": 3},
    "traffic": {"bytes_out": 42},
}

ECS_AUTH: dict[str, Any] = {
    "@timestamp": "2024-05-01T10:40:00.123Z",
    "event": {
        "id": "ecs-1",
        "kind": "event",
        "category": ["authentication"],
        "type": ["start"],
        "action": "user-login",
        "outcome": "failure",
        "reason": "bad password",
    },
    "user": {"name": "bob", "email": "bob@example.com", "roles": ["staff", "Contractor"]},
    "source": {
        "ip": "192.0.2.44",
        "domain": "bob-mac",
        "geo": {
            "country_iso_code": "FR",
            "city_name": "Paris",
            "location": {"lat": 48.85, "lon": 2.35},
        },
        "as": {"number": 3215, "organization": {"name": "Orange"}},
    },
    "device": {"id": "mac-7"},
    "user_agent": {"original": "Mozilla/5.0 Safari"},
    "service": {"name": "vpn"},
    "session": {"id": "s-99"},
}

ECS_NET: dict[str, Any] = {
    "@timestamp": "2024-05-01T12:40:00.123+02:00",
    "event": {"category": "network", "duration": 2_500_000_000},
    "host": {"id": "h-1", "name": "db-01"},
    "source": {"ip": "10.0.0.8", "bytes": 100, "packets": 2},
    "destination": {
        "ip": "8.8.8.8",
        "port": 53,
        "domain": "dns.google",
        "bytes": 300,
        "packets": 3,
        "geo": {"country_iso_code": "US"},
        "as": {"number": 15169},
    },
    "network": {"transport": "UDP", "protocol": "dns", "direction": "outbound"},
}

NATIVE_AUTH: dict[str, Any] = {
    "kind": "auth",
    "id": "n-1",
    "ts": "2024-05-01T10:40:00.123Z",
    "user": "carol",
    "user_type": "vendor",
    "device": "lap-3",
    "ok": True,
    "mfa": False,
    "session": "sess-c",
    "service": "jira",
    "ua": "Mozilla/5.0",
    "ip": "2001:db8:1::5",
    "country": "GB",
    "city": "London",
    "lat": 51.5,
    "lon": -0.12,
    "asn": 2856,
    "as_name": "BT",
    "activity": "logon",
    "some_future_key": {"ignored": True},
}

NATIVE_NET: dict[str, Any] = {
    "kind": "network",
    "ts": T0,
    "device": "iot-cam-4",
    "ip": "10.20.30.40",
    "dst_ip": "203.0.113.9",
    "dst_host": "cdn.example.org",
    "dst_port": 443,
    "dst_country": "SG",
    "dst_asn": 13335,
    "proto": "TCP",
    "direction": "outbound",
    "bytes_in": 10,
    "bytes_out": 20,
    "packets_in": 1,
    "packets_out": 2,
    "duration_ms": 1500,
}


def _dumps(doc: Any) -> bytes:
    return orjson.dumps(doc)


def with_(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Deep copy of ``doc`` with ``path`` (dotted) set to ``value``, or removed if _DEL."""
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DEL:
        node.pop(last, None)
    else:
        node[last] = value
    return out


_DEL = object()

# ---------------------------------------------------------------------------- accepted

ACCEPTED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "ocsf_auth",
        OCSF_AUTH,
        {
            "event_id": "evt-0001",
            "kind": EventKind.AUTH,
            "ts_ms": T0,
            "entity": "u-123",
            "entity_kind": EntityKind.USER,
            "entity_class": EntityClass.ADMIN,
            "source_format": "ocsf",
            "user": "u-123",
            "user_type": "Admin",
            "activity": 1,
            "success": True,
            "status_detail": "Authentication succeeded",
            "is_mfa": True,
            "session_id": "sess-1",
            "service": "okta",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0",
            "src_ip": "203.0.113.77",
            "src_prefix": "203.0.113.0/24",
            "src_country": "DE",
            "src_city": "Berlin",
            "src_lat": 52.52,
            "src_lon": 13.405,
            "src_asn": 3320,
            "src_as_name": "Deutsche Telekom AG",
            "device_id": "dev-42",
            "src_hostname": "alice-laptop",
            "dst_ip": "10.0.0.5",
            "dst_hostname": "sso.example.com",
            "dst_port": 443,
            "dst_internal": True,
            "protocol": None,
            "direction": None,
            "bytes_in": None,
        },
    ),
    (
        "ocsf_network_user",
        OCSF_NET,
        {
            "event_id": "net-77",
            "kind": EventKind.NETWORK,
            "entity": "svc-backup",
            "entity_kind": EntityKind.USER,
            "entity_class": EntityClass.SERVICE,
            "user": "svc-backup",
            "user_type": "Service",
            "activity": 6,
            "device_id": "host-17",
            "src_hostname": "backup-01",
            "src_ip": "2001:db8:abcd:12::7",
            "src_prefix": "2001:db8:abcd::/48",
            "src_country": "US",
            "src_asn": 16509,
            "dst_ip": "198.51.100.20",
            "dst_port": 8443,
            "dst_hostname": "files.example.net",
            "dst_country": "NL",
            "dst_asn": 1136,
            "dst_internal": True,  # 198.51.100.0/24 is TEST-NET-2: private, not global
            "protocol": "tcp",
            "direction": 2,
            "bytes_in": 1200,
            "bytes_out": 987654,
            "packets_in": 10,
            "packets_out": 700,
            "duration_ms": 5300,
            "session_id": "tcp-sess-5",
            "user_agent": "curl/8.5.0",
            "success": None,
            "is_mfa": None,
        },
    ),
    (
        "ocsf_network_device",
        OCSF_NET_DEVICE,
        {
            "kind": EventKind.NETWORK,
            "ts_ms": T0 + 1,
            "entity": "ws-12",
            "entity_kind": EntityKind.DEVICE,
            "entity_class": EntityClass.DEVICE,
            "user": None,
            "user_type": None,
            "device_id": None,
            "src_hostname": "ws-12",
            "src_prefix": "10.1.2.0/24",
            "direction": 3,
            "dst_internal": True,
            "bytes_out": 42,
            "bytes_in": None,
        },
    ),
    (
        "ecs_auth",
        ECS_AUTH,
        {
            "event_id": "ecs-1",
            "kind": EventKind.AUTH,
            "ts_ms": T0,
            "entity": "bob",
            "entity_kind": EntityKind.USER,
            "entity_class": EntityClass.VENDOR,
            "source_format": "ecs",
            "user": "bob",
            "user_type": "Contractor",
            "activity": 1,
            "success": False,
            "status_detail": "bad password",
            "is_mfa": None,
            "session_id": "s-99",
            "service": "vpn",
            "user_agent": "Mozilla/5.0 Safari",
            "src_ip": "192.0.2.44",
            "src_prefix": "192.0.2.0/24",
            "src_country": "FR",
            "src_city": "Paris",
            "src_lat": 48.85,
            "src_lon": 2.35,
            "src_asn": 3215,
            "src_as_name": "Orange",
            "device_id": "mac-7",
            "src_hostname": "bob-mac",
            "dst_ip": None,
            "dst_internal": None,
        },
    ),
    (
        "ecs_network",
        ECS_NET,
        {
            "kind": EventKind.NETWORK,
            "ts_ms": T0,
            "entity": "h-1",
            "entity_kind": EntityKind.DEVICE,
            "entity_class": EntityClass.DEVICE,
            "source_format": "ecs",
            "device_id": "h-1",
            "src_ip": "10.0.0.8",
            "dst_ip": "8.8.8.8",
            "dst_port": 53,
            "dst_hostname": "dns.google",
            "dst_country": "US",
            "dst_asn": 15169,
            "dst_internal": False,
            "protocol": "udp",
            "direction": 2,
            "bytes_out": 100,
            "bytes_in": 300,
            "packets_out": 2,
            "packets_in": 3,
            "duration_ms": 2500,
            "activity": None,
            "success": None,
        },
    ),
    (
        "native_auth",
        NATIVE_AUTH,
        {
            "event_id": "n-1",
            "kind": EventKind.AUTH,
            "ts_ms": T0,
            "entity": "carol",
            "entity_kind": EntityKind.USER,
            "entity_class": EntityClass.VENDOR,
            "source_format": "native",
            "user_type": "vendor",
            "device_id": "lap-3",
            "success": True,
            "is_mfa": False,
            "session_id": "sess-c",
            "service": "jira",
            "user_agent": "Mozilla/5.0",
            "src_ip": "2001:db8:1::5",
            "src_prefix": "2001:db8:1::/48",
            "src_country": "GB",
            "src_city": "London",
            "src_lat": 51.5,
            "src_lon": -0.12,
            "src_asn": 2856,
            "src_as_name": "BT",
            "activity": 1,
        },
    ),
    (
        "native_network",
        NATIVE_NET,
        {
            "kind": EventKind.NETWORK,
            "ts_ms": T0,
            "entity": "iot-cam-4",
            "entity_kind": EntityKind.DEVICE,
            "entity_class": EntityClass.DEVICE,
            "source_format": "native",
            "user": None,
            "device_id": "iot-cam-4",
            "src_prefix": "10.20.30.0/24",
            "dst_ip": "203.0.113.9",
            "dst_hostname": "cdn.example.org",
            "dst_port": 443,
            "dst_country": "SG",
            "dst_asn": 13335,
            "dst_internal": True,  # TEST-NET-3 counts as private in ipaddress
            "protocol": "tcp",
            "direction": 2,
            "bytes_in": 10,
            "bytes_out": 20,
            "packets_in": 1,
            "packets_out": 2,
            "duration_ms": 1500,
        },
    ),
]


@pytest.mark.parametrize(
    ("doc", "expected"), [a[1:] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED]
)
def test_accepted(doc: dict[str, Any], expected: dict[str, Any]) -> None:
    ev = parse_event(_dumps(doc))
    assert isinstance(ev, Event)
    got = {name: getattr(ev, name) for name in expected}
    assert got == expected
    # str input gives the same event
    assert parse_event(_dumps(doc).decode()) == ev


# ---------------------------------------------------------------------------- rejected

REJECTED: list[tuple[str, bytes | str, str]] = [
    # document level
    ("too_large", b'{"kind": "auth", "pad": "' + b"x" * MAX_EVENT_BYTES + b'"}', "too_large"),
    ("too_large_str", "x" * (MAX_EVENT_BYTES + 1), "too_large"),
    ("not_object_list", b"[1,2]", "not_object"),
    ("not_object_scalar", b'"hello"', "not_object"),
    ("invalid_utf8", b"\xff", "not_json"),
    ("empty", b"", "not_json"),
    ("truncated", b'{"kind": "auth"', "not_json"),
    ("nan_literal", b'{"kind": "native", "lat": NaN}', "not_json"),
    ("infinity_literal", b'{"time": Infinity}', "not_json"),
    ("float_overflow", b'{"time": 1e400}', "not_json"),
    ("lone_surrogate_str", '{"kind": "auth", "user": "\ud800"}', "not_json"),
    ("too_deep", b"[" * 2000 + b"]" * 2000, "not_json"),
    # form detection
    ("ocsf_other_class", _dumps({"class_uid": 1001}), "unknown_class"),
    ("ocsf_class_as_string", _dumps(with_(OCSF_AUTH, "class_uid", "3002")), "unknown_class"),
    ("ocsf_class_as_bool", _dumps(with_(OCSF_AUTH, "class_uid", True)), "unknown_class"),
    ("ocsf_class_null", _dumps(with_(OCSF_AUTH, "class_uid", None)), "unknown_class"),
    ("ecs_other_category", _dumps(with_(ECS_AUTH, "event.category", ["process"])), "unknown_class"),
    ("ecs_no_category", _dumps(with_(ECS_AUTH, "event.category", _DEL)), "unknown_class"),
    ("native_other_kind", _dumps(with_(NATIVE_AUTH, "kind", "dns")), "unknown_class"),
    ("empty_object", b"{}", "unknown_class"),
    # entity
    ("ocsf_no_user", _dumps(with_(OCSF_AUTH, "user", _DEL)), "missing_entity"),
    (
        "ocsf_empty_user_id",
        _dumps(with_(OCSF_AUTH, "user", {"uid": "", "name": "", "email_addr": None})),
        "missing_entity",
    ),
    (
        "ocsf_net_no_actor_no_src",
        _dumps(with_(OCSF_NET_DEVICE, "src_endpoint", _DEL)),
        "missing_entity",
    ),
    ("ecs_auth_no_user", _dumps(with_(ECS_AUTH, "user", {"roles": ["admin"]})), "missing_entity"),
    ("native_auth_no_user", _dumps(with_(NATIVE_AUTH, "user", "")), "missing_entity"),
    (
        "native_net_nothing",
        _dumps({"kind": "network", "ts": T0, "dst_ip": "10.0.0.1"}),
        "missing_entity",
    ),
    # time
    ("ocsf_no_time", _dumps(with_(OCSF_AUTH, "time", _DEL)), "bad_time"),
    ("ocsf_time_string", _dumps(with_(OCSF_AUTH, "time", "2024-05-01T00:00:00Z")), "bad_time"),
    ("ocsf_time_year_2200", _dumps(with_(OCSF_AUTH, "time", 7_258_118_400_000)), "bad_time"),
    ("ocsf_time_negative", _dumps(with_(OCSF_AUTH, "time", -1)), "bad_time"),
    ("ocsf_time_bool", _dumps(with_(OCSF_AUTH, "time", True)), "bad_time"),
    ("ocsf_time_over_64_bit", b'{"class_uid": 3002, "time": 99999999999999999999999}', "bad_time"),
    ("ecs_time_garbage", _dumps(with_(ECS_AUTH, "@timestamp", "yesterday")), "bad_time"),
    ("ecs_time_number", _dumps(with_(ECS_AUTH, "@timestamp", T0)), "bad_time"),
    (
        "ecs_time_year_2200",
        _dumps(with_(ECS_AUTH, "@timestamp", "2200-01-01T00:00:00Z")),
        "bad_time",
    ),
    (
        "ecs_time_before_1970",
        _dumps(with_(ECS_AUTH, "@timestamp", "1969-12-31T23:59:59Z")),
        "bad_time",
    ),
    ("native_time_list", _dumps(with_(NATIVE_AUTH, "ts", [T0])), "bad_time"),
    # bad fields: OCSF
    (
        "bool_as_int_port",
        _dumps(with_(OCSF_AUTH, "dst_endpoint.port", True)),
        "bad_field:dst_endpoint.port",
    ),
    (
        "port_out_of_range",
        _dumps(with_(OCSF_AUTH, "dst_endpoint.port", 70000)),
        "bad_field:dst_endpoint.port",
    ),
    (
        "port_over_64_bit",
        b'{"class_uid": 3002, "time": 1, "user": {"uid": "a"},'
        b' "dst_endpoint": {"port": 18446744073709551616}}',
        "bad_field:dst_endpoint.port",
    ),
    ("bool_as_int_status", _dumps(with_(OCSF_AUTH, "status_id", False)), "bad_field:status_id"),
    (
        "bool_as_int_activity",
        _dumps(with_(OCSF_AUTH, "activity_id", True)),
        "bad_field:activity_id",
    ),
    (
        "bad_ip",
        _dumps(with_(OCSF_AUTH, "src_endpoint.ip", "999.1.1.1")),
        "bad_field:src_endpoint.ip",
    ),
    (
        "ip_as_int",
        _dumps(with_(OCSF_AUTH, "src_endpoint.ip", 167772161)),
        "bad_field:src_endpoint.ip",
    ),
    (
        "bad_dst_ip",
        _dumps(with_(OCSF_AUTH, "dst_endpoint.ip", "10.0.0.256")),
        "bad_field:dst_endpoint.ip",
    ),
    (
        "lat_out_of_range",
        _dumps(with_(OCSF_AUTH, "src_endpoint.location.lat", 91.0)),
        "bad_field:src_endpoint.location.lat",
    ),
    (
        "long_out_of_range",
        _dumps(with_(OCSF_AUTH, "src_endpoint.location.long", -180.5)),
        "bad_field:src_endpoint.location.long",
    ),
    (
        "lat_string",
        _dumps(with_(OCSF_AUTH, "src_endpoint.location.lat", "52.5")),
        "bad_field:src_endpoint.location.lat",
    ),
    (
        "country_lower",
        _dumps(with_(OCSF_AUTH, "src_endpoint.location.country", "de")),
        "bad_field:src_endpoint.location.country",
    ),
    (
        "country_long",
        _dumps(with_(OCSF_AUTH, "src_endpoint.location.country", "DEU")),
        "bad_field:src_endpoint.location.country",
    ),
    (
        "asn_negative",
        _dumps(with_(OCSF_AUTH, "src_endpoint.autonomous_system.number", -1)),
        "bad_field:src_endpoint.autonomous_system.number",
    ),
    (
        "asn_too_big",
        _dumps(with_(OCSF_AUTH, "src_endpoint.autonomous_system.number", 2**32)),
        "bad_field:src_endpoint.autonomous_system.number",
    ),
    (
        "asn_word",
        _dumps(with_(OCSF_AUTH, "src_endpoint.autonomous_system.number", "AS3320")),
        "bad_field:src_endpoint.autonomous_system.number",
    ),
    (
        "src_endpoint_not_object",
        _dumps(with_(OCSF_AUTH, "src_endpoint", "1.2.3.4")),
        "bad_field:src_endpoint",
    ),
    ("user_not_object", _dumps(with_(OCSF_AUTH, "user", "alice")), "bad_field:user"),
    ("metadata_not_object", _dumps(with_(OCSF_AUTH, "metadata", ["x"])), "bad_field:metadata"),
    ("user_uid_int", _dumps(with_(OCSF_AUTH, "user.uid", 123)), "bad_field:user.uid"),
    (
        "user_name_too_long",
        _dumps(with_(OCSF_AUTH, "user.name", "a" * 1025)),
        "bad_field:user.name",
    ),
    (
        "user_type_id_string",
        _dumps(with_(with_(OCSF_AUTH, "user.type", _DEL), "user.type_id", "2")),
        "bad_field:user.type_id",
    ),
    ("is_mfa_int", _dumps(with_(OCSF_AUTH, "is_mfa", 1)), "bad_field:is_mfa"),
    ("metadata_uid_float", _dumps(with_(OCSF_AUTH, "metadata.uid", 1.5)), "bad_field:metadata.uid"),
    (
        "ua_too_long",
        _dumps(with_(OCSF_AUTH, "http_request.user_agent", "u" * 1025)),
        "bad_field:http_request.user_agent",
    ),
    (
        "bytes_negative",
        _dumps(with_(OCSF_NET, "traffic.bytes_out", -5)),
        "bad_field:traffic.bytes_out",
    ),
    (
        "bytes_string",
        _dumps(with_(OCSF_NET, "traffic.bytes_in", "100")),
        "bad_field:traffic.bytes_in",
    ),
    (
        "bytes_bool",
        _dumps(with_(OCSF_NET, "traffic.packets_in", True)),
        "bad_field:traffic.packets_in",
    ),
    ("traffic_not_object", _dumps(with_(OCSF_NET, "traffic", 5)), "bad_field:traffic"),
    ("duration_negative_float", _dumps(with_(OCSF_NET, "duration", -0.5)), "bad_field:duration"),
    (
        "direction_float",
        _dumps(with_(OCSF_NET, "connection_info.direction_id", 2.0)),
        "bad_field:connection_info.direction_id",
    ),
    (
        "protocol_int",
        _dumps(with_(OCSF_NET, "connection_info.protocol_name", 6)),
        "bad_field:connection_info.protocol_name",
    ),
    (
        "dst_country_lower",
        _dumps(with_(OCSF_NET, "dst_endpoint.location.country", "nl")),
        "bad_field:dst_endpoint.location.country",
    ),
    ("actor_user_not_object", _dumps(with_(OCSF_NET, "actor.user", [])), "bad_field:actor.user"),
    # bad fields: ECS (ECS dotted names)
    ("ecs_bad_ip", _dumps(with_(ECS_AUTH, "source.ip", "not-an-ip")), "bad_field:source.ip"),
    (
        "ecs_outcome_other",
        _dumps(with_(ECS_AUTH, "event.outcome", "maybe")),
        "bad_field:event.outcome",
    ),
    (
        "ecs_lon_out_of_range",
        _dumps(with_(ECS_AUTH, "source.geo.location.lon", 181)),
        "bad_field:source.geo.location.lon",
    ),
    (
        "ecs_roles_not_list",
        _dumps(with_(ECS_AUTH, "user.roles", {"admin": True})),
        "bad_field:user.roles",
    ),
    ("ecs_event_type_int", _dumps(with_(ECS_AUTH, "event.type", [1])), "bad_field:event.type"),
    (
        "ecs_dst_port_string",
        _dumps(with_(ECS_NET, "destination.port", "53")),
        "bad_field:destination.port",
    ),
    (
        "ecs_source_bytes_float_nan_free",
        _dumps(with_(ECS_NET, "source.bytes", -1)),
        "bad_field:source.bytes",
    ),
    (
        "ecs_direction_int",
        _dumps(with_(ECS_NET, "network.direction", 2)),
        "bad_field:network.direction",
    ),
    (
        "ecs_duration_string",
        _dumps(with_(ECS_NET, "event.duration", "2s")),
        "bad_field:event.duration",
    ),
    # bad fields: native
    (
        "native_bad_direction",
        _dumps(with_(NATIVE_NET, "direction", "sideways")),
        "bad_field:direction",
    ),
    ("native_bad_activity", _dumps(with_(NATIVE_AUTH, "activity", 1)), "bad_field:activity"),
    ("native_ok_string", _dumps(with_(NATIVE_AUTH, "ok", "true")), "bad_field:ok"),
    ("native_bad_dst_ip", _dumps(with_(NATIVE_NET, "dst_ip", "::g")), "bad_field:dst_ip"),
    ("native_lat_bool", _dumps(with_(NATIVE_AUTH, "lat", True)), "bad_field:lat"),
    ("native_dst_asn_float", _dumps(with_(NATIVE_NET, "dst_asn", 13335.0)), "bad_field:dst_asn"),
]


@pytest.mark.parametrize(("raw", "reason"), [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED])
def test_rejected(raw: bytes | str, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_event(raw)
    assert info.value.reason == reason


def test_every_reason_code_is_covered() -> None:
    codes = {r[2].split(":")[0] for r in REJECTED}
    assert codes == {
        "not_json",
        "not_object",
        "too_large",
        "unknown_class",
        "missing_entity",
        "bad_time",
        "bad_field",
    }


def test_error_message_never_contains_content() -> None:
    marker = "content-marker-7f3a"
    for path in ("user.uid", "src_endpoint.ip", "src_endpoint.location.country", "status_id"):
        with pytest.raises(ParseError) as info:
            parse_event(_dumps(with_(OCSF_AUTH, path, [marker])))
        assert marker not in str(info.value)
        assert marker not in info.value.detail
        assert info.value.reason == "bad_field:" + path


def test_parse_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        parse_event(b"nope")


# ---------------------------------------------------------------------------- missing values


def test_missing_optional_fields_are_none() -> None:
    ev = parse_event(_dumps({"class_uid": 3002, "time": T0, "user": {"name": "dave"}}))
    assert ev.entity == "dave"
    assert ev.entity_class is EntityClass.EMPLOYEE
    optional = [
        name
        for name in Event._fields
        if name
        not in {
            "event_id",
            "kind",
            "ts_ms",
            "entity",
            "entity_kind",
            "entity_class",
            "source_format",
            "user",
        }
    ]
    assert optional  # sanity
    for name in optional:
        assert getattr(ev, name) is None, name


def test_null_counts_as_missing() -> None:
    doc = with_(OCSF_NET, "traffic", {"bytes_in": None, "bytes_out": 0})
    ev = parse_event(_dumps(doc))
    assert ev.bytes_in is None
    assert ev.bytes_out == 0  # zero is a value, not missing


def test_empty_identifier_falls_back_to_next() -> None:
    doc = with_(OCSF_AUTH, "user", {"uid": "", "name": "alice"})
    assert parse_event(_dumps(doc)).entity == "alice"
    doc = with_(OCSF_AUTH, "user", {"email_addr": "a@example.com"})
    assert parse_event(_dumps(doc)).entity == "a@example.com"


# ---------------------------------------------------------------------------- event ids


def test_derived_id_is_stable_across_key_order_and_whitespace() -> None:
    doc = with_(OCSF_AUTH, "metadata.uid", _DEL)
    a = parse_event(orjson.dumps(doc))
    reordered = dict(reversed(list(doc.items())))
    reordered["user"] = dict(reversed(list(doc["user"].items())))
    b = parse_event(orjson.dumps(reordered, option=orjson.OPT_INDENT_2))
    assert a.event_id == b.event_id
    assert a.event_id.startswith("sha256:")
    assert len(a.event_id) == len("sha256:") + 32
    c = parse_event(orjson.dumps(with_(doc, "user.name", "alicia")))
    assert c.event_id != a.event_id


def test_derived_id_for_deeply_nested_document() -> None:
    deep = b'{"kind": "auth", "ts": 1, "user": "u", "x": ' + b"[" * 600 + b"]" * 600 + b"}"
    ev = parse_event(deep)
    assert ev.event_id.startswith("sha256:")
    assert parse_event(deep).event_id == ev.event_id


def test_explicit_ids() -> None:
    assert parse_event(_dumps(with_(OCSF_AUTH, "metadata.uid", 12345))).event_id == "12345"
    derived = parse_event(_dumps(with_(OCSF_AUTH, "metadata.uid", "")))
    assert derived.event_id.startswith("sha256:")
    assert parse_event(_dumps(with_(ECS_NET, "event.id", "e-5"))).event_id == "e-5"


# ---------------------------------------------------------------------------- field details


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("Admin", EntityClass.ADMIN),
        ("ADMINISTRATOR", EntityClass.ADMIN),
        ("System", EntityClass.SERVICE),
        ("service_account", EntityClass.SERVICE),
        ("ServiceAccount", EntityClass.SERVICE),
        ("Third-Party", EntityClass.VENDOR),
        ("contractor", EntityClass.VENDOR),
        ("partner", EntityClass.VENDOR),
        ("External", EntityClass.VENDOR),
        ("User", EntityClass.EMPLOYEE),
        ("", EntityClass.EMPLOYEE),
        ("intern", EntityClass.EMPLOYEE),
    ],
)
def test_entity_class_from_user_type(tag: str, expected: EntityClass) -> None:
    ev = parse_event(_dumps(with_(OCSF_AUTH, "user.type", tag)))
    assert ev.entity_class is expected
    assert ev.user_type == tag


@pytest.mark.parametrize(
    ("type_id", "user_type", "expected"),
    [
        (1, "User", EntityClass.EMPLOYEE),
        (2, "Admin", EntityClass.ADMIN),
        (3, "System", EntityClass.SERVICE),
        (99, None, EntityClass.EMPLOYEE),
    ],
)
def test_ocsf_user_type_id(type_id: int, user_type: str | None, expected: EntityClass) -> None:
    doc = with_(with_(OCSF_AUTH, "user.type", _DEL), "user.type_id", type_id)
    ev = parse_event(_dumps(doc))
    assert (ev.user_type, ev.entity_class) == (user_type, expected)


def test_ecs_roles_most_privileged_wins() -> None:
    ev = parse_event(_dumps(with_(ECS_AUTH, "user.roles", ["vendor", "Administrator"])))
    assert (ev.entity_class, ev.user_type) == (EntityClass.ADMIN, "Administrator")
    ev = parse_event(_dumps(with_(ECS_AUTH, "user.roles", _DEL)))
    assert (ev.entity_class, ev.user_type) == (EntityClass.EMPLOYEE, None)


@pytest.mark.parametrize(
    ("event_type", "action", "activity"),
    [
        (["start"], None, 1),
        (None, "Sign-In", 1),
        (None, "user_logon", 1),
        (["end"], None, 2),
        (None, "logout", 2),
        (["info"], "password-change", None),
        (None, None, None),
    ],
)
def test_ecs_auth_activity(event_type: Any, action: Any, activity: int | None) -> None:
    doc = with_(with_(ECS_AUTH, "event.type", event_type), "event.action", action)
    assert parse_event(_dumps(doc)).activity == activity


def test_ecs_status_detail_and_outcome() -> None:
    doc = with_(with_(ECS_AUTH, "event.reason", _DEL), "event.outcome", "unknown")
    ev = parse_event(_dumps(doc))
    assert (ev.success, ev.status_detail) == (None, "user-login")
    ev = parse_event(_dumps(with_(ECS_AUTH, "event.outcome", "success")))
    assert ev.success is True


def test_ecs_category_forms() -> None:
    both = with_(ECS_NET, "event.category", ["network", "authentication"])
    both = with_(both, "user", {"id": "u1"})
    assert parse_event(_dumps(both)).kind is EventKind.AUTH
    assert parse_event(_dumps(with_(ECS_NET, "event.category", ["network"]))).kind is (
        EventKind.NETWORK
    )


def test_ecs_network_entity_fallbacks_and_protocol() -> None:
    doc = with_(with_(ECS_NET, "host", _DEL), "network", {"protocol": "HTTP"})
    ev = parse_event(_dumps(doc))
    assert (ev.entity, ev.entity_kind, ev.device_id) == ("10.0.0.8", EntityKind.DEVICE, None)
    assert (ev.protocol, ev.direction) == ("http", None)
    doc = with_(ECS_NET, "network.direction", "sideways")
    assert parse_event(_dumps(doc)).direction is None


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2024-05-01T10:40:00.123Z", T0),
        ("2024-05-01T10:40:00.123", T0),  # naive means UTC
        ("2024-05-01T05:40:00.123-05:00", T0),
        ("2024-05-01T10:40:00.123456789Z", T0),
    ],
)
def test_iso_times(ts: str, expected: int) -> None:
    assert parse_event(_dumps(with_(ECS_AUTH, "@timestamp", ts))).ts_ms == expected
    assert parse_event(_dumps(with_(NATIVE_AUTH, "ts", ts))).ts_ms == expected


def test_time_bounds() -> None:
    assert parse_event(_dumps(with_(OCSF_AUTH, "time", 0))).ts_ms == 0
    last = 4_102_444_800_000 - 1
    assert parse_event(_dumps(with_(OCSF_AUTH, "time", last))).ts_ms == last
    with pytest.raises(ParseError, match="bad_time"):
        parse_event(_dumps(with_(OCSF_AUTH, "time", last + 1)))


@pytest.mark.parametrize(
    ("dst_ip", "direction", "internal"),
    [
        ("10.1.1.1", 2, True),
        ("127.0.0.1", None, True),
        ("169.254.1.1", None, True),
        ("fe80::1", None, True),
        ("8.8.8.8", 2, False),
        ("2606:4700::1111", 1, False),
        ("8.8.8.8", 3, True),  # lateral wins
        ("100.64.0.1", None, None),  # shared address space: neither private nor global
        (None, 3, True),
        (None, 2, None),
    ],
)
def test_dst_internal(dst_ip: str | None, direction: int | None, internal: bool | None) -> None:
    doc = with_(OCSF_NET, "dst_endpoint.ip", dst_ip)
    doc = with_(doc, "connection_info.direction_id", direction)
    assert parse_event(_dumps(doc)).dst_internal is internal


def test_ip_normalization() -> None:
    doc = with_(OCSF_AUTH, "src_endpoint.ip", "2001:DB8:0:0::0001")
    ev = parse_event(_dumps(doc))
    assert (ev.src_ip, ev.src_prefix) == ("2001:db8::1", "2001:db8::/48")


def test_direction_unknown_and_other_codes_are_none() -> None:
    for code in (0, 99):
        doc = with_(OCSF_NET, "connection_info.direction_id", code)
        assert parse_event(_dumps(doc)).direction is None


def test_ocsf_network_device_fallbacks() -> None:
    doc = with_(OCSF_NET_DEVICE, "src_endpoint", {"ip": "10.1.2.3"})
    doc = with_(doc, "device", {"uid": "d-1"})
    ev = parse_event(_dumps(doc))
    assert (ev.entity, ev.entity_kind, ev.device_id) == ("10.1.2.3", EntityKind.DEVICE, "d-1")
    doc = with_(OCSF_NET_DEVICE, "src_endpoint.uid", "uid-1")
    assert parse_event(_dumps(doc)).entity == "uid-1"


def test_native_unknown_keys_ignored_and_str_input() -> None:
    raw = '{"kind":"auth","ts":0,"user":"zoë","v2_field":[1,{"a":null}]}'
    ev = parse_event(raw)
    assert (ev.entity, ev.ts_ms, ev.entity_class) == ("zoë", 0, EntityClass.EMPLOYEE)


def test_native_network_with_user_and_fallbacks() -> None:
    ev = parse_event(_dumps(with_(NATIVE_NET, "user", "erin")))
    assert (ev.entity, ev.entity_kind, ev.entity_class) == (
        "erin",
        EntityKind.USER,
        EntityClass.EMPLOYEE,
    )
    ev = parse_event(_dumps(with_(NATIVE_NET, "device", _DEL)))
    assert (ev.entity, ev.entity_kind) == ("10.20.30.40", EntityKind.DEVICE)
    ev = parse_event(_dumps(with_(with_(NATIVE_NET, "device", _DEL), "host", "cam")))
    assert ev.entity == "cam"


def test_numeric_coercions() -> None:
    ev = parse_event(_dumps(with_(OCSF_NET, "duration", 12.9)))
    assert ev.duration_ms == 12
    ev = parse_event(_dumps(with_(OCSF_AUTH, "src_endpoint.location.lat", -90)))
    assert ev.src_lat == -90.0
    assert isinstance(ev.src_lat, float)


def test_event_is_frozen() -> None:
    ev = parse_event(_dumps(NATIVE_AUTH))
    with pytest.raises(AttributeError):
        ev.entity = "mallory"  # type: ignore[misc]
    assert ev.entity_key == "user:carol"


# ---------------------------------------------------------------------------- fuzzing


def _parse_or_reject(raw: bytes | str) -> None:
    try:
        ev = parse_event(raw)
    except ParseError as exc:
        assert exc.reason
        return
    assert isinstance(ev, Event)
    assert ev.entity
    assert 0 <= ev.ts_ms < 4_102_444_800_000


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "3002", "10.0.0.1", "::1", "DE", "admin", "2024-05-01T00:00:00Z"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "class_uid",
                    "time",
                    "user",
                    "uid",
                    "name",
                    "ip",
                    "kind",
                    "ts",
                    "event",
                    "category",
                    "src_endpoint",
                    "@timestamp",
                    "x",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=100))
def test_fuzz_arbitrary_input(raw: bytes | str) -> None:
    _parse_or_reject(raw)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fuzz_arbitrary_json(value: Any) -> None:
    _parse_or_reject(orjson.dumps(value))


def _paths(doc: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in doc.items():
        path = prefix + key
        out.append(path)
        if isinstance(value, dict):
            out.extend(_paths(value, path + "."))
    return out


_VALID_DOCS = [OCSF_AUTH, OCSF_NET, OCSF_NET_DEVICE, ECS_AUTH, ECS_NET, NATIVE_AUTH, NATIVE_NET]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_paths(OCSF_AUTH)), json_values)
def test_fuzz_ocsf_auth_field_replaced(path: str, value: Any) -> None:
    _parse_or_reject(orjson.dumps(with_(OCSF_AUTH, path, value)))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_any_valid_doc_field_replaced(data: st.DataObject) -> None:
    doc = data.draw(st.sampled_from(_VALID_DOCS))
    path = data.draw(st.sampled_from(_paths(doc)))
    value = data.draw(json_values | st.just(_DEL))
    _parse_or_reject(orjson.dumps(with_(doc, path, value)))
