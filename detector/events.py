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
import re
import sys
from collections.abc import Callable, Sequence
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
_EPOCH_NAIVE: Final = datetime(1970, 1, 1)  # naive input times are UTC
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
#: "contains any of the words", as one C-level search instead of a generator.
_LOGON_RE: Final = re.compile("|".join(map(re.escape, _LOGON_WORDS)))
_LOGOFF_RE: Final = re.compile("|".join(map(re.escape, _LOGOFF_WORDS)))

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


#: Parsed valid addresses by their text as sent. ``ipaddress`` costs several
#: microseconds per address and the same few thousand addresses recur all day.
#: A plain dict (not ``functools.lru_cache``) because the fast paths below read it
#: inline with one ``dict.get``, without a call. Bounded by a full reset at
#: :data:`_IP_MEMO_MAX` entries: rare, and cheaper than LRU bookkeeping per hit.
#: Invalid addresses are not remembered (they are rejects, not the hot path).
_IP_MEMO: Final[dict[str, _IpInfo]] = {}
_IP_MEMO_MAX: Final = 65536


def _ip_info(text: str) -> _IpInfo | None:
    """Parse one IP address: (normalized text, /24 or /48 prefix, internal?) or None."""
    info = _IP_MEMO.get(text)
    if info is None:
        info = _parse_ip(text)
        if info is not None:
            if len(_IP_MEMO) >= _IP_MEMO_MAX:
                _IP_MEMO.clear()
            _IP_MEMO[text] = info
    return info


def _parse_ip(text: str) -> _IpInfo | None:
    """Uncached :func:`_ip_info`."""
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
        # Naive means UTC: subtracting the naive epoch gives the same difference
        # as attaching UTC first, without building a second datetime.
        ms = (dt - (_EPOCH if dt.tzinfo is not None else _EPOCH_NAIVE)) // _ONE_MS
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
    elif type(types) is not list:
        raise _bad("event.type", "expected a list of strings")
    else:
        for t in types:  # a loop, not all(<generator>): this runs per ECS auth event
            if type(t) is not str:
                raise _bad("event.type", "expected a list of strings")
    act = "" if action is None else action.lower()
    if "start" in types or _LOGON_RE.search(act) is not None:
        return 1
    if "end" in types or _LOGOFF_RE.search(act) is not None:
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


# ------------------------------------------------------------------ fast paths
#
# The careful parsers above are the specification: they validate the fields one
# at a time, in a fixed order, so that a document with several faults always
# gets the same reason code. Their per-field helper calls are also most of the
# parser's cost (~120 Python calls per OCSF event).
#
# The fast parsers below compute the same Event for a *valid* document with
# the checks inlined, and give up (return None, or let a helper's ParseError
# escape) at the first doubt; parse_event then runs the careful parser on the
# same document, which either accepts it after all (an unusual but valid shape,
# e.g. an AS number sent as a string) or raises the precise reason. So:
#
# * a fast parser must check at least everything its careful twin checks, and
#   return exactly the careful twin's values (the differential property tests
#   in tests/test_events_fast.py hold the two to this);
# * the order of its checks does not matter, since it never reports an error.
#
# Inline idioms (``x`` is a value fresh from orjson, so exact ``type`` checks
# are right and exclude bool from int):
#   object   ``if type(o) is not dict: if o is not None: return None; o = _EMPTY``
#   string   ``if type(s) is not str and s is not None: return None``
#   ident    the same, then ``s or None`` (an empty identifier counts as missing)
# String lengths are checked once at the end, and only for long documents.

#: A JSON string of n characters takes at least n + 2 bytes (its quotes; a
#: character is one UTF-8 byte or more, an escape more still), so a document of
#: at most this many bytes cannot hold a string longer than MAX_STR_LEN and the
#: fast paths skip the per-string length checks for it.
_NO_LONG_STRINGS: Final = MAX_STR_LEN + 2

#: All valid country codes (what :func:`_country` accepts): one set lookup.
_ALPHA2: Final = frozenset(chr(a) + chr(b) for a in range(65, 91) for b in range(65, 91))

#: ``Event`` from a tuple of all its values in field order: ``tuple.__new__``
#: bound to the class skips ``Event._make``'s classmethod call and length check
#: (the tuples below are literal, always 39 values).
_new_event: Final[Callable[[tuple[Any, ...]], Event]] = functools.partial(tuple.__new__, Event)


def _any_too_long(*texts: str | None) -> bool:
    """True if a string is longer than MAX_STR_LEN (long documents only)."""
    for text in texts:
        if text is not None and len(text) > MAX_STR_LEN:
            return True
    return False


