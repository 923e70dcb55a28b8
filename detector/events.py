"""Events in: the one place where input is validated.

``parse_event(raw)`` turns one JSON document (bytes) into a typed, immutable
:class:`Event`, or raises :class:`ParseError` with a stable reason code.

Accepted forms: OCSF 1.x Authentication (class_uid 3002), OCSF 1.x Network
Activity (class_uid 4001), Elastic Common Schema documents whose
``event.category`` contains ``authentication`` or ``network``, and the compact
native form (``docs/native-format.md``).

Missing optional fields stay ``None``: they are *missing*, never zero.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

import orjson

#: Raw documents larger than this are rejected with ``too_large`` before decoding.
MAX_EVENT_BYTES: Final = 64 * 1024


class EventKind(enum.StrEnum):
    """What an event describes. Stable identifiers: append only."""

    AUTH = "auth"
    NETWORK = "network"


class EntityKind(enum.StrEnum):
    """Whose behaviour the event belongs to. Stable identifiers: append only."""

    USER = "user"
    DEVICE = "device"


class EntityClass(enum.StrEnum):
    """Peer group of an entity, used for thresholds and cold start. Append only.

    Derived from ``user.type`` (OCSF) or the native ``user_type``:
    ``Admin`` -> admin; ``System``/``Service``/service accounts -> service;
    vendor/third-party/contractor tags -> vendor; anything else, or absent,
    -> employee. Entities without a user are devices.
    """

    EMPLOYEE = "employee"
    ADMIN = "admin"
    VENDOR = "vendor"
    SERVICE = "service"
    DEVICE = "device"


class ParseError(ValueError):
    """Raised for every rejected input, with a stable ``reason`` code.

    Reason codes are an API (append only): ``not_json``, ``not_object``,
    ``too_large``, ``unknown_class``, ``missing_entity``, ``bad_time``,
    ``bad_field:<name>`` (``<name>`` is the input's dotted field path).
    ``detail`` is a short human explanation; it never contains the raw event.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Event(NamedTuple):
    """One validated authentication or network event (immutable).

    ``entity`` is the user (auth events, and network events that carry a
    user) or else the device. ``ts_ms`` is event time in epoch milliseconds;
    the engine never reads the wall clock.

    A named tuple rather than a frozen dataclass: it is as immutable, and
    several times cheaper to build on the parse hot path.
    """

    event_id: str
    kind: EventKind
    ts_ms: int
    entity: str
    entity_kind: EntityKind
    entity_class: EntityClass
    source_format: str  # "ocsf", "ecs" or "native"
    user: str | None = None
    user_type: str | None = None  # raw tag as sent, e.g. "Admin", "Vendor"
    # authentication
    activity: int | None = None  # OCSF activity_id: 1 logon, 2 logoff, 99 other
    success: bool | None = None  # status_id 1 -> True, 2 -> False, other -> None
    status_detail: str | None = None
    is_mfa: bool | None = None
    session_id: str | None = None
    service: str | None = None
    user_agent: str | None = None
    # source
    src_ip: str | None = None
    src_prefix: str | None = None  # "/24" of IPv4 ("10.1.2.0/24"), "/48" of IPv6
    src_country: str | None = None  # ISO 3166-1 alpha-2, upper case
    src_city: str | None = None
    src_lat: float | None = None
    src_lon: float | None = None
    src_asn: int | None = None
    src_as_name: str | None = None
    device_id: str | None = None
    src_hostname: str | None = None
    # destination
    dst_ip: str | None = None
    dst_hostname: str | None = None
    dst_port: int | None = None
    dst_country: str | None = None
    dst_asn: int | None = None
    dst_internal: bool | None = None  # lateral direction or private/loopback dst IP
    # network
    protocol: str | None = None  # lower case, e.g. "tcp"
    direction: int | None = None  # OCSF direction_id: 1 inbound, 2 outbound, 3 lateral
    bytes_in: int | None = None
    bytes_out: int | None = None
    packets_in: int | None = None
    packets_out: int | None = None
    duration_ms: int | None = None

    @property
    def entity_key(self) -> str:
        """Return the namespaced state key, e.g. ``user:alice`` or ``device:ws-12``."""
        return self.entity_kind + ":" + self.entity


# --------------------------------------------------------------------------- parsing
#
# Hot path. Every JSON value comes from ``orjson.loads``, so exact ``type(x) is T``
# checks are correct (no subclasses) and exclude ``bool`` from ``int`` for free.

#: Longest accepted string field, in characters.
MAX_STR_LEN: Final = 1024
#: Event times must satisfy ``0 <= ts_ms < MAX_TS_MS`` (2100-01-01T00:00:00Z).
MAX_TS_MS: Final = 4_102_444_800_000
_MAX_COUNT: Final = 2**63 - 1  # bytes/packets/duration must fit an int64 column
_MAX_ASN: Final = 4_294_967_295
_MAX_CODE: Final = 2**31 - 1  # activity_id and friends: a non-negative int32
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)