def _fast_ocsf(doc: dict[str, Any], raw: bytes | bytearray, is_auth: bool) -> Event | None:
    """:func:`_parse_ocsf` for valid documents; None (or ParseError) means "ask it"."""
    ts_ms = doc.get("time")
    if type(ts_ms) is not int:
        if type(ts_ms) is not float:
            return None
        ts_ms = int(ts_ms) if 0.0 <= ts_ms < MAX_TS_MS else -1
    if not 0 <= ts_ms < MAX_TS_MS:
        return None

    meta = doc.get("metadata")
    if type(meta) is dict:
        event_id = meta.get("uid")
        if type(event_id) is str:
            event_id = event_id or None
        elif type(event_id) is int:
            event_id = str(event_id)
        elif event_id is not None:
            return None
    elif meta is None:
        event_id = None
    else:
        return None

    src = doc.get("src_endpoint")
    if type(src) is not dict:
        if src is not None:
            return None
        src = _EMPTY
    src_ip = src.get("ip")
    if src_ip is not None:
        if type(src_ip) is not str:
            return None
        src_ip = _IP_MEMO.get(src_ip) or _ip_info(src_ip)
        if src_ip is None:
            return None
    src_uid = src.get("uid")
    if type(src_uid) is not str and src_uid is not None:
        return None
    src_uid = src_uid or None
    src_hostname = src.get("hostname")
    if type(src_hostname) is not str and src_hostname is not None:
        return None
    src_hostname = src_hostname or None
    src_loc = src.get("location")
    if type(src_loc) is not dict:
        if src_loc is not None:
            return None
        src_loc = _EMPTY
    src_as = src.get("autonomous_system")
    if type(src_as) is not dict:
        if src_as is not None:
            return None
        src_as = _EMPTY
    device = doc.get("device")
    if type(device) is not dict:
        if device is not None:
            return None
        device = _EMPTY
    device_uid = device.get("uid")
    if type(device_uid) is not str and device_uid is not None:
        return None
    device_uid = device_uid or None
    dst = doc.get("dst_endpoint")
    if type(dst) is not dict:
        if dst is not None:
            return None
        dst = _EMPTY
    dst_ip = dst.get("ip")
    if dst_ip is not None:
        if type(dst_ip) is not str:
            return None
        dst_ip = _IP_MEMO.get(dst_ip) or _ip_info(dst_ip)
        if dst_ip is None:
            return None

    success: bool | None = None
    is_mfa = None
    status_detail = None
    service = None
    email = None
    protocol_raw = None
    protocol = None
    dst_country = None
    direction = None
    dst_asn = None
    bytes_in = None
    bytes_out = None
    packets_in = None
    packets_out = None
    duration_ms = None
    actor: Any = _EMPTY  # read for Network Activity only
    entity: str | None
    entity_kind = _USER
    if is_auth:
        kind = _AUTH
        user_obj = doc.get("user")
        if type(user_obj) is not dict:
            if user_obj is not None:
                return None
            user_obj = _EMPTY
        uid = user_obj.get("uid")
        if type(uid) is not str and uid is not None:
            return None
        name = user_obj.get("name")
        if type(name) is not str and name is not None:
            return None
        email = user_obj.get("email_addr")
        if type(email) is not str and email is not None:
            return None
        user_type = user_obj.get("type")
        if user_type is None:
            type_id = user_obj.get("type_id")
            if type_id is not None:
                if type(type_id) is not int or not 0 <= type_id <= _MAX_CODE:
                    return None
                user_type = _OCSF_USER_TYPE_BY_ID.get(type_id)
        elif type(user_type) is not str:
            return None
        user = uid or name or email or None
        status_id = doc.get("status_id")
        if status_id is not None:
            if type(status_id) is not int or not 0 <= status_id <= _MAX_CODE:
                return None
            success = True if status_id == 1 else False if status_id == 2 else None
        status_detail = doc.get("status_detail")
        if type(status_detail) is not str and status_detail is not None:
            return None
        is_mfa = doc.get("is_mfa")
        if type(is_mfa) is not bool and is_mfa is not None:
            return None
        service_obj = doc.get("service")
        if type(service_obj) is not dict:
            if service_obj is not None:
                return None
            service_obj = _EMPTY
        service = service_obj.get("name")
        if type(service) is not str and service is not None:
            return None
        device_id = device_uid or src_uid
        if user is None:
            return None
        entity = user
    else:
        kind = _NETWORK
        actor = doc.get("actor")
        if type(actor) is not dict:
            if actor is not None:
                return None
            actor = _EMPTY
        actor_user = actor.get("user")
        if type(actor_user) is not dict:
            if actor_user is not None:
                return None
            actor_user = _EMPTY
        uid = actor_user.get("uid")
        if type(uid) is not str and uid is not None:
            return None
        name = actor_user.get("name")
        if type(name) is not str and name is not None:
            return None
        user_type = actor_user.get("type")
        if user_type is None:
            type_id = actor_user.get("type_id")
            if type_id is not None:
                if type(type_id) is not int or not 0 <= type_id <= _MAX_CODE:
                    return None
                user_type = _OCSF_USER_TYPE_BY_ID.get(type_id)
        elif type(user_type) is not str:
            return None
        user = uid or name or None
        conn = doc.get("connection_info")
        if type(conn) is not dict:
            if conn is not None:
                return None
            conn = _EMPTY
        protocol_raw = conn.get("protocol_name")
        if protocol_raw is not None:
            if type(protocol_raw) is not str:
                return None
            protocol = protocol_raw.lower()
        direction_id = conn.get("direction_id")
        if direction_id is not None:
            if type(direction_id) is not int or not 0 <= direction_id <= _MAX_CODE:
                return None
            if 1 <= direction_id <= 3:  # 0 unknown, 99 other
                direction = direction_id
        traffic = doc.get("traffic")
        if type(traffic) is not dict:
            if traffic is not None:
                return None
            traffic = _EMPTY
        # Counters: an int in range inline; anything else (a float to
        # truncate, or a fault) through the careful helper.
        bytes_in = traffic.get("bytes_in")
        if bytes_in is not None and (type(bytes_in) is not int or not 0 <= bytes_in <= _MAX_COUNT):
            bytes_in = _count(traffic, "bytes_in", "traffic.bytes_in")
        bytes_out = traffic.get("bytes_out")
        if bytes_out is not None and (
            type(bytes_out) is not int or not 0 <= bytes_out <= _MAX_COUNT
        ):
            bytes_out = _count(traffic, "bytes_out", "traffic.bytes_out")
        packets_in = traffic.get("packets_in")
        if packets_in is not None and (
            type(packets_in) is not int or not 0 <= packets_in <= _MAX_COUNT
        ):
            packets_in = _count(traffic, "packets_in", "traffic.packets_in")
        packets_out = traffic.get("packets_out")
        if packets_out is not None and (
            type(packets_out) is not int or not 0 <= packets_out <= _MAX_COUNT
        ):
            packets_out = _count(traffic, "packets_out", "traffic.packets_out")
        duration_ms = doc.get("duration")
        if duration_ms is not None and (
            type(duration_ms) is not int or not 0 <= duration_ms <= _MAX_COUNT
        ):
            duration_ms = _count(doc, "duration", "duration")
        dst_loc = dst.get("location")
        if type(dst_loc) is not dict:
            if dst_loc is not None:
                return None
            dst_loc = _EMPTY
        dst_country = dst_loc.get("country")
        if dst_country is not None and (type(dst_country) is not str or dst_country not in _ALPHA2):
            return None
        dst_as = dst.get("autonomous_system")
        if type(dst_as) is not dict:
            if dst_as is not None:
                return None
            dst_as = _EMPTY
        dst_asn = dst_as.get("number")
        if dst_asn is not None and (type(dst_asn) is not int or not 0 <= dst_asn <= _MAX_ASN):
            dst_asn = _asn(dst_as, "number", "dst_endpoint.autonomous_system.number")
        device_id = src_uid or device_uid
        if user is not None:
            entity = user
        else:
            entity = src_uid or src_hostname or (None if src_ip is None else src_ip[0])
            if entity is None:
                return None
            entity_kind = _DEVICE_KIND

    session = doc.get("session")
    if type(session) is not dict:
        if session is not None:
            return None
        session = _EMPTY
    session_id = session.get("uid")
    if type(session_id) is not str and session_id is not None:
        return None
    actor_session_id = None
    if not session_id and not is_auth:
        # OCSF puts the session under the actor for Network Activity.
        actor_session = actor.get("session")
        if type(actor_session) is not dict:
            if actor_session is not None:
                return None
            actor_session = _EMPTY
        actor_session_id = actor_session.get("uid")
        if type(actor_session_id) is not str and actor_session_id is not None:
            return None
        session_id = actor_session_id
    session_id = session_id or None

    if entity_kind is _USER:
        entity_class = _CLASS_BY_TAG.get(user_type.lower(), _EMPLOYEE) if user_type else _EMPLOYEE
    else:
        entity_class = _DEVICE_CLASS
    activity = doc.get("activity_id")
    if activity is not None and (type(activity) is not int or not 0 <= activity <= _MAX_CODE):
        return None
    http = doc.get("http_request")
    if type(http) is not dict:
        if http is not None:
            return None
        http = _EMPTY
    user_agent = http.get("user_agent")
    if type(user_agent) is not str and user_agent is not None:
        return None
    src_country = src_loc.get("country")
    if src_country is not None and (type(src_country) is not str or src_country not in _ALPHA2):
        return None
    src_city = src_loc.get("city")
    if type(src_city) is not str and src_city is not None:
        return None
    src_lat = src_loc.get("lat")
    if src_lat is not None:
        if (type(src_lat) is not float and type(src_lat) is not int) or not (
            -90.0 <= src_lat <= 90.0
        ):
            return None
        src_lat = float(src_lat)
    src_lon = src_loc.get("long")
    if src_lon is not None:
        if (type(src_lon) is not float and type(src_lon) is not int) or not (
            -180.0 <= src_lon <= 180.0
        ):
            return None
        src_lon = float(src_lon)
    src_asn = src_as.get("number")
    if src_asn is not None and (type(src_asn) is not int or not 0 <= src_asn <= _MAX_ASN):
        src_asn = _asn(src_as, "number", "src_endpoint.autonomous_system.number")
    src_as_name = src_as.get("name")
    if type(src_as_name) is not str and src_as_name is not None:
        return None
    dst_hostname = dst.get("hostname")
    if type(dst_hostname) is not str and dst_hostname is not None:
        return None
    dst_hostname = dst_hostname or None
    dst_port = dst.get("port")
    if dst_port is not None and (type(dst_port) is not int or not 0 <= dst_port <= 65535):
        return None

    if len(raw) > _NO_LONG_STRINGS and _any_too_long(
        event_id, src_uid, src_hostname, device_uid, uid, name, email, user_type,
        status_detail, service, protocol_raw, session_id, actor_session_id, user_agent,
        src_city, src_as_name, dst_hostname,
    ):  # fmt: skip
        return None
    dst_internal: bool | None = True
    if direction != 3:
        dst_internal = None if dst_ip is None else dst_ip[2]
    if event_id is None:
        event_id = _derived_id(doc, raw)
    return _new_event(
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
            None if src_ip is None else src_ip[0],  # src_ip
            None if src_ip is None else src_ip[1],  # src_prefix
            src_country,
            src_city,
            src_lat,
            src_lon,
            src_asn,
            src_as_name,
            device_id,
            src_hostname,
            None if dst_ip is None else dst_ip[0],  # dst_ip
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


def _fast_native(doc: dict[str, Any], raw: bytes | bytearray, kind: EventKind) -> Event | None:
    """:func:`_parse_native` for valid documents; None (or ParseError) means "ask it"."""
    ts_ms = doc.get("ts")
    if type(ts_ms) is not int:
        ts_ms = _ms_from_number(ts_ms) if type(ts_ms) is not str else _ms_from_iso(ts_ms)
        if ts_ms is None:
            return None
    elif not 0 <= ts_ms < MAX_TS_MS:
        return None
    event_id = doc.get("id")
    if type(event_id) is str:
        event_id = event_id or None
    elif type(event_id) is int:
        event_id = str(event_id)
    elif event_id is not None:
        return None
    user = doc.get("user")
    if type(user) is not str and user is not None:
        return None
    user = user or None
    user_type = doc.get("user_type")
    if type(user_type) is not str and user_type is not None:
        return None
    device_id = doc.get("device")
    if type(device_id) is not str and device_id is not None:
        return None
    device_id = device_id or None
    src_hostname = doc.get("host")
    if type(src_hostname) is not str and src_hostname is not None:
        return None
    src_hostname = src_hostname or None
    src_ip = doc.get("ip")
    if src_ip is not None:
        if type(src_ip) is not str:
            return None
        src_ip = _IP_MEMO.get(src_ip) or _ip_info(src_ip)
        if src_ip is None:
            return None
    dst_ip = doc.get("dst_ip")
    if dst_ip is not None:
        if type(dst_ip) is not str:
            return None
        dst_ip = _IP_MEMO.get(dst_ip) or _ip_info(dst_ip)
        if dst_ip is None:
            return None
    direction = doc.get("direction")
    if direction is not None:
        if type(direction) is not str:
            return None
        direction = _NATIVE_DIRECTION.get(direction)
        if direction is None:
            return None
    activity = doc.get("activity")
    if activity is not None:
        if type(activity) is not str:
            return None
        activity = _NATIVE_ACTIVITY.get(activity)
        if activity is None:
            return None

    entity: str | None
    if user is not None:
        entity, entity_kind = user, _USER
        entity_class = _CLASS_BY_TAG.get(user_type.lower(), _EMPLOYEE) if user_type else _EMPLOYEE
    elif kind is _AUTH:
        return None
    else:
        entity = device_id or src_hostname or (None if src_ip is None else src_ip[0])
        if entity is None:
            return None
        entity_kind, entity_class = _DEVICE_KIND, _DEVICE_CLASS

    success = doc.get("ok")
    if type(success) is not bool and success is not None:
        return None
    is_mfa = doc.get("mfa")
    if type(is_mfa) is not bool and is_mfa is not None:
        return None
    session_id = doc.get("session")
    if type(session_id) is not str and session_id is not None:
        return None
    session_id = session_id or None
    service = doc.get("service")
    if type(service) is not str and service is not None:
        return None
    user_agent = doc.get("ua")
    if type(user_agent) is not str and user_agent is not None:
        return None
    src_country = doc.get("country")
    if src_country is not None and (type(src_country) is not str or src_country not in _ALPHA2):
        return None
    src_city = doc.get("city")
    if type(src_city) is not str and src_city is not None:
        return None
    src_lat = doc.get("lat")
    if src_lat is not None:
        src_lat = _coord(doc, "lat", "lat", 90.0)
    src_lon = doc.get("lon")
    if src_lon is not None:
        src_lon = _coord(doc, "lon", "lon", 180.0)
    src_asn = doc.get("asn")
    if src_asn is not None and (type(src_asn) is not int or not 0 <= src_asn <= _MAX_ASN):
        src_asn = _asn(doc, "asn", "asn")
    src_as_name = doc.get("as_name")
    if type(src_as_name) is not str and src_as_name is not None:
        return None
    dst_hostname = doc.get("dst_host")
    if type(dst_hostname) is not str and dst_hostname is not None:
        return None
    dst_hostname = dst_hostname or None
    dst_port = doc.get("dst_port")
    if dst_port is not None and (type(dst_port) is not int or not 0 <= dst_port <= 65535):
        return None
    dst_country = doc.get("dst_country")
    if dst_country is not None and (type(dst_country) is not str or dst_country not in _ALPHA2):
        return None
    dst_asn = doc.get("dst_asn")
    if dst_asn is not None and (type(dst_asn) is not int or not 0 <= dst_asn <= _MAX_ASN):
        dst_asn = _asn(doc, "dst_asn", "dst_asn")
    protocol_raw = doc.get("proto")
    protocol = None
    if protocol_raw is not None:
        if type(protocol_raw) is not str:
            return None
        protocol = protocol_raw.lower()
    # Counters: an int in range inline; anything else through the careful helper.
    bytes_in = doc.get("bytes_in")
    if bytes_in is not None and (type(bytes_in) is not int or not 0 <= bytes_in <= _MAX_COUNT):
        bytes_in = _count(doc, "bytes_in", "bytes_in")
    bytes_out = doc.get("bytes_out")
    if bytes_out is not None and (type(bytes_out) is not int or not 0 <= bytes_out <= _MAX_COUNT):
        bytes_out = _count(doc, "bytes_out", "bytes_out")
    packets_in = doc.get("packets_in")
    if packets_in is not None and (
        type(packets_in) is not int or not 0 <= packets_in <= _MAX_COUNT
    ):
        packets_in = _count(doc, "packets_in", "packets_in")
    packets_out = doc.get("packets_out")
    if packets_out is not None and (
        type(packets_out) is not int or not 0 <= packets_out <= _MAX_COUNT
    ):
        packets_out = _count(doc, "packets_out", "packets_out")
    duration_ms = doc.get("duration_ms")
    if duration_ms is not None and (
        type(duration_ms) is not int or not 0 <= duration_ms <= _MAX_COUNT
    ):
        duration_ms = _count(doc, "duration_ms", "duration_ms")

    if len(raw) > _NO_LONG_STRINGS and _any_too_long(
        event_id, user, user_type, device_id, src_hostname, session_id, service,
        user_agent, src_city, src_as_name, dst_hostname, protocol_raw,
    ):  # fmt: skip
        return None
    dst_internal: bool | None = True
    if direction != 3:
        dst_internal = None if dst_ip is None else dst_ip[2]
    if event_id is None:
        event_id = _derived_id(doc, raw)
    return _new_event(
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
            None if src_ip is None else src_ip[0],  # src_ip
            None if src_ip is None else src_ip[1],  # src_prefix
            src_country,
            src_city,
            src_lat,
            src_lon,
            src_asn,
            src_as_name,
            device_id,
            src_hostname,
            None if dst_ip is None else dst_ip[0],  # dst_ip
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


def _fast_ecs(
    doc: dict[str, Any], raw: bytes | bytearray, ev: dict[str, Any], is_auth: bool
) -> Event | None:
    """:func:`_parse_ecs` for valid documents; None (or ParseError) means "ask it"."""
    ts_ms = _ms_from_iso(doc.get("@timestamp"))
    if ts_ms is None:
        return None
    event_id = ev.get("id")
    if type(event_id) is str:
        event_id = event_id or None
    elif type(event_id) is int:
        event_id = str(event_id)
    elif event_id is not None:
        return None
    outcome = ev.get("outcome")
    if outcome is None or outcome == "unknown":
        success = None
    elif outcome == "success":
        success = True
    elif outcome == "failure":
        success = False
    else:
        return None
    reason = ev.get("reason")
    if type(reason) is not str and reason is not None:
        return None
    action = ev.get("action")
    if type(action) is not str and action is not None:
        return None
    duration_ns = ev.get("duration")
    if duration_ns is not None and (
        type(duration_ns) is not int or not 0 <= duration_ns <= _MAX_COUNT
    ):
        duration_ns = _count(ev, "duration", "event.duration")

    user_obj = doc.get("user")
    if type(user_obj) is not dict:
        if user_obj is not None:
            return None
        user_obj = _EMPTY
    uid = user_obj.get("id")
    if type(uid) is not str and uid is not None:
        return None
    name = user_obj.get("name")
    if type(name) is not str and name is not None:
        return None
    email = user_obj.get("email")
    if type(email) is not str and email is not None:
        return None
    user_type = None if user_obj.get("roles") is None else _ecs_roles(user_obj)
    user = uid or name or email or None

    source = doc.get("source")
    if type(source) is not dict:
        if source is not None:
            return None
        source = _EMPTY
    src_ip = source.get("ip")
    if src_ip is not None:
        if type(src_ip) is not str:
            return None
        src_ip = _IP_MEMO.get(src_ip) or _ip_info(src_ip)
        if src_ip is None:
            return None
    src_geo = source.get("geo")
    if type(src_geo) is not dict:
        if src_geo is not None:
            return None
        src_geo = _EMPTY
    src_loc = src_geo.get("location")
    if type(src_loc) is not dict:
        if src_loc is not None:
            return None
        src_loc = _EMPTY
    src_as = source.get("as")
    if type(src_as) is not dict:
        if src_as is not None:
            return None
        src_as = _EMPTY
    src_org = src_as.get("organization")
    if type(src_org) is not dict:
        if src_org is not None:
            return None
        src_org = _EMPTY
    dest = doc.get("destination")
    if type(dest) is not dict:
        if dest is not None:
            return None
        dest = _EMPTY
    dst_ip = dest.get("ip")
    if dst_ip is not None:
        if type(dst_ip) is not str:
            return None
        dst_ip = _IP_MEMO.get(dst_ip) or _ip_info(dst_ip)
        if dst_ip is None:
            return None

    network = doc.get("network")
    if type(network) is not dict:
        if network is not None:
            return None
        network = _EMPTY
    transport = network.get("transport")
    if type(transport) is not str and transport is not None:
        return None
    net_protocol = network.get("protocol")
    if type(net_protocol) is not str and net_protocol is not None:
        return None
    direction_text = network.get("direction")
    direction = None
    if direction_text is not None:
        if type(direction_text) is not str:
            return None
        direction = _ECS_DIRECTION.get(direction_text.lower())

    host = doc.get("host")
    if type(host) is not dict:
        if host is not None:
            return None
        host = _EMPTY
    host_id = host.get("id")
    if type(host_id) is not str and host_id is not None:
        return None
    host_id = host_id or None
    host_name = host.get("name")
    if type(host_name) is not str and host_name is not None:
        return None
    host_name = host_name or None
    device = doc.get("device")
    if type(device) is not dict:
        if device is not None:
            return None
        device = _EMPTY
    device_id = device.get("id")
    if type(device_id) is not str and device_id is not None:
        return None
    device_id = device_id or None
    service_obj = doc.get("service")
    if type(service_obj) is not dict:
        if service_obj is not None:
            return None
        service_obj = _EMPTY
    service = service_obj.get("name")
    if type(service) is not str and service is not None:
        return None
    if service is None:
        url = doc.get("url")
        if type(url) is not dict:
            if url is not None:
                return None
            url = _EMPTY
        service = url.get("domain")
        if type(service) is not str and service is not None:
            return None

    entity: str | None
    entity_kind = _USER
    if is_auth:
        kind = _AUTH
        activity = _ecs_activity(ev, action)
        if user is None:
            return None
        entity = user
    else:
        kind = _NETWORK
        activity = None
        if device_id is None:
            device_id = host_id  # on a network event the host is the source device
        if user is not None:
            entity = user
        else:
            entity = host_id or host_name or (None if src_ip is None else src_ip[0])
            if entity is None:
                return None
            entity_kind = _DEVICE_KIND

    dst_geo = dest.get("geo")
    if type(dst_geo) is not dict:
        if dst_geo is not None:
            return None
        dst_geo = _EMPTY
    if entity_kind is _USER:
        entity_class = _CLASS_BY_TAG.get(user_type.lower(), _EMPLOYEE) if user_type else _EMPLOYEE
    else:
        entity_class = _DEVICE_CLASS
    session = doc.get("session")
    if type(session) is not dict:
        if session is not None:
            return None
        session = _EMPTY
    session_id = session.get("id")
    if type(session_id) is not str and session_id is not None:
        return None
    session_id = session_id or None
    ua = doc.get("user_agent")
    if type(ua) is not dict:
        if ua is not None:
            return None
        ua = _EMPTY
    user_agent = ua.get("original")
    if type(user_agent) is not str and user_agent is not None:
        return None
    src_country = src_geo.get("country_iso_code")
    if src_country is not None and (type(src_country) is not str or src_country not in _ALPHA2):
        return None
    src_city = src_geo.get("city_name")
    if type(src_city) is not str and src_city is not None:
        return None
    src_lat = src_loc.get("lat")
    if src_lat is not None:
        src_lat = _coord(src_loc, "lat", "source.geo.location.lat", 90.0)
    src_lon = src_loc.get("lon")
    if src_lon is not None:
        src_lon = _coord(src_loc, "lon", "source.geo.location.lon", 180.0)
    src_asn = src_as.get("number")
    if src_asn is not None and (type(src_asn) is not int or not 0 <= src_asn <= _MAX_ASN):
        src_asn = _asn(src_as, "number", "source.as.number")
    src_as_name = src_org.get("name")
    if type(src_as_name) is not str and src_as_name is not None:
        return None
    src_hostname = source.get("domain")
    if type(src_hostname) is not str and src_hostname is not None:
        return None
    src_hostname = src_hostname or None
    dst_hostname = dest.get("domain")
    if type(dst_hostname) is not str and dst_hostname is not None:
        return None
    dst_hostname = dst_hostname or None
    dst_port = dest.get("port")
    if dst_port is not None and (type(dst_port) is not int or not 0 <= dst_port <= 65535):
        return None
    dst_country = dst_geo.get("country_iso_code")
    if dst_country is not None and (type(dst_country) is not str or dst_country not in _ALPHA2):
        return None
    dst_as = dest.get("as")
    if type(dst_as) is not dict:
        if dst_as is not None:
            return None
        dst_as = _EMPTY
    dst_asn = dst_as.get("number")
    if dst_asn is not None and (type(dst_asn) is not int or not 0 <= dst_asn <= _MAX_ASN):
        dst_asn = _asn(dst_as, "number", "destination.as.number")
    # Counters: an int in range inline; anything else through the careful helper.
    bytes_in = dest.get("bytes")
    if bytes_in is not None and (type(bytes_in) is not int or not 0 <= bytes_in <= _MAX_COUNT):
        bytes_in = _count(dest, "bytes", "destination.bytes")
    bytes_out = source.get("bytes")
    if bytes_out is not None and (type(bytes_out) is not int or not 0 <= bytes_out <= _MAX_COUNT):
        bytes_out = _count(source, "bytes", "source.bytes")
    packets_in = dest.get("packets")
    if packets_in is not None and (
        type(packets_in) is not int or not 0 <= packets_in <= _MAX_COUNT
    ):
        packets_in = _count(dest, "packets", "destination.packets")
    packets_out = source.get("packets")
    if packets_out is not None and (
        type(packets_out) is not int or not 0 <= packets_out <= _MAX_COUNT
    ):
        packets_out = _count(source, "packets", "source.packets")

    if len(raw) > _NO_LONG_STRINGS and _any_too_long(
        event_id, reason, action, uid, name, email, transport, net_protocol,
        direction_text, host_id, host_name, device_id, service, session_id, user_agent,
        src_city, src_as_name, src_hostname, dst_hostname,
    ):  # fmt: skip
        return None
    dst_internal: bool | None = True
    if direction != 3:
        dst_internal = None if dst_ip is None else dst_ip[2]
    protocol: str | None = None
    if transport is not None:
        protocol = transport.lower()
    elif net_protocol is not None:
        protocol = net_protocol.lower()
    if event_id is None:
        event_id = _derived_id(doc, raw)
    return _new_event(
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
            reason if reason is not None else action,  # status_detail
            None,  # is_mfa
            session_id,
            service,
            user_agent,
            None if src_ip is None else src_ip[0],  # src_ip
            None if src_ip is None else src_ip[1],  # src_prefix
            src_country,
            src_city,
            src_lat,
            src_lon,
            src_asn,
            src_as_name,
            device_id,
            src_hostname,
            None if dst_ip is None else dst_ip[0],  # dst_ip
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
            None if duration_ns is None else duration_ns // 1_000_000,  # duration_ms
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
    if type(raw) is bytes:  # the usual case, first: cheaper than the isinstance chain
        data = raw
        # The compiled raw reader: the very Event the path below returns, read
        # straight from the bytes without decoding the whole document into
        # Python objects; None at any doubt, and then the path below decides.
        if _raw_event is not None and len(raw) <= MAX_EVENT_BYTES:
            fast = _raw_event(raw)
            if fast is not None:
                return fast
    elif isinstance(raw, str):
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

    # Each form: the fast parser first; when it has any doubt (None, or a
    # helper's ParseError), the careful parser decides and names the reason.
    event: Event | None = None
    if "class_uid" in doc:
        class_uid = doc["class_uid"]
        if type(class_uid) is int and (class_uid == _OCSF_AUTH or class_uid == _OCSF_NETWORK):
            is_auth = class_uid == _OCSF_AUTH
            try:
                event = _fast_ocsf(doc, data, is_auth)
            except ParseError:
                pass
            return event if event is not None else _parse_ocsf(doc, data, is_auth)
        raise ParseError("unknown_class", "OCSF class_uid is not 3002 or 4001")
    ev = doc.get("event")
    if type(ev) is dict:
        ecs_kind = _ecs_kind(ev.get("category"))
        if ecs_kind is not None:
            is_auth = ecs_kind is _AUTH
            try:
                event = _fast_ecs(doc, data, ev, is_auth)
            except ParseError:
                pass
            return event if event is not None else _parse_ecs(doc, data, ev, is_auth)
    native_kind = doc.get("kind")
    if type(native_kind) is str and native_kind in _NATIVE_KIND:
        kind = _NATIVE_KIND[native_kind]
        try:
            event = _fast_native(doc, data, kind)
        except ParseError:
            pass
        return event if event is not None else _parse_native(doc, data, kind)
    raise ParseError("unknown_class", "not OCSF 3002/4001, ECS auth/network or native")


# ------------------------------------------------------------- compiled fast paths
#
# ``detector._native`` holds compiled drop-ins for the fast parsers above
# (``native/src/parse.rs``): same documents in, the same Event out (same values,
# same types, the very enum members), or None at any doubt, like the Python
# ones. parse_event calls the fast parsers through the module names
# ``_fast_ocsf``, ``_fast_ecs`` and ``_fast_native``; when the compiled module is
# built, those names are bound to the compiled kernels, and the Python
# functions stay available below as the specification (``tests/test_native_parse.py``
# holds the two to each other). In front of them all, ``_raw_event``
# (``native/src/jparse.rs``) reads a document's bytes without orjson and returns
# the Event the whole path returns, or None at any doubt
# (``tests/test_native_jparse.py``).

_FastOcsf = Callable[[dict[str, Any], bytes | bytearray, bool], Event | None]
_FastNative = Callable[[dict[str, Any], bytes | bytearray, EventKind], Event | None]
_RawEvent = Callable[[bytes], Event | None]
_RawEvents = Callable[[list[Any], int], tuple[list[Any], list[int]]]

#: ``ParseKernels.raw`` (``native/src/jparse.rs``) when the compiled parser is
#: on: one document's bytes straight to the Event parse_event returns for them,
#: or None at any doubt (then the orjson path runs as if it were not there).
_raw_event: _RawEvent | None = None
#: ``ParseKernels.raw_many``: the same over a list, for :func:`parse_batch`.
_raw_events: _RawEvents | None = None

#: The Python fast parsers: the specification of the compiled ones.
_py_fast_ocsf: Final[_FastOcsf] = _fast_ocsf
_py_fast_native: Final[_FastNative] = _fast_native


def parse_batch(raws: Sequence[bytes | str]) -> tuple[list[Event | ParseError], list[int]]:
    """Parse a batch of documents: each one's Event or the ParseError rejecting it, in order.

    Exactly ``parse_event`` on each (the same Events, the same reasons), with
    the compiled raw reader run over the whole list in one call: the replay
    CLI's and the worker's way in, without a Python call per document.

    Returns
    -------
    (results, rejected)
        ``results[i]`` is the Event or the ParseError of ``raws[i]``;
        ``rejected`` the indices of the ParseErrors, in order.

    Examples
    --------
    >>> (ok, bad), rejected = parse_batch([b'{"kind":"auth","ts":1,"user":"a"}', b"nope"])
    >>> ok.entity, bad.reason, rejected
    ('a', 'not_json', [1])
    """
    results: list[Any]  # Events, and None where a doubt is still to be decided
    doubts: Sequence[int]
    if _raw_events is not None and type(raws) is list:
        results, doubts = _raw_events(raws, MAX_EVENT_BYTES)
    else:
        results, doubts = [None] * len(raws), range(len(raws))
    rejected: list[int] = []
    for i in doubts:
        try:
            results[i] = parse_event(raws[i])
        except ParseError as exc:
            results[i] = exc
            rejected.append(i)
    return results, rejected


def accepted_events(results: list[Event | ParseError], rejected: Sequence[int]) -> list[Event]:
    """Return the Events of a :func:`parse_batch` result, in order (``results`` itself when
    nothing was rejected)."""
    if rejected:
        bad = set(rejected)
        results = [r for i, r in enumerate(results) if i not in bad]
    return results  # type: ignore[return-value]  # only Events are left


def _native_fast_paths() -> dict[str, Any]:
    """Return the compiled fast parsers by module name, or an empty dict when not built."""
    from detector import native  # late: detector.native never imports this module

    try:
        module = native.load()
    except native.NativeStale:  # the Detector reports a stale build; parse in Python
        return {}
    if module is None or not hasattr(module, "ParseKernels"):
        return {}
    kernels = module.ParseKernels(sys.modules[__name__])
    return {"_fast_ocsf": kernels.ocsf, "_fast_native": kernels.native, "_raw_event": kernels.raw,
            "_raw_events": kernels.raw_many}


def use_native_parser(enabled: bool, raw: bool = True) -> bool:
    """Route parse_event's fast paths through the compiled kernels, or back to Python.

    For tests and benchmarks that compare the two (the module turns the
    compiled kernels on at import when they are built). ``raw=False`` keeps
    the compiled fast paths but not the raw reader in front of orjson (to
    measure or test it alone). Returns True when the compiled kernels are in
    use afterwards.
    """
    python = {"_fast_ocsf": _py_fast_ocsf, "_fast_native": _py_fast_native, "_raw_event": None,
              "_raw_events": None}
    compiled = _native_fast_paths() if enabled else {}
    if not raw:
        compiled.pop("_raw_event", None)
        compiled.pop("_raw_events", None)
    globals().update(python)
    globals().update(compiled)
    return bool(compiled)


use_native_parser(True)