_OCSF_AUTH: Final = 3002
_OCSF_NETWORK: Final = 4001

# Enum members bound to module names: class-attribute access on an Enum is slow
# in Python 3.11 and these are used on every event.
_AUTH: Final = EventKind.AUTH
_NETWORK: Final = EventKind.NETWORK
_USER: Final = EntityKind.USER
_DEVICE_KIND: Final = EntityKind.DEVICE
_EMPLOYEE: Final = EntityClass.EMPLOYEE
_DEVICE_CLASS: Final = EntityClass.DEVICE

#: Read-only stand-in for an absent nested object, so lookups below it yield None.
_EMPTY: Final[dict[str, Any]] = {}

_CLASS_BY_TAG: Final[dict[str, EntityClass]] = {
    "admin": EntityClass.ADMIN,
    "administrator": EntityClass.ADMIN,
    "system": EntityClass.SERVICE,
    "service": EntityClass.SERVICE,
    "service_account": EntityClass.SERVICE,
    "serviceaccount": EntityClass.SERVICE,
    "service-account": EntityClass.SERVICE,
    "vendor": EntityClass.VENDOR,
    "third-party": EntityClass.VENDOR,
    "thirdparty": EntityClass.VENDOR,
    "third_party": EntityClass.VENDOR,
    "contractor": EntityClass.VENDOR,
    "partner": EntityClass.VENDOR,
    "external": EntityClass.VENDOR,
}
#: ECS ``user.roles``: when several roles match, the most privileged class wins.
_ROLE_PRIORITY: Final[dict[EntityClass, int]] = {
    EntityClass.ADMIN: 3,
    EntityClass.SERVICE: 2,
    EntityClass.VENDOR: 1,
}
#: OCSF ``user.type_id`` -> the ``user.type`` caption it stands for.
_OCSF_USER_TYPE_BY_ID: Final[dict[int, str]] = {1: "User", 2: "Admin", 3: "System"}
_ECS_DIRECTION: Final[dict[str, int]] = {
    "inbound": 1,
    "ingress": 1,
    "outbound": 2,
    "egress": 2,
    "internal": 3,
}
_NATIVE_DIRECTION: Final[dict[str, int]] = {"inbound": 1, "outbound": 2, "lateral": 3}
_NATIVE_ACTIVITY: Final[dict[str, int]] = {"logon": 1, "logoff": 2, "other": 99}
_NATIVE_KIND: Final[dict[str, EventKind]] = {
    "auth": EventKind.AUTH,
    "network": EventKind.NETWORK,
}
_LOGON_WORDS: Final = ("logon", "login", "sign-in", "signin")
_LOGOFF_WORDS: Final = ("logoff", "logout", "sign-out", "signout")

_IpInfo = tuple[str, str, bool | None]  # (normalized, prefix, internal)

#: Builds an Event from all its values in field order, without the keyword
#: matching of ``Event(...)`` (39 fields: that alone was ~3 us per event).
_make_event: Final = Event._make


def _bad(path: str, why: str) -> ParseError:
    return ParseError("bad_field:" + path, why)


def _obj(parent: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    """Nested object at ``key``; the shared empty dict when absent or null."""
    v = parent.get(key)
    if v is None:
        return _EMPTY
    if type(v) is not dict:
        raise _bad(path, "expected an object")
    return v


def _str(parent: dict[str, Any], key: str, path: str) -> str | None:
    v = parent.get(key)
    if v is None:
        return None
    if type(v) is not str:
        raise _bad(path, "expected a string")
    if len(v) > MAX_STR_LEN:
        raise _bad(path, "string too long")
    return v


def _ident(parent: dict[str, Any], key: str, path: str) -> str | None:
    """Identifier string: like :func:`_str`, but an empty string counts as missing."""
    v = parent.get(key)
    if v is None or v == "":
        return None
    if type(v) is not str:
        raise _bad(path, "expected a string")
    if len(v) > MAX_STR_LEN:
        raise _bad(path, "string too long")
    return v


def _event_id(parent: dict[str, Any], key: str, path: str) -> str | None:
    """Event id: a non-empty string, or an int (turned into its decimal string)."""
    v = parent.get(key)
    if type(v) is int:
        return str(v)
    return _ident(parent, key, path)


def _lower(parent: dict[str, Any], key: str, path: str) -> str | None:
    v = _str(parent, key, path)
    return None if v is None else v.lower()


def _bool(parent: dict[str, Any], key: str, path: str) -> bool | None:
    v = parent.get(key)
    if v is None or type(v) is bool:
        return v
    raise _bad(path, "expected a boolean")


def _code(parent: dict[str, Any], key: str, path: str) -> int | None:
    """Enumeration code such as ``activity_id``: a non-negative int32."""
    v = parent.get(key)
    if v is None:
        return None
    if type(v) is not int or not 0 <= v <= _MAX_CODE:
        raise _bad(path, "expected a non-negative integer code")
    return v


def _port(parent: dict[str, Any], key: str, path: str) -> int | None:
    v = parent.get(key)
    if v is None:
        return None
    if type(v) is not int or not 0 <= v <= 65535:
        raise _bad(path, "expected an integer port 0..65535")
    return v


def _count(parent: dict[str, Any], key: str, path: str) -> int | None:
    """Non-negative counter (bytes, packets, durations); finite floats are truncated."""
    v = parent.get(key)
    if v is None:
        return None
    t = type(v)
    if (t is not int and t is not float) or not 0 <= v <= _MAX_COUNT:  # NaN fails too
        raise _bad(path, "expected a non-negative number")
    return int(v)


def _asn(parent: dict[str, Any], key: str, path: str) -> int | None:
    v = parent.get(key)
    if v is None:
        return None
    if type(v) is str and 0 < len(v) <= 10 and v.isascii() and v.isdigit():
        v = int(v)
    if type(v) is not int or not 0 <= v <= _MAX_ASN:
        raise _bad(path, "expected an AS number 0..4294967295")
    return v


def _coord(parent: dict[str, Any], key: str, path: str, limit: float) -> float | None:
    v = parent.get(key)
    if v is None:
        return None
    t = type(v)
    if (t is not float and t is not int) or not -limit <= v <= limit:  # NaN fails too
        raise _bad(path, "expected a coordinate in range")
    return float(v)


def _country(parent: dict[str, Any], key: str, path: str) -> str | None:
    v = parent.get(key)
    if v is None:
        return None
    if type(v) is not str or len(v) != 2 or not (v.isascii() and v.isalpha() and v.isupper()):
        raise _bad(path, "expected an upper-case ISO 3166-1 alpha-2 code")
    return v


@functools.lru_cache(maxsize=65536)
def _ip_info(text: str) -> _IpInfo | None:
    """Parse one IP address: (normalized text, /24 or /48 prefix, internal?) or None."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 4:
        prefix = f"{ipaddress.IPv4Address(int(ip) & 0xFFFFFF00)}/24"
    else:
        prefix = f"{ipaddress.IPv6Address(int(ip) >> 80 << 80)}/48"
    internal: bool | None
    if ip.is_private or ip.is_loopback or ip.is_link_local:
        internal = True
    elif ip.is_global:
        internal = False
    else:  # e.g. shared address space 100.64.0.0/10: neither private nor global
        internal = None
    return str(ip), prefix, internal


def _ip(parent: dict[str, Any], key: str, path: str) -> _IpInfo | None:
    v = parent.get(key)
    if v is None:
        return None
    if type(v) is not str or len(v) > MAX_STR_LEN:
        raise _bad(path, "expected an IP address string")
    info = _ip_info(v)
    if info is None:
        raise _bad(path, "not a valid IP address")
    return info


def _ms_from_number(v: Any) -> int | None:
    """Epoch milliseconds from an int or a finite float; None if not a number in range."""
    t = type(v)
    if t is float:
        if not 0.0 <= v < MAX_TS_MS:  # also rejects NaN
            return None
        return int(v)
    if t is int and 0 <= v < MAX_TS_MS:
        return int(v)
    return None


def _ms_from_iso(v: Any) -> int | None:
    """Epoch milliseconds from an ISO 8601 string (naive means UTC); None if invalid."""
    if type(v) is not str or len(v) > MAX_STR_LEN:
        return None
    try:
        dt = datetime.fromisoformat(v)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ms = (dt - _EPOCH) // _ONE_MS
    except (ValueError, OverflowError):
        return None
    return ms if 0 <= ms < MAX_TS_MS else None


def _classify(tag: str | None) -> EntityClass:
    if not tag:
        return _EMPLOYEE
    return _CLASS_BY_TAG.get(tag.lower(), _EMPLOYEE)


def _ocsf_user_type(user: dict[str, Any], path: str) -> str | None:
    """OCSF ``user.type``, else the caption for ``user.type_id`` (1 User, 2 Admin, 3 System)."""
    tag = _str(user, "type", path + ".type")
    if tag is None:
        type_id = _code(user, "type_id", path + ".type_id")
        if type_id is not None:
            tag = _OCSF_USER_TYPE_BY_ID.get(type_id)
    return tag


def _derived_id(doc: dict[str, Any], raw: bytes | bytearray) -> str:
    """Content id: sha256 over the key-sorted compact JSON, so key order is irrelevant."""
    canonical: bytes | bytearray
    try:
        canonical = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError: nesting deeper than dumps allows
        canonical = raw
    return "sha256:" + hashlib.sha256(canonical).hexdigest()[:32]


def _dst_internal(direction: int | None, dst: _IpInfo | None) -> bool | None:
    if direction == 3:
        return True
    return None if dst is None else dst[2]


def _missing_entity(what: str) -> ParseError:
    return ParseError("missing_entity", what)


def _parse_ocsf(doc: dict[str, Any], raw: bytes | bytearray, is_auth: bool) -> Event:
    ts_ms = _ms_from_number(doc.get("time"))
    if ts_ms is None:
        raise ParseError("bad_time", "time must be epoch milliseconds before 2100")
    event_id = _event_id(_obj(doc, "metadata", "metadata"), "uid", "metadata.uid")

    src = _obj(doc, "src_endpoint", "src_endpoint")
    src_ip = _ip(src, "ip", "src_endpoint.ip")
    src_uid = _ident(src, "uid", "src_endpoint.uid")
    src_hostname = _ident(src, "hostname", "src_endpoint.hostname")
    src_loc = _obj(src, "location", "src_endpoint.location")
    src_as = _obj(src, "autonomous_system", "src_endpoint.autonomous_system")
    device_uid = _ident(_obj(doc, "device", "device"), "uid", "device.uid")
    dst = _obj(doc, "dst_endpoint", "dst_endpoint")
    dst_ip = _ip(dst, "ip", "dst_endpoint.ip")

    # authentication only
    success: bool | None = None
    is_mfa: bool | None = None
    status_detail: str | None = None
    service: str | None = None
    # network only
    protocol: str | None = None
    dst_country: str | None = None
    direction: int | None = None
    dst_asn: int | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    packets_in: int | None = None
    packets_out: int | None = None
    duration_ms: int | None = None

    entity_kind = _USER
    if is_auth:
        kind = _AUTH
        user_obj = _obj(doc, "user", "user")
        uid = _ident(user_obj, "uid", "user.uid")
        name = _ident(user_obj, "name", "user.name")
        email = _ident(user_obj, "email_addr", "user.email_addr")
        user_type = _ocsf_user_type(user_obj, "user")
        user = uid or name or email
        status_id = _code(doc, "status_id", "status_id")
        success = True if status_id == 1 else False if status_id == 2 else None
        status_detail = _str(doc, "status_detail", "status_detail")
        is_mfa = _bool(doc, "is_mfa", "is_mfa")
        service = _str(_obj(doc, "service", "service"), "name", "service.name")
        device_id = device_uid or src_uid
        if user is None:
            raise _missing_entity("authentication event without user.uid/name/email_addr")
        entity = user
    else:
        kind = _NETWORK
        actor_user = _obj(_obj(doc, "actor", "actor"), "user", "actor.user")
        uid = _ident(actor_user, "uid", "actor.user.uid")
        name = _ident(actor_user, "name", "actor.user.name")
        user_type = _ocsf_user_type(actor_user, "actor.user")
        user = uid or name
        conn = _obj(doc, "connection_info", "connection_info")
        protocol = _lower(conn, "protocol_name", "connection_info.protocol_name")
        direction_id = _code(conn, "direction_id", "connection_info.direction_id")
        direction = direction_id if direction_id in (1, 2, 3) else None  # 0 unknown, 99 other
        traffic = _obj(doc, "traffic", "traffic")
        bytes_in = _count(traffic, "bytes_in", "traffic.bytes_in")
        bytes_out = _count(traffic, "bytes_out", "traffic.bytes_out")
        packets_in = _count(traffic, "packets_in", "traffic.packets_in")
        packets_out = _count(traffic, "packets_out", "traffic.packets_out")
        duration_ms = _count(doc, "duration", "duration")
        dst_loc = _obj(dst, "location", "dst_endpoint.location")
        dst_country = _country(dst_loc, "country", "dst_endpoint.location.country")
        dst_as = _obj(dst, "autonomous_system", "dst_endpoint.autonomous_system")
        dst_asn = _asn(dst_as, "number", "dst_endpoint.autonomous_system.number")
        device_id = src_uid or device_uid
        if user is not None:
            entity = user
        else:
            device = src_uid or src_hostname or (None if src_ip is None else src_ip[0])
            if device is None:
                raise _missing_entity("network event without actor.user or src_endpoint")
            entity, entity_kind = device, _DEVICE_KIND

    # OCSF puts the session at the top level for Authentication and under
    # the actor for Network Activity.
    session_id = _ident(_obj(doc, "session", "session"), "uid", "session.uid")
    if session_id is None and not is_auth:
        actor = _obj(doc, "actor", "actor")
        session_id = _ident(_obj(actor, "session", "actor.session"), "uid", "actor.session.uid")
    entity_class = _classify(user_type) if entity_kind is _USER else _DEVICE_CLASS
    activity = _code(doc, "activity_id", "activity_id")
    user_agent = _str(
        _obj(doc, "http_request", "http_request"), "user_agent", "http_request.user_agent"
    )
    src_ip_text = None if src_ip is None else src_ip[0]
    src_prefix = None if src_ip is None else src_ip[1]
    src_country = _country(src_loc, "country", "src_endpoint.location.country")
    src_city = _str(src_loc, "city", "src_endpoint.location.city")
    src_lat = _coord(src_loc, "lat", "src_endpoint.location.lat", 90.0)
    src_lon = _coord(src_loc, "long", "src_endpoint.location.long", 180.0)
    src_asn = _asn(src_as, "number", "src_endpoint.autonomous_system.number")
    src_as_name = _str(src_as, "name", "src_endpoint.autonomous_system.name")
    dst_ip_text = None if dst_ip is None else dst_ip[0]
    dst_hostname = _ident(dst, "hostname", "dst_endpoint.hostname")
    dst_port = _port(dst, "port", "dst_endpoint.port")
    dst_internal = _dst_internal(direction, dst_ip)
    event_id = event_id or _derived_id(doc, raw)
    # Positional, in Event's field order: several times cheaper than keywords.
    return _make_event(
        (
            event_id,
            kind,
            ts_ms,
            entity,
            entity_kind,
            entity_class,
            "ocsf",  # source_format
            user,
            user_type,
            activity,
            success,
            status_detail,
            is_mfa,
            session_id,
            service,
            user_agent,
            src_ip_text,  # src_ip
            src_prefix,
            src_country,
            src_city,
            src_lat,
            src_lon,
            src_asn,
            src_as_name,
            device_id,
            src_hostname,
            dst_ip_text,  # dst_ip
            dst_hostname,
            dst_port,
            dst_country,
            dst_asn,
            dst_internal,
            protocol,
            direction,
            bytes_in,
            bytes_out,
            packets_in,
            packets_out,
            duration_ms,
        )
    )


def _ecs_roles(user_obj: dict[str, Any]) -> str | None:
    """The most privileged role in ECS ``user.roles`` that names a peer group, as sent."""
    roles = user_obj.get("roles")
    if roles is None:
        return None
    if type(roles) is str:
        roles = [roles]
    elif type(roles) is not list:
        raise _bad("user.roles", "expected a list of strings")
    best: str | None = None
    best_rank = 0
    for role in roles:
        if type(role) is not str or len(role) > MAX_STR_LEN:
            raise _bad("user.roles", "expected a list of strings")
        cls = _CLASS_BY_TAG.get(role.lower())
        if cls is not None and _ROLE_PRIORITY[cls] > best_rank:
            best, best_rank = role, _ROLE_PRIORITY[cls]
    return best


def _ecs_activity(ev: dict[str, Any], action: str | None) -> int | None:
    """1 logon / 2 logoff from ECS ``event.type`` (start/end) or ``event.action`` words."""
    types = ev.get("type")
    if types is None:
        types = ()
    elif type(types) is str:
        types = (types,)
    elif type(types) is not list or not all(type(t) is str for t in types):
        raise _bad("event.type", "expected a list of strings")
    act = "" if action is None else action.lower()
    if "start" in types or any(w in act for w in _LOGON_WORDS):
        return 1
    if "end" in types or any(w in act for w in _LOGOFF_WORDS):
        return 2
    return None


def _parse_ecs(
    doc: dict[str, Any], raw: bytes | bytearray, ev: dict[str, Any], is_auth: bool
) -> Event:
    ts_ms = _ms_from_iso(doc.get("@timestamp"))
    if ts_ms is None:
        raise ParseError("bad_time", "@timestamp must be an ISO 8601 time before 2100")
    event_id = _event_id(ev, "id", "event.id")
    outcome = _str(ev, "outcome", "event.outcome")
    if outcome is None or outcome == "unknown":
        success = None
    elif outcome == "success":
        success = True
    elif outcome == "failure":
        success = False
    else:
        raise _bad("event.outcome", "expected success, failure or unknown")
    reason = _str(ev, "reason", "event.reason")
    action = _str(ev, "action", "event.action")
    duration_ns = _count(ev, "duration", "event.duration")

    user_obj = _obj(doc, "user", "user")
    uid = _ident(user_obj, "id", "user.id")
    name = _ident(user_obj, "name", "user.name")
    email = _ident(user_obj, "email", "user.email")
    user_type = _ecs_roles(user_obj)
    user = uid or name or email

    source = _obj(doc, "source", "source")
    src_ip = _ip(source, "ip", "source.ip")
    src_geo = _obj(source, "geo", "source.geo")
    src_loc = _obj(src_geo, "location", "source.geo.location")
    src_as = _obj(source, "as", "source.as")
    src_org = _obj(src_as, "organization", "source.as.organization")
    dest = _obj(doc, "destination", "destination")
    dst_ip = _ip(dest, "ip", "destination.ip")

    network = _obj(doc, "network", "network")
    transport = _lower(network, "transport", "network.transport")
    net_protocol = _lower(network, "protocol", "network.protocol")
    direction_text = _str(network, "direction", "network.direction")
    direction = None if direction_text is None else _ECS_DIRECTION.get(direction_text.lower())

    host = _obj(doc, "host", "host")
    host_id = _ident(host, "id", "host.id")
    host_name = _ident(host, "name", "host.name")
    device_id = _ident(_obj(doc, "device", "device"), "id", "device.id")
    service = _str(_obj(doc, "service", "service"), "name", "service.name")
    if service is None:
        service = _str(_obj(doc, "url", "url"), "domain", "url.domain")

    entity_kind = _USER
    if is_auth:
        kind = _AUTH
        activity = _ecs_activity(ev, action)
        if user is None:
            raise _missing_entity("authentication event without user.id/name/email")
        entity = user
    else:
        kind = _NETWORK
        activity = None
        if device_id is None:
            device_id = host_id  # on a network event the host is the source device
        if user is not None:
            entity = user
        else:
            device = host_id or host_name or (None if src_ip is None else src_ip[0])
            if device is None:
                raise _missing_entity("network event without user, host or source.ip")
            entity, entity_kind = device, _DEVICE_KIND

    dst_geo = _obj(dest, "geo", "destination.geo")
    entity_class = _classify(user_type) if entity_kind is _USER else _DEVICE_CLASS
    status_detail = reason if reason is not None else action
    session_id = _ident(_obj(doc, "session", "session"), "id", "session.id")
    user_agent = _str(_obj(doc, "user_agent", "user_agent"), "original", "user_agent.original")
    src_ip_text = None if src_ip is None else src_ip[0]
    src_prefix = None if src_ip is None else src_ip[1]
    src_country = _country(src_geo, "country_iso_code", "source.geo.country_iso_code")
    src_city = _str(src_geo, "city_name", "source.geo.city_name")
    src_lat = _coord(src_loc, "lat", "source.geo.location.lat", 90.0)
    src_lon = _coord(src_loc, "lon", "source.geo.location.lon", 180.0)
    src_asn = _asn(src_as, "number", "source.as.number")
    src_as_name = _str(src_org, "name", "source.as.organization.name")
    src_hostname = _ident(source, "domain", "source.domain")
    dst_ip_text = None if dst_ip is None else dst_ip[0]
    dst_hostname = _ident(dest, "domain", "destination.domain")
    dst_port = _port(dest, "port", "destination.port")
    dst_country = _country(dst_geo, "country_iso_code", "destination.geo.country_iso_code")
    dst_asn = _asn(_obj(dest, "as", "destination.as"), "number", "destination.as.number")
    dst_internal = _dst_internal(direction, dst_ip)
    protocol = transport if transport is not None else net_protocol
    bytes_in = _count(dest, "bytes", "destination.bytes")
    bytes_out = _count(source, "bytes", "source.bytes")
    packets_in = _count(dest, "packets", "destination.packets")
    packets_out = _count(source, "packets", "source.packets")
    duration_ms = None if duration_ns is None else duration_ns // 1_000_000
    event_id = event_id or _derived_id(doc, raw)
    # Positional, in Event's field order: several times cheaper than keywords.
    return _make_event(
        (
            event_id,
            kind,
            ts_ms,
            entity,
            entity_kind,
            entity_class,
            "ecs",  # source_format
            user,
            user_type,
            activity,
            success,
            status_detail,
            None,  # is_mfa
            session_id,
            service,
            user_agent,
            src_ip_text,  # src_ip
            src_prefix,
            src_country,
            src_city,
            src_lat,
            src_lon,
            src_asn,
            src_as_name,
            device_id,
            src_hostname,
            dst_ip_text,  # dst_ip
            dst_hostname,
            dst_port,
            dst_country,
            dst_asn,
            dst_internal,
            protocol,
            direction,
            bytes_in,
            bytes_out,
            packets_in,
            packets_out,
            duration_ms,
        )
    )


def _parse_native(doc: dict[str, Any], raw: bytes | bytearray, kind: EventKind) -> Event:
    ts_value = doc.get("ts")
    ts_ms = _ms_from_number(ts_value)
    if ts_ms is None and type(ts_value) is str:
        ts_ms = _ms_from_iso(ts_value)
    if ts_ms is None:
        raise ParseError("bad_time", "ts must be epoch milliseconds or ISO 8601, before 2100")
    event_id = _event_id(doc, "id", "id")
    user = _ident(doc, "user", "user")
    user_type = _str(doc, "user_type", "user_type")
    device_id = _ident(doc, "device", "device")
    src_hostname = _ident(doc, "host", "host")
    src_ip = _ip(doc, "ip", "ip")
    dst_ip = _ip(doc, "dst_ip", "dst_ip")

    direction_text = _str(doc, "direction", "direction")
    direction = None
    if direction_text is not None:
        direction = _NATIVE_DIRECTION.get(direction_text)
        if direction is None:
            raise _bad("direction", "expected inbound, outbound or lateral")
    activity_text = _str(doc, "activity", "activity")
    activity = None
    if activity_text is not None:
        activity = _NATIVE_ACTIVITY.get(activity_text)
        if activity is None:
            raise _bad("activity", "expected logon, logoff or other")

    if user is not None:
        entity, entity_kind = user, _USER
        entity_class = _classify(user_type)
    elif kind is _AUTH:
        raise _missing_entity("auth event without user")
    else:
        device = device_id or src_hostname or (None if src_ip is None else src_ip[0])
        if device is None:
            raise _missing_entity("network event without user, device, host or ip")
        entity, entity_kind, entity_class = device, _DEVICE_KIND, _DEVICE_CLASS

    success = _bool(doc, "ok", "ok")
    is_mfa = _bool(doc, "mfa", "mfa")
    session_id = _ident(doc, "session", "session")
    service = _str(doc, "service", "service")
    user_agent = _str(doc, "ua", "ua")
    src_ip_text = None if src_ip is None else src_ip[0]
    src_prefix = None if src_ip is None else src_ip[1]
    src_country = _country(doc, "country", "country")
    src_city = _str(doc, "city", "city")
    src_lat = _coord(doc, "lat", "lat", 90.0)
    src_lon = _coord(doc, "lon", "lon", 180.0)
    src_asn = _asn(doc, "asn", "asn")
    src_as_name = _str(doc, "as_name", "as_name")
    dst_ip_text = None if dst_ip is None else dst_ip[0]
    dst_hostname = _ident(doc, "dst_host", "dst_host")
    dst_port = _port(doc, "dst_port", "dst_port")
    dst_country = _country(doc, "dst_country", "dst_country")
    dst_asn = _asn(doc, "dst_asn", "dst_asn")
    dst_internal = _dst_internal(direction, dst_ip)
    protocol = _lower(doc, "proto", "proto")
    bytes_in = _count(doc, "bytes_in", "bytes_in")
    bytes_out = _count(doc, "bytes_out", "bytes_out")
    packets_in = _count(doc, "packets_in", "packets_in")
    packets_out = _count(doc, "packets_out", "packets_out")
    duration_ms = _count(doc, "duration_ms", "duration_ms")
    event_id = event_id or _derived_id(doc, raw)
    # Positional, in Event's field order: several times cheaper than keywords.
    return _make_event(
        (
            event_id,
            kind,
            ts_ms,
            entity,
            entity_kind,
            entity_class,
            "native",  # source_format
            user,
            user_type,
            activity,
            success,
            None,  # status_detail
            is_mfa,
            session_id,
            service,
            user_agent,
            src_ip_text,  # src_ip
            src_prefix,
            src_country,
            src_city,
            src_lat,
            src_lon,
            src_asn,
            src_as_name,
            device_id,
            src_hostname,
            dst_ip_text,  # dst_ip
            dst_hostname,
            dst_port,
            dst_country,
            dst_asn,
            dst_internal,
            protocol,
            direction,
            bytes_in,
            bytes_out,
            packets_in,
            packets_out,
            duration_ms,
        )
    )


def _ecs_kind(category: Any) -> EventKind | None:
    """ECS ``event.category`` (string or list) -> kind; authentication wins over network."""
    if type(category) is str:
        category = (category,)
    elif type(category) is not list:
        return None
    if "authentication" in category:
        return _AUTH
    if "network" in category:
        return _NETWORK
    return None


def parse_event(raw: bytes | str) -> Event:
    """Parse one JSON document into an :class:`Event`.

    The form is detected from the document itself: a ``class_uid`` key means
    OCSF (3002 Authentication, 4001 Network Activity); else an ``event`` object
    whose ``category`` contains ``authentication`` or ``network`` means ECS;
    else a top-level ``kind`` of ``auth`` or ``network`` means the native form
    (``docs/native-format.md``). Absent and ``null`` fields become ``None``;
    present fields of the wrong type or out of range are rejected, never
    defaulted. Without an explicit event id a stable content hash is used.

    Parameters
    ----------
    raw : bytes or str
        One JSON document, at most :data:`MAX_EVENT_BYTES` bytes (UTF-8).

    Returns
    -------
    Event
        The validated, immutable event.

    Raises
    ------
    ParseError
        With ``reason`` one of ``too_large``, ``not_json``, ``not_object``,
        ``unknown_class``, ``missing_entity``, ``bad_time`` or
        ``bad_field:<dotted.input.path>``. No other exception escapes.

    Examples
    --------
    >>> ev = parse_event(b'{"kind": "auth", "ts": 1714560000000, "user": "alice"}')
    >>> ev.entity
    'alice'
    >>> ev.kind
    <EventKind.AUTH: 'auth'>
    >>> try:
    ...     parse_event(b'[1, 2]')
    ... except ParseError as exc:
    ...     print(exc.reason)
    not_object
    """
    data: bytes | bytearray
    if isinstance(raw, str):
        if len(raw) > MAX_EVENT_BYTES:  # each char is at least one UTF-8 byte
            raise ParseError("too_large", "document exceeds MAX_EVENT_BYTES")
        try:
            data = raw.encode()
        except UnicodeEncodeError:  # lone surrogates
            raise ParseError("not_json", "text is not valid UTF-8") from None
    elif isinstance(raw, bytes | bytearray):
        data = raw
    elif isinstance(raw, memoryview):
        data = raw.tobytes()
    else:
        raise ParseError("not_json", "input must be bytes or str")
    if len(data) > MAX_EVENT_BYTES:
        raise ParseError("too_large", "document exceeds MAX_EVENT_BYTES")
    try:
        doc = orjson.loads(data)
    except ValueError:  # orjson.JSONDecodeError
        raise ParseError("not_json", "document is not valid JSON") from None
    if type(doc) is not dict:
        raise ParseError("not_object", "top-level JSON value is not an object")

    if "class_uid" in doc:
        class_uid = doc["class_uid"]
        if type(class_uid) is int:
            if class_uid == _OCSF_AUTH:
                return _parse_ocsf(doc, data, True)
            if class_uid == _OCSF_NETWORK:
                return _parse_ocsf(doc, data, False)
        raise ParseError("unknown_class", "OCSF class_uid is not 3002 or 4001")
    ev = doc.get("event")
    if type(ev) is dict:
        ecs_kind = _ecs_kind(ev.get("category"))
        if ecs_kind is not None:
            return _parse_ecs(doc, data, ev, ecs_kind is _AUTH)
    native_kind = doc.get("kind")
    if type(native_kind) is str and native_kind in _NATIVE_KIND:
        return _parse_native(doc, data, _NATIVE_KIND[native_kind])
    raise ParseError("unknown_class", "not OCSF 3002/4001, ECS auth/network or native")
