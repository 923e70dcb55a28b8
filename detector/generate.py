"""Seeded generator of realistic OCSF traffic with labelled attack campaigns.

The generator simulates an organisation (a workforce spread over several time
zones, their devices, apps, internal hosts and SaaS destinations, a few service
accounts and user-less devices) and emits OCSF 1.1 Authentication (3002) and
Network Activity (4001) events, plus one label per event: ``normal``,
``attack`` (nine attack scenarios, grouped into campaigns) or ``benign``
(look-alikes a good detector must not revoke: travel, new devices).

Everything is derived from :class:`GeneratorConfig`: no wall clock, no
environment. The same configuration yields byte-identical output. Events are
produced one simulated day at a time, so memory stays bounded by about a day of
traffic whatever the number of days.

Output of :func:`write_dataset`:

``events.jsonl``
    One OCSF JSON document per line, in non-decreasing ``time``.
``labels.jsonl``
    One ``{"event_id", "label", "scenario", "campaign"}`` line per event, in
    the same order.
``org.json``
    The simulated organisation (users, devices, hosts, apps, trips, realised
    campaigns), for notebooks and docs.
"""

from __future__ import annotations

import gc
import itertools
import math
import random
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from statistics import NormalDist
from typing import Final

import orjson

__all__ = [
    "ATTACK_SCENARIOS",
    "BENIGN_SCENARIOS",
    "GeneratedSummary",
    "GeneratorConfig",
    "generate",
    "write_dataset",
]

DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000
MIN_MS: Final = 60_000
SEC_MS: Final = 1_000

#: Attack scenarios, in the order campaigns are planned.
ATTACK_SCENARIOS: Final[tuple[str, ...]] = (
    "account_takeover",
    "session_hijack",
    "password_spray",
    "brute_force",
    "lateral_movement",
    "exfiltration",
    "insider_off_hours",
    "dormant_account_abuse",
    "vendor_account_abuse",
)
#: Benign look-alike scenarios (label ``benign``).
BENIGN_SCENARIOS: Final[tuple[str, ...]] = ("travel", "new_device")

DOMAIN: Final = "example.com"
_PRODUCT: Final[dict[str, object]] = {"name": "zt-synthetic", "vendor_name": "zt-detector"}
_OCSF_VERSION: Final = "1.1.0"

Label = tuple[str, str | None, str | None]  # (label, scenario, campaign)
Item = tuple[int, dict[str, object], Label]  # (time, event, label)
Flow = tuple[dict[str, object], dict[str, object], float, float, float]
_NORMAL: Final[Label] = ("normal", None, None)
_T = itemgetter(0)


# ----------------------------------------------------------------------------
# Public configuration and summary
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorConfig:
    """Parameters of one synthetic dataset; equal configs give identical bytes.

    Attributes
    ----------
    users : int
        Number of user accounts (employees, admins, vendors, travellers,
        dormant and service accounts together).
    days : int
        Length of the simulated window in days, starting at ``start_ms``.
    seed : int
        Seed of every random choice.
    start_ms : int
        Start of the window, epoch milliseconds (default 2026-01-01T00:00:00Z).
    attacks : bool
        Inject attack campaigns.
    attack_days_from : int
        Campaigns only start on or after this day index, so a training prefix
        can be kept clean.
    devices_without_user : int or None
        Servers, cameras and printers that emit network traffic without a
        user; default ``max(5, users // 20)``.
    """

    users: int = 200
    days: int = 7
    seed: int = 42
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    attacks: bool = True
    attack_days_from: int = 0
    devices_without_user: int | None = None


@dataclass(frozen=True)
class GeneratedSummary:
    """Counts of one dataset written by :func:`write_dataset`.

    Attributes
    ----------
    events : int
        Events written.
    users : int
        User accounts in the organisation.
    devices : int
        Devices in the organisation (user devices, replacement laptops and
        user-less devices).
    days : int
        Days simulated.
    campaigns : dict of str to int
        Scenario -> number of campaigns with at least one event in the window
        (attack scenarios and benign look-alikes).
    attack_events : int
        Events labelled ``attack``.
    benign_lookalike_events : int
        Events labelled ``benign``.
    """

    events: int
    users: int
    devices: int
    days: int
    campaigns: dict[str, int]
    attack_events: int
    benign_lookalike_events: int

    def to_dict(self) -> dict[str, object]:
        """Return the summary as a JSON-ready dict.

        Returns
        -------
        dict
            Field name -> value.
        """
        return {
            "events": self.events,
            "users": self.users,
            "devices": self.devices,
            "days": self.days,
            "campaigns": dict(self.campaigns),
            "attack_events": self.attack_events,
            "benign_lookalike_events": self.benign_lookalike_events,
        }


# ----------------------------------------------------------------------------
# Static catalogue: places, ISPs, hosting providers, apps, user agents
# ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _City:
    name: str
    country: str
    lat: float
    lon: float
    offset_min: int  # fixed UTC offset, no DST


@dataclass(frozen=True, slots=True)
class _Isp:
    asn: int
    name: str
    blocks: tuple[tuple[int, int, int], ...]  # (first octet, second octet lo, hi)
    kind: str = "residential"

    def ip(self, rng: random.Random) -> str:
        a, lo, hi = self.blocks[rng.randrange(len(self.blocks))]
        return f"{a}.{rng.randint(lo, hi)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


@dataclass(frozen=True, slots=True)
class _Region:
    key: str
    tz: str
    weight: float
    cities: tuple[_City, ...]
    isps: tuple[_Isp, ...]
    mobile: tuple[_Isp, ...]
    office: _Isp
    first: tuple[str, ...]
    last: tuple[str, ...]
    start_h: float  # typical local start of work
    p_office: float  # share of working days spent at the office
    cloud: str  # regional object-store SaaS key


@dataclass(frozen=True, slots=True)
class _Infra:
    """An attacker-side network: hosting provider region or foreign ISP."""

    isp: _Isp
    city: _City


def _c(name: str, country: str, lat: float, lon: float, off: int) -> _City:
    return _City(name, country, lat, lon, off)


_US_FIRST = (
    "james", "mary", "robert", "patricia", "john", "jennifer", "michael", "linda", "david",
    "elizabeth", "william", "barbara", "richard", "susan", "joseph", "jessica", "thomas",
    "sarah", "chris", "karen", "daniel", "emily", "matthew", "ashley", "anthony", "megan",
    "mark", "rachel", "kevin", "laura", "brian", "nicole", "jason", "amanda", "ryan", "olivia",
)  # fmt: skip
_US_LAST = (
    "smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "rodriguez",
    "martinez", "wilson", "anderson", "taylor", "thomas", "moore", "jackson", "martin", "lee",
    "thompson", "white", "harris", "clark", "lewis", "walker", "young", "allen", "king",
    "wright", "scott", "green", "baker", "nguyen", "hill", "adams", "campbell", "mitchell",
)  # fmt: skip
_UK_FIRST = (
    "oliver", "amelia", "george", "isla", "harry", "ava", "jack", "mia", "charlie", "emily",
    "thomas", "grace", "james", "sophie", "william", "lily", "alfie", "freya", "henry", "chloe",
)  # fmt: skip
_UK_LAST = (
    "smith", "jones", "taylor", "brown", "williams", "wilson", "johnson", "davies", "evans",
    "thomas", "roberts", "walker", "wright", "robinson", "thompson", "hughes", "edwards",
    "green", "hall", "wood", "patel", "khan", "murphy", "clarke",
)  # fmt: skip
_DE_FIRST = (
    "lukas", "anna", "leon", "lea", "finn", "hannah", "jonas", "mia", "paul", "lena", "felix",
    "laura", "maximilian", "sophie", "tim", "julia", "jan", "katharina", "niklas", "sarah",
)  # fmt: skip
_DE_LAST = (
    "mueller", "schmidt", "schneider", "fischer", "weber", "meyer", "wagner", "becker",
    "schulz", "hoffmann", "koch", "richter", "klein", "wolf", "schroeder", "neumann",
    "schwarz", "zimmermann", "braun", "krueger",
)  # fmt: skip
_IN_FIRST = (
    "aarav", "priya", "vivaan", "ananya", "aditya", "diya", "arjun", "kavya", "rohan", "sneha",
    "rahul", "pooja", "vikram", "neha", "karthik", "divya", "sanjay", "meera", "amit", "lakshmi",
)  # fmt: skip
_IN_LAST = (
    "sharma", "patel", "iyer", "reddy", "nair", "gupta", "singh", "kumar", "rao", "menon",
    "joshi", "mehta", "desai", "agarwal", "pillai", "verma", "bose", "chatterjee", "kulkarni",
    "shah",
)  # fmt: skip
_JP_FIRST = (
    "haruto", "yui", "sota", "hina", "yuto", "sakura", "ren", "aoi", "takumi", "yuna", "kenji",
    "mei", "daiki", "rin", "hiroshi", "emi",
)  # fmt: skip
_JP_LAST = (
    "sato", "suzuki", "takahashi", "tanaka", "watanabe", "ito", "yamamoto", "nakamura",
    "kobayashi", "kato", "yoshida", "yamada", "sasaki", "matsumoto", "inoue", "kimura",
)  # fmt: skip
_BR_FIRST = (
    "miguel", "alice", "arthur", "sophia", "davi", "helena", "gabriel", "valentina", "pedro",
    "laura", "lucas", "isabella", "matheus", "manuela", "rafael", "julia", "gustavo",
    "beatriz", "felipe", "larissa",
)  # fmt: skip
_BR_LAST = (
    "silva", "santos", "oliveira", "souza", "rodrigues", "ferreira", "alves", "pereira",
    "lima", "gomes", "costa", "ribeiro", "martins", "carvalho", "almeida", "lopes", "barbosa",
    "rocha", "dias", "moreira",
)  # fmt: skip

_REGIONS: Final[tuple[_Region, ...]] = (
    _Region(
        key="us-east",
        tz="America/New_York",
        weight=0.24,
        cities=(
            _c("New York", "US", 40.7128, -74.006, -300),
            _c("Boston", "US", 42.3601, -71.0589, -300),
            _c("Philadelphia", "US", 39.9526, -75.1652, -300),
        ),
        isps=(
            _Isp(7922, "COMCAST-7922", ((73, 0, 255), (98, 192, 255), (24, 0, 15))),
            _Isp(701, "UUNET", ((72, 64, 95), (108, 0, 55))),
        ),
        mobile=(
            _Isp(21928, "T-MOBILE-AS21928", ((172, 32, 63),), "mobile"),
            _Isp(22394, "CELLCO", ((174, 192, 255),), "mobile"),
        ),
        office=_Isp(3356, "LEVEL3", ((4, 0, 255),), "business"),
        first=_US_FIRST,
        last=_US_LAST,
        start_h=8.5,
        p_office=0.45,
        cloud="s3-us-east-1",
    ),
    _Region(
        key="us-central",
        tz="America/Chicago",
        weight=0.1,
        cities=(
            _c("Chicago", "US", 41.8781, -87.6298, -360),
            _c("Austin", "US", 30.2672, -97.7431, -360),
            _c("Dallas", "US", 32.7767, -96.797, -360),
        ),
        isps=(
            _Isp(7922, "COMCAST-7922", ((73, 0, 255), (98, 192, 255))),
            _Isp(7018, "ATT-INTERNET4", ((99, 0, 191), (107, 64, 127))),
            _Isp(20115, "CHARTER-20115", ((75, 128, 159), (97, 80, 95))),
        ),
        mobile=(
            _Isp(20057, "ATT-MOBILITY-LLC-AS20057", ((166, 128, 255),), "mobile"),
            _Isp(21928, "T-MOBILE-AS21928", ((172, 32, 63),), "mobile"),
        ),
        office=_Isp(6461, "ZAYO-6461", ((64, 125, 125),), "business"),
        first=_US_FIRST,
        last=_US_LAST,
        start_h=8.3,
        p_office=0.45,
        cloud="s3-us-east-1",
    ),
    _Region(
        key="us-west",
        tz="America/Los_Angeles",
        weight=0.15,
        cities=(
            _c("San Francisco", "US", 37.7749, -122.4194, -480),
            _c("Los Angeles", "US", 34.0522, -118.2437, -480),
            _c("Seattle", "US", 47.6062, -122.3321, -480),
        ),
        isps=(
            _Isp(7922, "COMCAST-7922", ((73, 0, 255), (98, 192, 255))),
            _Isp(7018, "ATT-INTERNET4", ((99, 0, 191), (107, 64, 127))),
        ),
        mobile=(
            _Isp(22394, "CELLCO", ((174, 192, 255),), "mobile"),
            _Isp(21928, "T-MOBILE-AS21928", ((172, 32, 63),), "mobile"),
        ),
        office=_Isp(174, "COGENT-174", ((38, 0, 255),), "business"),
        first=_US_FIRST,
        last=_US_LAST,
        start_h=8.8,
        p_office=0.4,
        cloud="s3-us-west-2",
    ),
    _Region(
        key="uk",
        tz="Europe/London",
        weight=0.12,
        cities=(
            _c("London", "GB", 51.5074, -0.1278, 0),
            _c("Manchester", "GB", 53.4808, -2.2426, 0),
            _c("Edinburgh", "GB", 55.9533, -3.1883, 0),
        ),
        isps=(
            _Isp(2856, "BT-UK-AS", ((81, 128, 159), (86, 128, 191), (109, 144, 159))),
            _Isp(5089, "NTL", ((82, 0, 47), (86, 0, 31))),
            _Isp(5607, "BSKYB-BROADBAND-AS", ((5, 64, 81), (94, 0, 15))),
        ),
        mobile=(
            _Isp(12576, "ORANGE-PCS", ((31, 94, 127),), "mobile"),
            _Isp(25135, "VODAFONE_UK_ASN", ((85, 255, 255),), "mobile"),
        ),
        office=_Isp(8220, "COLT", ((212, 36, 39),), "business"),
        first=_UK_FIRST,
        last=_UK_LAST,
        start_h=8.6,
        p_office=0.5,
        cloud="s3-eu-west-2",
    ),
    _Region(
        key="de",
        tz="Europe/Berlin",
        weight=0.12,
        cities=(
            _c("Berlin", "DE", 52.52, 13.405, 60),
            _c("Hamburg", "DE", 53.5511, 9.9937, 60),
            _c("Munich", "DE", 48.1351, 11.582, 60),
            _c("Frankfurt", "DE", 50.1109, 8.6821, 60),
        ),
        isps=(
            _Isp(3320, "DTAG", ((79, 192, 255), (87, 128, 191), (91, 0, 63), (93, 192, 255))),
            _Isp(3209, "VODANET", ((88, 64, 79), (178, 0, 15))),
            _Isp(6805, "TDDE-ASN1", ((77, 0, 15), (95, 112, 119))),
        ),
        mobile=(
            _Isp(3209, "VODANET", ((109, 40, 47),), "mobile"),
            _Isp(6805, "TDDE-ASN1", ((176, 0, 7),), "mobile"),
        ),
        office=_Isp(3320, "DTAG", ((80, 128, 159),), "business"),
        first=_DE_FIRST,
        last=_DE_LAST,
        start_h=8.2,
        p_office=0.55,
        cloud="s3-eu-central-1",
    ),
    _Region(
        key="in",
        tz="Asia/Kolkata",
        weight=0.13,
        cities=(
            _c("Bengaluru", "IN", 12.9716, 77.5946, 330),
            _c("Hyderabad", "IN", 17.385, 78.4867, 330),
            _c("Mumbai", "IN", 19.076, 72.8777, 330),
            _c("Pune", "IN", 18.5204, 73.8567, 330),
        ),
        isps=(
            _Isp(55836, "RELIANCEJIO-IN", ((49, 32, 47), (157, 32, 51))),
            _Isp(24560, "AIRTELBROADBAND-AS-AP", ((122, 160, 179), (182, 64, 79))),
            _Isp(24309, "ATRIA-AS-AP", ((106, 51, 51), (49, 204, 207))),
        ),
        mobile=(
            _Isp(55836, "RELIANCEJIO-IN", ((106, 192, 223),), "mobile"),
            _Isp(45609, "BHARTI-MOBILITY-AS-AP", ((223, 176, 191),), "mobile"),
        ),
        office=_Isp(4755, "TATACOMM-AS", ((14, 140, 143),), "business"),
        first=_IN_FIRST,
        last=_IN_LAST,
        start_h=9.6,
        p_office=0.65,
        cloud="s3-ap-south-1",
    ),
    _Region(
        key="jp",
        tz="Asia/Tokyo",
        weight=0.06,
        cities=(
            _c("Tokyo", "JP", 35.6762, 139.6503, 540),
            _c("Yokohama", "JP", 35.4437, 139.638, 540),
            _c("Osaka", "JP", 34.6937, 135.5023, 540),
        ),
        isps=(
            _Isp(4713, "OCN", ((60, 32, 47), (153, 128, 255))),
            _Isp(2516, "KDDI", ((106, 128, 191), (27, 80, 95))),
            _Isp(17676, "GIGAINFRA", ((126, 0, 255),)),
        ),
        mobile=(_Isp(9605, "DOCOMO", ((1, 66, 79), (49, 96, 111)), "mobile"),),
        office=_Isp(2497, "IIJ", ((210, 130, 130),), "business"),
        first=_JP_FIRST,
        last=_JP_LAST,
        start_h=9.0,
        p_office=0.7,
        cloud="s3-ap-northeast-1",
    ),
    _Region(
        key="br",
        tz="America/Sao_Paulo",
        weight=0.08,
        cities=(
            _c("Sao Paulo", "BR", -23.5505, -46.6333, -180),
            _c("Campinas", "BR", -22.9099, -47.0626, -180),
            _c("Rio de Janeiro", "BR", -22.9068, -43.1729, -180),
        ),
        isps=(
            _Isp(28573, "CLARO S.A.", ((177, 32, 63), (189, 0, 63))),
            _Isp(26599, "TELEFONICA BRASIL S.A", ((177, 64, 95), (187, 0, 63))),
        ),
        mobile=(_Isp(26615, "TIM SA", ((187, 24, 31),), "mobile"),),
        office=_Isp(4230, "CLARO S.A.", ((200, 244, 244),), "business"),
        first=_BR_FIRST,
        last=_BR_LAST,
        start_h=8.7,
        p_office=0.5,
        cloud="s3-sa-east-1",
    ),
)

#: Extra travel destinations (besides the company's own sites): hotel / local ISPs.
_TRAVEL_EXTRA: Final[tuple[tuple[_City, _Isp], ...]] = (
    (_c("Paris", "FR", 48.8566, 2.3522, 60), _Isp(3215, "Orange", ((90, 0, 127),))),
    (_c("Amsterdam", "NL", 52.3676, 4.9041, 60), _Isp(1136, "KPN", ((84, 80, 87),))),
    (_c("Madrid", "ES", 40.4168, -3.7038, 60), _Isp(3352, "TELEFONICA_DE_ESPANA", ((83, 32, 63),))),
    (_c("Singapore", "SG", 1.3521, 103.8198, 480), _Isp(9506, "SINGTEL-FIBRE", ((116, 86, 89),))),
    (
        _c("Toronto", "CA", 43.6532, -79.3832, -300),
        _Isp(812, "ROGERS-COMMUNICATIONS", ((99, 224, 255),)),
    ),
    (_c("Dubai", "AE", 25.2048, 55.2708, 240), _Isp(5384, "EMIRATES-INTERNET", ((94, 200, 207),))),
    (_c("Sydney", "AU", -33.8688, 151.2093, 600), _Isp(1221, "ASN-TELSTRA", ((1, 120, 159),))),
    (_c("Mexico City", "MX", 19.4326, -99.1332, -360), _Isp(8151, "UNINET", ((187, 128, 191),))),
)


def _h(asn: int, name: str, blocks: tuple[tuple[int, int, int], ...], city: _City) -> _Infra:
    return _Infra(_Isp(asn, name, blocks, "hosting"), city)


_AMS = _c("Amsterdam", "NL", 52.3676, 4.9041, 60)
_SIN = _c("Singapore", "SG", 1.3521, 103.8198, 480)
_FRA = _c("Frankfurt", "DE", 50.1109, 8.6821, 60)

#: Hosting providers attackers rent from (``kind == "hosting"``).
_HOSTING: Final[tuple[_Infra, ...]] = (
    _h(14061, "DIGITALOCEAN-ASN", ((188, 166, 166), (178, 62, 62), (146, 190, 190)), _AMS),
    _h(14061, "DIGITALOCEAN-ASN", ((128, 199, 199), (159, 89, 89)), _SIN),
    _h(14061, "DIGITALOCEAN-ASN", ((164, 90, 90), (207, 154, 154)), _FRA),
    _h(
        16276,
        "OVH",
        ((51, 75, 77), (145, 239, 239), (54, 37, 38)),
        _c("Roubaix", "FR", 50.6942, 3.1746, 60),
    ),
    _h(
        16276,
        "OVH",
        ((51, 222, 222), (142, 4, 4), (144, 217, 217)),
        _c("Beauharnois", "CA", 45.3151, -73.8779, -300),
    ),
    _h(16276, "OVH", ((51, 83, 83), (146, 59, 59)), _c("Warsaw", "PL", 52.2297, 21.0122, 60)),
    _h(
        24940,
        "HETZNER-AS",
        ((78, 46, 47), (88, 198, 198), (136, 243, 243)),
        _c("Falkenstein", "DE", 50.4779, 12.3713, 60),
    ),
    _h(
        24940,
        "HETZNER-AS",
        ((65, 21, 21), (95, 216, 217), (135, 181, 181)),
        _c("Helsinki", "FI", 60.1699, 24.9384, 120),
    ),
    _h(
        20473,
        "AS-CHOOPA",
        ((45, 76, 77), (139, 180, 180)),
        _c("Tokyo", "JP", 35.6762, 139.6503, 540),
    ),
    _h(20473, "AS-CHOOPA", ((45, 32, 32), (95, 179, 179), (136, 244, 244)), _AMS),
    _h(20473, "AS-CHOOPA", ((149, 28, 28), (45, 77, 77)), _SIN),
    _h(
        9009,
        "M247",
        ((89, 46, 46), (185, 156, 156), (91, 207, 207)),
        _c("Bucharest", "RO", 44.4268, 26.1025, 120),
    ),
    _h(9009, "M247", ((89, 238, 238), (185, 195, 195)), _c("London", "GB", 51.5074, -0.1278, 0)),
    _h(16509, "AMAZON-02", ((13, 228, 229), (54, 169, 169), (18, 141, 141)), _SIN),
    _h(
        16509,
        "AMAZON-02",
        ((18, 228, 231), (54, 232, 233)),
        _c("Sao Paulo", "BR", -23.5505, -46.6333, -180),
    ),
    _h(16509, "AMAZON-02", ((13, 244, 245),), _c("Cape Town", "ZA", -33.9249, 18.4241, 120)),
    _h(
        16509,
        "AMAZON-02",
        ((3, 34, 39), (13, 124, 125), (52, 78, 79)),
        _c("Seoul", "KR", 37.5665, 126.9780, 540),
    ),
)

#: Foreign residential / mobile networks (used by some abuse of leaked credentials).
_FOREIGN_RESIDENTIAL: Final[tuple[_Infra, ...]] = (
    _Infra(
        _Isp(29465, "MTN-NG-AS", ((102, 89, 89), (105, 112, 112))),
        _c("Lagos", "NG", 6.5244, 3.3792, 60),
    ),
    _Infra(
        _Isp(7552, "VIETTEL-AS-VN", ((27, 72, 79), (171, 224, 255))),
        _c("Hanoi", "VN", 21.0278, 105.8342, 420),
    ),
    _Infra(
        _Isp(12389, "ROSTELECOM-AS", ((95, 24, 31), (178, 64, 71))),
        _c("Moscow", "RU", 55.7558, 37.6173, 180),
    ),
    _Infra(
        _Isp(9121, "TTNET", ((78, 160, 191), (88, 224, 255))),
        _c("Istanbul", "TR", 41.0082, 28.9784, 180),
    ),
    _Infra(
        _Isp(45899, "VNPT-AS-VN", ((113, 160, 191),)),
        _c("Ho Chi Minh City", "VN", 10.8231, 106.6297, 420),
    ),
    _Infra(
        _Isp(8452, "TE-AS", ((41, 32, 47), (197, 32, 63))), _c("Cairo", "EG", 30.0444, 31.2357, 120)
    ),
)

#: External destinations for exfiltration: (hostname, isp, country).
_EXFIL: Final[tuple[tuple[str, _Isp, str], ...]] = (
    ("ams3.digitaloceanspaces.com", _Isp(14061, "DIGITALOCEAN-ASN", ((188, 166, 166),)), "NL"),
    ("sgp1.digitaloceanspaces.com", _Isp(14061, "DIGITALOCEAN-ASN", ((128, 199, 199),)), "SG"),
    ("fsn1.your-objectstorage.com", _Isp(24940, "HETZNER-AS", ((78, 46, 47),)), "DE"),
    ("hel1.your-objectstorage.com", _Isp(24940, "HETZNER-AS", ((95, 216, 217),)), "FI"),
    ("store-eu-par-3.gofile.io", _Isp(16276, "OVH", ((51, 75, 77),)), "FR"),
    ("vps-7c1e.vps.ovh.ca", _Isp(16276, "OVH", ((51, 222, 222),)), "CA"),
    ("upload.m247.ro", _Isp(9009, "M247", ((185, 156, 156),)), "RO"),
    ("oss-cn-hongkong.aliyuncs.com", _Isp(45102, "ALIBABA-CN-NET", ((47, 75, 75),)), "HK"),
    ("files.selcdn.ru", _Isp(49505, "SELECTEL", ((92, 53, 53),)), "RU"),
)

#: SaaS destinations: key -> (hostname, country, asn, as name, first octets, profile).
_SAAS: Final[
    dict[str, tuple[str, str, int, str, tuple[int, int, int], tuple[float, float, float]]]
] = {
    "outlook": (
        "outlook.office365.com",
        "US",
        8075,
        "MICROSOFT-CORP-MSN-AS-BLOCK",
        (52, 96, 98),
        (11.0, 9.4, 1.4),
    ),
    "teams": (
        "teams.microsoft.com",
        "US",
        8075,
        "MICROSOFT-CORP-MSN-AS-BLOCK",
        (52, 112, 115),
        (11.5, 10.5, 1.5),
    ),
    "m365-login": (
        "login.microsoftonline.com",
        "IE",
        8075,
        "MICROSOFT-CORP-MSN-AS-BLOCK",
        (20, 190, 190),
        (8.5, 8.0, 0.7),
    ),
    "google": ("www.google.com", "US", 15169, "GOOGLE", (142, 250, 251), (10.5, 8.2, 1.3)),
    "youtube": ("www.youtube.com", "US", 15169, "GOOGLE", (172, 217, 217), (13.5, 8.5, 1.6)),
    "zoom": ("zoom.us", "US", 30103, "ZOOM-VIDEO-COMM-AS", (170, 114, 114), (14.5, 14.0, 1.2)),
    "github": ("github.com", "US", 36459, "GITHUB", (140, 82, 127), (12.0, 9.5, 1.6)),
    "salesforce": (
        "login.salesforce.com",
        "US",
        14340,
        "SALESFORCE",
        (13, 110, 111),
        (11.0, 9.0, 1.3),
    ),
    "slack": ("wss-primary.slack.com", "US", 16509, "AMAZON-02", (3, 208, 239), (10.0, 8.8, 1.2)),
    "dropbox": ("www.dropbox.com", "US", 19679, "DROPBOX", (162, 125, 125), (11.5, 11.0, 1.8)),
    "cloudflare": (
        "cdnjs.cloudflare.com",
        "US",
        13335,
        "CLOUDFLARENET",
        (104, 16, 31),
        (10.8, 7.8, 1.2),
    ),
    "akamai": ("a248.e.akamai.net", "US", 16625, "AKAMAI-AS", (23, 32, 63), (11.8, 7.9, 1.4)),
    "linkedin": ("www.linkedin.com", "US", 14413, "LINKEDIN", (13, 107, 107), (11.0, 8.4, 1.2)),
    "s3-us-east-1": (
        "s3.amazonaws.com",
        "US",
        16509,
        "AMAZON-02",
        (52, 216, 217),
        (12.0, 11.0, 2.0),
    ),
    "s3-us-west-2": (
        "s3.us-west-2.amazonaws.com",
        "US",
        16509,
        "AMAZON-02",
        (52, 218, 218),
        (12.0, 11.0, 2.0),
    ),
    "s3-eu-west-1": (
        "s3.eu-west-1.amazonaws.com",
        "IE",
        16509,
        "AMAZON-02",
        (52, 218, 218),
        (12.0, 11.0, 2.0),
    ),
    "s3-eu-west-2": (
        "s3.eu-west-2.amazonaws.com",
        "GB",
        16509,
        "AMAZON-02",
        (52, 95, 95),
        (12.0, 11.0, 2.0),
    ),
    "s3-eu-central-1": (
        "s3.eu-central-1.amazonaws.com",
        "DE",
        16509,
        "AMAZON-02",
        (52, 219, 219),
        (12.0, 11.0, 2.0),
    ),
    "s3-ap-south-1": (
        "s3.ap-south-1.amazonaws.com",
        "IN",
        16509,
        "AMAZON-02",
        (52, 219, 219),
        (12.0, 11.0, 2.0),
    ),
    "s3-ap-northeast-1": (
        "s3.ap-northeast-1.amazonaws.com",
        "JP",
        16509,
        "AMAZON-02",
        (52, 219, 219),
        (12.0, 11.0, 2.0),
    ),
    "s3-sa-east-1": (
        "s3.sa-east-1.amazonaws.com",
        "BR",
        16509,
        "AMAZON-02",
        (52, 95, 95),
        (12.0, 11.0, 2.0),
    ),
}

#: Update servers for user-less devices: kind -> (hostname, country, asn, as name, octets).
_UPDATE_SERVERS: Final[dict[str, tuple[str, str, int, str, tuple[int, int, int]]]] = {
    "camera": ("firmware.axis.com", "SE", 3301, "TELIANET-SWEDEN", (195, 60, 60)),
    "printer": ("h10141.www1.hp.com", "US", 71, "HP-INTERNET-AS", (15, 72, 73)),
    "server": ("security.ubuntu.com", "GB", 41231, "CANONICAL-AS", (91, 189, 189)),
}

#: Internal apps: name -> (hostname, ip).
_APPS: Final[dict[str, tuple[str, str]]] = {
    "mail": (f"mail.{DOMAIN}", "10.20.0.11"),
    "chat": (f"chat.{DOMAIN}", "10.20.0.12"),
    "crm": (f"crm.{DOMAIN}", "10.20.0.13"),
    "hr-portal": (f"hr.{DOMAIN}", "10.20.0.14"),
    "git": (f"git.{DOMAIN}", "10.20.0.15"),
    "wiki": (f"wiki.{DOMAIN}", "10.20.0.16"),
    "payroll": (f"payroll.{DOMAIN}", "10.20.0.17"),
    "vpn": (f"vpn.{DOMAIN}", "10.20.0.18"),
    "admin-console": (f"admin.{DOMAIN}", "10.20.0.19"),
    "finance-erp": (f"erp.{DOMAIN}", "10.20.0.20"),
    "ci": (f"ci.{DOMAIN}", "10.20.0.21"),
    "file-share": (f"files.{DOMAIN}", "10.20.0.22"),
}
_SENSITIVE_APPS: Final = ("payroll", "finance-erp", "hr-portal")
_ATO_APPS: Final = ("mail", "file-share", "mail", "file-share", "crm", "wiki", "hr-portal")
_SERVICE_D: Final[dict[str, dict[str, object]]] = {a: {"name": a} for a in _APPS}
_APP_DST: Final[dict[str, dict[str, object]]] = {
    a: {"hostname": h, "ip": ip} for a, (h, ip) in _APPS.items()
}

#: Department -> (weight, core apps).
_DEPTS: Final[dict[str, tuple[float, tuple[str, ...]]]] = {
    "engineering": (0.32, ("git", "ci", "chat", "mail", "wiki", "vpn", "file-share")),
    "sales": (0.16, ("crm", "mail", "chat", "file-share", "wiki")),
    "support": (0.12, ("crm", "chat", "mail", "wiki")),
    "marketing": (0.10, ("mail", "chat", "file-share", "crm", "wiki")),
    "finance": (0.10, ("finance-erp", "mail", "payroll", "chat", "file-share")),
    "hr": (0.06, ("hr-portal", "mail", "payroll", "chat", "file-share")),
    "operations": (0.14, ("mail", "chat", "file-share", "wiki", "vpn", "crm")),
}
_ADMIN_APPS: Final = ("admin-console", "chat", "mail", "vpn", "git", "wiki", "ci", "file-share")
_VENDOR_APPS: Final = ("vpn", "file-share", "wiki", "git", "ci")
_EXTRA_APPS: Final = ("wiki", "file-share", "vpn", "crm", "chat", "mail")

#: Service accounts: (name, app, user agent).
_SERVICE_ACCOUNTS: Final = (
    ("svc-backup", "file-share", "Veeam-Agent/6.1.2"),
    ("svc-ci-runner", "git", "git/2.43.0"),
    ("svc-etl", "finance-erp", "Apache-HttpClient/4.5.14 (Java/17.0.9)"),
    ("svc-monitoring", "chat", "python-requests/2.31.0"),
    ("svc-reporting", "crm", "Apache-HttpClient/4.5.14 (Java/17.0.9)"),
    ("svc-payroll-sync", "payroll", "Go-http-client/1.1"),
    ("svc-ldap-sync", "hr-portal", "python-requests/2.32.3"),
    ("svc-build", "ci", "Go-http-client/1.1"),
    ("svc-alerts", "mail", "curl/8.5.0"),
)

_SCRIPT_UAS: Final = (
    "python-requests/2.31.0",
    "python-requests/2.32.3",
    "curl/8.5.0",
    "Go-http-client/1.1",
    "axios/1.6.8",
    "okhttp/4.12.0",
)
_ODD_BROWSER_UAS: Final = (
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/116.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 6.1; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/109.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/118.0.0.0 Safari/537.36 OPR/104.0.0.0",
)
_SPRAY_UAS: Final = (
    "BAV2ROPC",
    "python-requests/2.31.0",
    "Mozilla/5.0 (compatible; MSAL 1.0) PKeyAuth/1.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/116.0.0.0 Safari/537.36",
)

_CONN: Final[dict[tuple[str, int], dict[str, object]]] = {
    (p, d): {"protocol_name": p, "direction_id": d} for p in ("tcp", "udp") for d in (2, 3)
}
_UDP_PORTS: Final = frozenset({53, 123, 161, 162, 514})
_LN = math.log

#: Port -> (mu bytes_in, mu bytes_out, sigma) of log-normal volumes.
_PORT_PROFILE: Final[dict[int, tuple[float, float, float]]] = {
    445: (_LN(1.5e5), _LN(1.5e4), 1.8),
    22: (_LN(4e4), _LN(1.2e4), 1.5),
    443: (_LN(6e4), _LN(8e3), 1.4),
    8443: (_LN(6e4), _LN(8e3), 1.4),
    8080: (_LN(5e4), _LN(6e3), 1.4),
    8081: (_LN(3e5), _LN(6e3), 1.6),
    6443: (_LN(2e4), _LN(4e3), 1.2),
    8200: (_LN(3e3), _LN(1.5e3), 0.6),
    5432: (_LN(2e5), _LN(6e3), 1.7),
    3306: (_LN(2e5), _LN(6e3), 1.7),
    1433: (_LN(2e5), _LN(6e3), 1.7),
    389: (_LN(4e3), _LN(2e3), 0.7),
    88: (_LN(3e3), _LN(1.8e3), 0.5),
    53: (_LN(300.0), _LN(90.0), 0.4),
    123: (_LN(90.0), _LN(90.0), 0.05),
    9100: (_LN(1.5e3), _LN(2.5e5), 1.2),
    631: (_LN(2e3), _LN(1.5e3), 0.6),
    3389: (_LN(2e6), _LN(3e5), 1.3),
    5985: (_LN(2e4), _LN(1.5e4), 1.0),
    554: (_LN(2e3), _LN(3e7), 0.3),
    514: (0.0, _LN(4e4), 0.5),
    162: (0.0, _LN(600.0), 0.3),
    10000: (_LN(2e4), _LN(4e8), 0.6),
}

#: Internal core hosts: (hostname, ports, role).
_CORE_HOSTS: Final = (
    ("dc01", (88, 389, 53, 445), "domain-controller"),
    ("dc02", (88, 389, 53, 445), "domain-controller"),
    ("fs01", (445,), "file-server"),
    ("fs02", (445,), "file-server"),
    ("fs03", (445,), "file-server"),
    ("fs04", (445,), "file-server"),
    ("git01", (22, 443), "git"),
    ("ci01", (443, 8080), "ci"),
    ("ci02", (443, 8080), "ci"),
    ("artifact01", (443, 8081), "artifacts"),
    ("k8s-api01", (6443,), "kubernetes"),
    ("db01", (5432,), "database"),
    ("db02", (5432,), "database"),
    ("db03", (3306,), "database"),
    ("erp-db01", (1433,), "database"),
    ("wiki01", (443,), "wiki"),
    ("print01", (631, 9100), "print"),
    ("jump01", (22, 3389), "jump"),
    ("jump02", (22, 3389), "jump"),
    ("vault01", (8200,), "secrets"),
    ("mon01", (443, 162), "monitoring"),
    ("syslog01", (514,), "logging"),
    ("ntp01", (123,), "ntp"),
    ("nvr01", (554,), "video"),
    ("backup01", (10000, 445), "backup"),
)
_GENERIC_PORTS: Final = ((443,), (8443,), (443, 22), (8080,), (3389,), (22,), (443, 5985))


_ZBITS: Final = 16
_Z: list[float] = []  # standard normal quantiles, built on first use


def _ztable() -> list[float]:
    """Return 2**16 standard normal quantiles: ``z[rng.getrandbits(16)]`` ~ N(0, 1).

    A table lookup is about three times faster than ``random.gauss`` on the
    hot path and just as deterministic.
    """
    if not _Z:
        nd = NormalDist()
        n = 1 << _ZBITS
        _Z.extend(nd.inv_cdf((i + 0.5) / n) for i in range(n))
    return _Z


def _haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 12_742.0 * math.asin(min(1.0, math.sqrt(a)))


def _local_midnight(start_ms: int, g: int, offset_ms: int) -> int:
    """UTC ms of the local midnight nearest to ``start_ms + g`` days."""
    local = start_ms + g * DAY_MS + offset_ms
    return (local + DAY_MS // 2) // DAY_MS * DAY_MS - offset_ms


def _weekday(midnight_utc: int, offset_ms: int) -> int:
    """Local weekday (Monday 0) of a local midnight given in UTC ms."""
    return ((midnight_utc + offset_ms) // DAY_MS + 3) % 7


def _cum(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    acc, out = 0.0, []
    for w in weights:
        acc += w / total
        out.append(acc)
    out[-1] = 1.0
    return out


# ----------------------------------------------------------------------------
# Simulated organisation
# ----------------------------------------------------------------------------


class _Place:
    """A public source network context (IP + geo + ASN), with cached OCSF dicts."""

    __slots__ = ("_src", "as_name", "asd", "asn", "city", "ip", "kind", "loc")

    def __init__(self, ip: str, city: _City, asn: int | None, as_name: str | None, kind: str):
        self.ip = ip
        self.city = city
        self.asn = asn
        self.as_name = as_name
        self.kind = kind
        self.loc: dict[str, object] = {
            "country": city.country,
            "city": city.name,
            "lat": city.lat,
            "long": city.lon,
        }
        self.asd: dict[str, object] | None = (
            {"number": asn, "name": as_name} if asn is not None else None
        )
        self._src: dict[str | None, dict[str, object]] = {}

    def src(self, dev_uid: str | None) -> dict[str, object]:
        d = self._src.get(dev_uid)
        if d is None:
            d = {"ip": self.ip}
            if dev_uid is not None:
                d["uid"] = dev_uid
            d["location"] = self.loc
            if self.asd is not None:
                d["autonomous_system"] = self.asd
            self._src[dev_uid] = d
        return d

    def to_dict(self) -> dict[str, object]:
        return {
            "ip": self.ip,
            "kind": self.kind,
            "country": self.city.country,
            "city": self.city.name,
            "asn": self.asn,
            "as_name": self.as_name,
        }


class _Device:
    __slots__ = ("hostname", "http", "ip", "kind", "net_src", "os", "owner", "ref", "ua", "uid")

    def __init__(
        self, uid: str, kind: str, os: str, hostname: str, ip: str, ua: str, owner: str | None
    ) -> None:
        self.uid = uid
        self.kind = kind
        self.os = os
        self.hostname = hostname
        self.ip = ip
        self.ua = ua
        self.owner = owner
        self.http: dict[str, object] = {"user_agent": ua}
        self.ref: dict[str, object] = {"uid": uid}
        self.net_src: dict[str, object] = {"uid": uid, "hostname": hostname, "ip": ip}

    def to_dict(self) -> dict[str, object]:
        return {
            "uid": self.uid,
            "kind": self.kind,
            "os": self.os,
            "hostname": self.hostname,
            "ip": self.ip,
            "user_agent": self.ua,
            "owner": self.owner,
        }


@dataclass(eq=False)
class _Trip:
    cid: str
    label: Label
    dep_pass: int
    ret_pass: int  # last pass spent at the destination
    city: _City
    hotel: _Place
    office: _Place | None
    t_dep: int
    t_arr: int
    t_dep2: int
    t_arr2: int


@dataclass(eq=False)
class _User:
    idx: int
    uid: str
    name: str
    email: str
    utype: str  # OCSF user.type
    role: str  # employee, admin, vendor, service, traveller, dormant
    dept: str
    region: _Region
    cities: list[_City]
    offset_ms: int
    home_places: list[list[_Place]]  # per city
    mobile_places: list[list[_Place]]  # per city
    office: _Place | None
    devices: list[_Device]
    apps: list[str]
    app_cum: list[float]
    hosts: list[tuple[str, int]]
    lat_flows: list[Flow]
    lat_cum: list[float]
    out_flows: list[Flow]
    out_cum: list[float]
    saas: list[str]
    user_d: dict[str, object]
    actor_user: dict[str, object]
    actor: dict[str, object]
    start_min: float = 510.0
    len_min: float = 540.0
    logons: tuple[int, int] = (8, 20)
    nets: tuple[int, int] = (20, 50)
    p_office: float = 0.5
    p_out: float = 0.55
    typo: float = 0.025
    on_call: bool = False
    weekend_day: int | None = None
    vendor_days: tuple[int, ...] = ()
    traveller: bool = False
    dormant: bool = False
    dormant_day0: bool = False
    last_seen_days_before: int = 0
    svc_app: str | None = None
    svc_interval_ms: int = 0
    svc_phase_ms: int = 0
    svc_place: _Place | None = None
    svc_device: _Device | None = None
    new_laptop: _Device | None = None
    nd_pass: int = 0
    nd_label: Label = _NORMAL
    nd_done: bool = False
    trips: list[_Trip] = field(default_factory=list)

    def countries(self) -> set[str]:
        out = {c.country for c in self.cities}
        out.update(t.city.country for t in self.trips)
        return out

    def dst_countries(self) -> set[str]:
        return {_SAAS[s][1] for s in self.saas}

    def dst_asns(self) -> set[int]:
        return {_SAAS[s][2] for s in self.saas}


@dataclass(eq=False)
class _Userless:
    device: _Device
    flows: list[tuple[int, int, int, Flow]]  # (interval ms, phase ms, jitter ms, flow)
    desc: list[dict[str, object]]


@dataclass(eq=False)
class _Campaign:
    scenario: str
    cid: str
    label: Label
    due: int
    done: bool = False


@dataclass(eq=False)
class _Session:
    t: int
    sid: dict[str, object]
    app: str
    dev: _Device
    end: int | None


class _World:
    """Organisation + event simulation for one :class:`GeneratorConfig`."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        if cfg.users < 1:
            raise ValueError("users must be >= 1")
        if cfg.days < 1:
            raise ValueError("days must be >= 1")
        if cfg.attack_days_from < 0:
            raise ValueError("attack_days_from must be >= 0")
        if cfg.devices_without_user is not None and cfg.devices_without_user < 0:
            raise ValueError("devices_without_user must be >= 0")
        self.cfg = cfg
        self.seed = cfg.seed
        self.S = cfg.start_ms
        self.D = cfg.days
        self.end = self.S + self.D * DAY_MS
        self.att_lo = self.S + cfg.attack_days_from * DAY_MS
        self._hdst: dict[tuple[str, int], dict[str, object]] = {}
        self._victims: set[str] = set()
        self._sessions: dict[int, list[_Session]] = {}
        self._net_times: dict[int, list[int]] = {}
        rng = random.Random(f"zt-synthetic/org/{cfg.seed}")  # noqa: S311
        plan = random.Random(f"zt-synthetic/plan/{cfg.seed}")  # noqa: S311
        self.counts = self._campaign_counts(plan)
        self._build_hosts()
        self._build_saas(rng)
        self._build_userless(rng)
        self._build_users(rng)
        self._build_trips(rng)
        self._build_new_devices(rng, plan)
        self.campaigns = self._plan_campaigns(plan)

    # -- organisation --------------------------------------------------------

    def _campaign_counts(self, plan: random.Random) -> dict[str, int]:
        cfg = self.cfg
        attack_days = max(0, cfg.days - cfg.attack_days_from)
        counts: dict[str, int] = {}
        for s in ATTACK_SCENARIOS:
            n = int(cfg.users * attack_days / 450 + plan.random()) if cfg.attacks else 0
            if cfg.attacks and attack_days >= 1 and cfg.users >= 20:
                n = max(1, n)
            counts[s] = n
        return counts

    def _build_hosts(self) -> None:
        n_generic = max(60, self.cfg.users // 2)
        hosts: list[tuple[str, str, tuple[int, ...], str]] = []
        for i, (name, ports, role) in enumerate(_CORE_HOSTS):
            hosts.append((name, f"10.10.0.{10 + i}", ports, role))
        for i in range(n_generic):
            ports = _GENERIC_PORTS[(i * 7 + i // 5) % len(_GENERIC_PORTS)]
            hosts.append(
                (f"srv-{i + 1:03d}", f"10.10.{1 + i // 200}.{10 + i % 200}", ports, "app-server")
            )
        self.hosts = hosts
        self.host_ip = {h[0]: h[1] for h in hosts}
        self.generic = [h[0] for h in hosts if h[3] == "app-server"]

    def hdst(self, host: str, port: int) -> dict[str, object]:
        key = (host, port)
        d = self._hdst.get(key)
        if d is None:
            d = {"ip": self.host_ip[host], "port": port, "hostname": f"{host}.corp.{DOMAIN}"}
            self._hdst[key] = d
        return d

    def lat_flow(self, host: str, port: int) -> Flow:
        mu_in, mu_out, sig = _PORT_PROFILE.get(port, (_LN(2e4), _LN(5e3), 1.2))
        proto = "udp" if port in _UDP_PORTS else "tcp"
        return (self.hdst(host, port), _CONN[(proto, 3)], mu_in, mu_out, sig)

    def _build_saas(self, rng: random.Random) -> None:
        self.saas_flows: dict[str, list[Flow]] = {}
        for key, (host, country, asn, as_name, (a, lo, hi), prof) in _SAAS.items():
            flows: list[Flow] = []
            for _ in range(3):
                ip = f"{a}.{rng.randint(lo, hi)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
                dst: dict[str, object] = {
                    "ip": ip,
                    "port": 443,
                    "hostname": host,
                    "location": {"country": country},
                    "autonomous_system": {"number": asn, "name": as_name},
                }
                flows.append((dst, _CONN[("tcp", 2)], prof[0], prof[1], prof[2]))
            self.saas_flows[key] = flows

    def _build_userless(self, rng: random.Random) -> None:
        cfg = self.cfg
        n = cfg.devices_without_user
        if n is None:
            n = max(5, cfg.users // 20)
        n_svc = self._n_service()
        n_servers = min(n, max(1, (n_svc + 2) // 3)) if n else 0
        kinds = ["server"] * n_servers
        while len(kinds) < n:
            r = rng.random()
            kinds.append("camera" if r < 0.4 else "printer" if r < 0.7 else "server")
        self.userless: list[_Userless] = []
        counters: dict[str, int] = {}
        for i, kind in enumerate(kinds):
            counters[kind] = counters.get(kind, 0) + 1
            k = counters[kind]
            prefix = {"camera": "cam", "printer": "prn", "server": "srv-app"}[kind]
            hostname = f"{prefix}-{k:02d}.corp.{DOMAIN}"
            subnet = {"camera": 1, "printer": 2, "server": 3}[kind]
            ip = f"10.50.{subnet}.{10 + k}"
            os = {"camera": "AXIS OS", "printer": "HP FutureSmart", "server": "Ubuntu 22.04"}[kind]
            ua = {"camera": "AXIS/11.8", "printer": "HP-ChaiSOE/1.0", "server": "APT-HTTP/1.3"}[
                kind
            ]
            dev = _Device(f"d-{rng.getrandbits(40):010x}", kind, os, hostname, ip, ua, None)
            upd_host, country, asn, as_name, (a, lo, hi) = _UPDATE_SERVERS[kind]
            upd_dst: dict[str, object] = {
                "ip": f"{a}.{rng.randint(lo, hi)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                "port": 443,
                "hostname": upd_host,
                "location": {"country": country},
                "autonomous_system": {"number": asn, "name": as_name},
            }
            upd_flow: Flow = (upd_dst, _CONN[("tcp", 2)], _LN(2e4), _LN(3e3), 0.8)
            spec: list[tuple[int, Flow]]
            if kind == "camera":
                spec = [
                    (10 * MIN_MS, self.lat_flow("nvr01", 554)),
                    (60 * MIN_MS, self.lat_flow("ntp01", 123)),
                    (12 * HOUR_MS, upd_flow),
                ]
            elif kind == "printer":
                spec = [
                    (15 * MIN_MS, self.lat_flow("print01", 631)),
                    (30 * MIN_MS, self.lat_flow("mon01", 162)),
                    (30 * MIN_MS, self.lat_flow("dc01", 53)),
                    (24 * HOUR_MS, upd_flow),
                ]
            else:
                spec = [
                    (10 * MIN_MS, self.lat_flow("syslog01", 514)),
                    (15 * MIN_MS, self.lat_flow("dc0" + str(1 + i % 2), 389)),
                    (6 * HOUR_MS, self.lat_flow("backup01", 10000)),
                    (60 * MIN_MS, self.lat_flow("ntp01", 123)),
                    (6 * HOUR_MS, upd_flow),
                ]
            flows = [(iv, rng.randrange(iv), max(1000, iv // 50), fl) for iv, fl in spec]
            desc: list[dict[str, object]] = [
                {
                    "dst": fl[0]["hostname"],
                    "port": fl[0]["port"],
                    "interval_s": iv // 1000,
                }
                for iv, _, _, fl in flows
            ]
            self.userless.append(_Userless(dev, flows, desc))

    def _n_service(self) -> int:
        n = self.cfg.users
        return 0 if n < 10 else max(1, round(n * 0.02))

    def _build_users(self, rng: random.Random) -> None:
        cfg = self.cfg
        n = cfg.users
        n_svc = self._n_service()
        small = n < 5
        n_adm = 0 if small else max(1, round(n * 0.05))
        n_ven = 0 if small else max(1, round(n * 0.05), self.counts["vendor_account_abuse"])
        n_trav = 0 if small else max(1, round(n * 0.08))
        n_dorm = 0 if n < 10 else max(1, round(n * 0.015), self.counts["dormant_account_abuse"])
        roles = (
            ["service"] * n_svc
            + ["admin"] * n_adm
            + ["vendor"] * n_ven
            + ["traveller"] * n_trav
            + ["dormant"] * n_dorm
        )
        roles = roles[: max(0, n - 1)] if n > 1 else []
        roles += ["employee"] * (n - len(roles))
        rng.shuffle(roles)
        region_cum = _cum([r.weight for r in _REGIONS])
        dept_names = list(_DEPTS)
        dept_cum = _cum([w for w, _ in _DEPTS.values()])
        servers = [u for u in self.userless if u.device.kind == "server"]
        office_places: dict[tuple[str, str], _Place] = {}
        used_names: set[str] = set()
        self.users: list[_User] = []
        svc_i = 0
        dc = _c("Ashburn", "US", 39.0438, -77.4874, -300)
        for idx, role in enumerate(roles):
            uid = f"u{idx:04d}"
            region = _REGIONS[min(bisect_right(region_cum, rng.random()), len(_REGIONS) - 1)]
            if role == "service":
                name, app, ua = (
                    _SERVICE_ACCOUNTS[svc_i]
                    if svc_i < len(_SERVICE_ACCOUNTS)
                    else (f"svc-job{svc_i:02d}", rng.choice(list(_APPS)), "python-requests/2.31.0")
                )
                svc_i += 1
                if servers:
                    server = servers[(svc_i - 1) % len(servers)].device
                else:
                    server = _Device(
                        f"d-{rng.getrandbits(40):010x}",
                        "server",
                        "Ubuntu 22.04",
                        f"srv-{name}.corp.{DOMAIN}",
                        f"10.50.3.{100 + svc_i}",
                        ua,
                        None,
                    )
                user_d: dict[str, object] = {
                    "uid": uid,
                    "name": name,
                    "email_addr": f"{name}@{DOMAIN}",
                    "type": "System",
                }
                actor_user: dict[str, object] = {"uid": uid, "name": name, "type": "System"}
                svc_dev = _Device(
                    server.uid, "server", server.os, server.hostname, server.ip, ua, None
                )
                u = _User(
                    idx,
                    uid,
                    name,
                    f"{name}@{DOMAIN}",
                    "System",
                    "service",
                    "it",
                    _REGIONS[0],
                    [dc],
                    dc.offset_min * MIN_MS,
                    [],
                    [],
                    None,
                    [],
                    [app],
                    [1.0],
                    [],
                    [],
                    [],
                    [],
                    [],
                    [],
                    user_d,
                    actor_user,
                    {"user": actor_user},
                )
                u.svc_app = app
                u.svc_interval_ms = rng.choice((15, 30, 30, 60)) * MIN_MS
                u.svc_phase_ms = rng.randrange(u.svc_interval_ms)
                u.svc_place = _Place(server.ip, dc, None, None, "datacenter")
                u.svc_device = svc_dev
                self.users.append(u)
                continue
            first = rng.choice(region.first)
            last = rng.choice(region.last)
            base = f"{first}.{last}"
            name = base
            k = 2
            while name in used_names:
                name = f"{base}{k}"
                k += 1
            used_names.add(name)
            if role == "admin":
                dept = "it"
            elif role == "vendor":
                dept = "vendor"
            else:
                dept = dept_names[min(bisect_right(dept_cum, rng.random()), len(dept_names) - 1)]
            utype = {"admin": "Admin", "vendor": "Vendor"}.get(role, "User")
            # cities: a primary and sometimes a nearby second home
            primary = rng.choice(region.cities)
            cities = [primary]
            near = [
                c
                for c in region.cities
                if c is not primary and _haversine_km(c.lat, c.lon, primary.lat, primary.lon) < 600
            ]
            if near and role not in ("traveller", "service") and rng.random() < 0.3:
                cities.append(rng.choice(near))
            home_isp = rng.choice(region.isps)
            home_places: list[list[_Place]] = []
            mobile_places: list[list[_Place]] = []
            mob_isp = rng.choice(region.mobile)
            for ci, city in enumerate(cities):
                isp = home_isp if ci == 0 else rng.choice(region.isps)
                ips = [isp.ip(rng)]
                if rng.random() < 0.25:
                    ips.append(isp.ip(rng))
                home_places.append([_Place(ip, city, isp.asn, isp.name, "home") for ip in ips])
                mobile_places.append(
                    [
                        _Place(mob_isp.ip(rng), city, mob_isp.asn, mob_isp.name, "mobile")
                        for _ in range(2)
                    ]
                )
            okey = (region.key, primary.name)
            office = office_places.get(okey)
            if office is None:
                office = _Place(
                    region.office.ip(rng), primary, region.office.asn, region.office.name, "office"
                )
                office_places[okey] = office
            if role == "vendor":
                office = None
            # devices
            devices = self._make_devices(rng, uid, idx, region, dept, role)
            # apps
            if role == "admin":
                core: tuple[str, ...] = _ADMIN_APPS
                n_apps = rng.randint(5, 8)
            elif role == "vendor":
                core = tuple(rng.sample(_VENDOR_APPS, 3))
                n_apps = rng.randint(2, 3)
            else:
                core = _DEPTS[dept][1]
                n_apps = rng.randint(3, min(8, len(core) + 2))
            apps = list(core[:n_apps])
            for extra in rng.sample(_EXTRA_APPS, len(_EXTRA_APPS)):
                if len(apps) >= n_apps:
                    break
                if extra not in apps:
                    apps.append(extra)
            app_cum = _cum([1.0 / (i + 1) ** 0.8 for i in range(len(apps))])
            # internal hosts
            hosts = self._user_hosts(rng, dept, role)
            lat_flows = [self.lat_flow(h, p) for h, p in hosts]
            lat_w = [
                3.0 if h.startswith("dc") else 2.0 if h.startswith(("fs", "git")) else 1.0
                for h, _ in hosts
            ]
            # SaaS destinations
            saas = ["outlook", "teams", "m365-login"]
            extra_saas = ["google", "zoom", "slack", "cloudflare", "akamai", "linkedin", "youtube"]
            if dept == "engineering" or role == "admin":
                saas += ["github", region.cloud, "s3-eu-west-1"]
            if dept in ("sales", "support", "marketing"):
                saas.append("salesforce")
            if rng.random() < 0.2:
                saas.append("dropbox")
            saas += rng.sample(extra_saas, rng.randint(1, 4))
            if role == "vendor":
                saas = ["outlook", "m365-login", "google"]
            saas = list(dict.fromkeys(saas))
            out_flows = [f for s in saas for f in self.saas_flows[s]]
            out_w = [1.0 / (1 + i // 3) ** 0.5 for i in range(len(out_flows))]
            # identity dicts (shared by every event of the user)
            email = f"{name}@{DOMAIN}"
            user_d = {"uid": uid, "name": name, "email_addr": email, "type": utype}
            actor_user = {"uid": uid, "name": name, "type": utype}
            u = _User(
                idx,
                uid,
                name,
                email,
                utype,
                role,
                dept,
                region,
                cities,
                primary.offset_min * MIN_MS,
                home_places,
                mobile_places,
                office,
                devices,
                apps,
                app_cum,
                hosts,
                lat_flows,
                _cum(lat_w),
                out_flows,
                _cum(out_w),
                saas,
                user_d,
                actor_user,
                {"user": actor_user},
            )
            start_h = region.start_h + rng.gauss(0.0, 0.6)
            u.start_min = 60.0 * min(10.5, max(6.5, start_h))
            u.len_min = 60.0 * min(10.5, max(7.5, rng.gauss(9.0, 0.5)))
            lo = rng.randint(8, 12)
            u.logons = (lo, rng.randint(max(lo + 2, 14), 25))
            nlo = rng.randint(20, 32)
            u.nets = (nlo, rng.randint(nlo + 8, 60))
            u.p_office = min(0.95, max(0.0, rng.gauss(region.p_office, 0.2)))
            u.p_out = rng.uniform(0.45, 0.65)
            u.typo = rng.uniform(0.015, 0.035)
            u.on_call = (dept in ("engineering", "it")) and rng.random() < 0.25
            if role == "employee" and rng.random() < 0.06:
                u.weekend_day = rng.choice((5, 6))
            if role == "admin":
                u.logons = (rng.randint(12, 15), rng.randint(20, 25))
                u.nets = (rng.randint(30, 40), rng.randint(50, 60))
            if role == "vendor":
                u.vendor_days = tuple(sorted(rng.sample(range(5), 2)))
                u.start_min = 60.0 * rng.uniform(9.0, 11.0)
                u.len_min = 60.0 * rng.uniform(4.0, 6.5)
                u.logons = (2, rng.randint(4, 7))
                u.nets = (5, rng.randint(8, 15))
                u.p_office = 0.0
            if role == "traveller":
                u.traveller = True
            if role == "dormant":
                u.dormant = True
                u.dormant_day0 = rng.random() < 0.5
                u.last_seen_days_before = 0 if u.dormant_day0 else rng.randint(21, 90)
                u.on_call = False
                u.weekend_day = None
            self.users.append(u)

    def _make_devices(
        self, rng: random.Random, uid: str, idx: int, region: _Region, dept: str, role: str
    ) -> list[_Device]:
        devices: list[_Device] = []
        site = _REGIONS.index(region)
        ip_base = f"10.{64 + site}.{idx // 200}"
        laptop_os = self._pick_laptop_os(rng, dept)
        devices.append(self._laptop(rng, uid, 1, laptop_os, f"{ip_base}.{10 + idx % 200}"))
        p_phone = 0.3 if role == "vendor" else 0.75
        if rng.random() < p_phone:
            ios = rng.random() < (0.6 if region.key.startswith("us") or region.key == "jp" else 0.4)
            if ios:
                ua = (
                    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 "
                    f"(KHTML, like Gecko) Version/26.{rng.randint(0, 2)} Mobile/15E148 Safari/604.1"
                )
                os = "iOS"
            else:
                ua = (
                    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
                    f"Chrome/{rng.randint(141, 143)}.0.0.0 Mobile Safari/537.36"
                )
                os = "Android"
            devices.append(
                _Device(
                    f"d-{rng.getrandbits(40):010x}",
                    "phone",
                    os,
                    f"ph-{uid}.corp.{DOMAIN}",
                    f"10.{96 + site}.{idx // 200}.{10 + idx % 200}",
                    ua,
                    uid,
                )
            )
        if role != "vendor" and rng.random() < 0.15:
            ua = (
                "Mozilla/5.0 (iPad; CPU OS 18_6 like Mac OS X) AppleWebKit/605.1.15 "
                f"(KHTML, like Gecko) Version/26.{rng.randint(0, 2)} Mobile/15E148 Safari/604.1"
            )
            devices.append(
                _Device(
                    f"d-{rng.getrandbits(40):010x}",
                    "tablet",
                    "iPadOS",
                    f"tab-{uid}.corp.{DOMAIN}",
                    f"10.{112 + site}.{idx // 200}.{10 + idx % 200}",
                    ua,
                    uid,
                )
            )
        return devices

    @staticmethod
    def _pick_laptop_os(rng: random.Random, dept: str) -> str:
        r = rng.random()
        if dept in ("engineering", "it"):
            return "Windows" if r < 0.35 else "macOS" if r < 0.8 else "Linux"
        return "Windows" if r < 0.65 else "macOS" if r < 0.95 else "Linux"

    @staticmethod
    def _laptop(rng: random.Random, uid: str, n: int, os: str, ip: str) -> _Device:
        v = rng.randint(141, 143)
        r = rng.random()
        if os == "Windows":
            ua = (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                f"Chrome/{v}.0.0.0 Safari/537.36"
            )
            if r < 0.35:
                ua += f" Edg/{v}.0.0.0"
        elif os == "macOS":
            if r < 0.45:
                ua = (
                    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                    f"(KHTML, like Gecko) Version/26.{rng.randint(0, 2)} Safari/605.1.15"
                )
            elif r < 0.9:
                ua = (
                    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
                    f"(KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36"
                )
            else:
                ua = (
                    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:146.0) Gecko/20100101 "
                    "Firefox/146.0"
                )
        else:
            fv = rng.randint(144, 146)
            ua = f"Mozilla/5.0 (X11; Linux x86_64; rv:{fv}.0) Gecko/20100101 Firefox/{fv}.0"
        return _Device(
            f"d-{rng.getrandbits(40):010x}",
            "laptop",
            os,
            f"lt-{uid}-{n}.corp.{DOMAIN}",
            ip,
            ua,
            uid,
        )

    def _user_hosts(self, rng: random.Random, dept: str, role: str) -> list[tuple[str, int]]:
        hosts: list[tuple[str, int]] = [("dc01", 389), ("dc02", 88), ("dc01", 53)]
        fs = ["fs01", "fs02", "fs03", "fs04"]
        hosts += [(f, 445) for f in rng.sample(fs, rng.randint(1, 2))]
        if rng.random() < 0.5 and role != "vendor":
            hosts.append(("print01", 9100))
        if role == "vendor":
            return [("dc01", 389), (rng.choice(fs), 445), ("git01", 22)][: rng.randint(2, 3)]
        if dept == "engineering":
            hosts += [("git01", 22), ("git01", 443), ("ci01", 443), ("artifact01", 443)]
            if rng.random() < 0.5:
                hosts.append(("k8s-api01", 6443))
            hosts += [
                (d, p)
                for d, p in rng.sample(
                    [("db01", 5432), ("db02", 5432), ("db03", 3306)], rng.randint(1, 2)
                )
            ]
            hosts += [(s, 443) for s in rng.sample(self.generic, rng.randint(1, 3))]
        elif dept == "finance":
            hosts.append(("erp-db01", 1433))
        elif role == "admin":
            hosts += [
                ("jump01", 22),
                ("jump02", 3389),
                ("vault01", 8200),
                ("mon01", 443),
                ("dc01", 445),
                ("backup01", 445),
            ]
            for s in rng.sample(self.generic, rng.randint(8, 18)):
                hosts.append((s, rng.choice((22, 3389, 5985, 443))))
        elif rng.random() < 0.3:
            hosts.append(("wiki01", 443))
        return list(dict.fromkeys(hosts))

    def _build_trips(self, rng: random.Random) -> None:
        S, D = self.S, self.D
        dests: list[tuple[_City, _Isp, _Region | None]] = []
        for r in _REGIONS:
            dests.append((r.cities[0], r.isps[0], r))
        for city, isp in _TRAVEL_EXTRA:
            dests.append((city, isp, None))
        travellers = [u for u in self.users if u.traveller]
        k = 0
        for ti, u in enumerate(travellers):
            g = rng.randint(0, max(0, min(D - 2, 6)))
            if ti > 0 and rng.random() < 0.25:
                g += rng.randint(3, 7)  # no trip in a short window for some
            home = u.cities[0]
            while g < D:
                choices = [d for d in dests if d[0].country != home.country]
                city, isp, reg = rng.choice(choices)
                km = _haversine_km(home.lat, home.lon, city.lat, city.lon)
                flight = int((km / 800.0 + 1.5) * HOUR_MS)
                nights = rng.randint(1, 4)
                if flight > 10 * HOUR_MS:
                    nights = max(nights, 2)
                off_home = u.offset_ms
                off_dest = city.offset_min * MIN_MS
                t_dep = _local_midnight(S, g, off_home) + rng.randint(10 * HOUR_MS, 16 * HOUR_MS)
                t_arr = t_dep + flight
                ret = g + nights
                t_dep2 = _local_midnight(S, ret, off_dest) + rng.randint(14 * HOUR_MS, 19 * HOUR_MS)
                if t_dep2 < t_arr + 6 * HOUR_MS:
                    t_dep2 = t_arr + 6 * HOUR_MS
                t_arr2 = t_dep2 + flight
                k += 1
                cid = f"travel-{k}"
                hotel = _Place(isp.ip(rng), city, isp.asn, isp.name, "hotel")
                office = None
                if reg is not None:
                    office = _Place(
                        reg.office.ip(rng), city, reg.office.asn, reg.office.name, "office"
                    )
                u.trips.append(
                    _Trip(
                        cid,
                        ("benign", "travel", cid),
                        g,
                        ret,
                        city,
                        hotel,
                        office,
                        t_dep,
                        t_arr,
                        t_dep2,
                        t_arr2,
                    )
                )
                g = ret + 1 + rng.randint(3, 10)

    def _build_new_devices(self, rng: random.Random, plan: random.Random) -> None:
        cfg = self.cfg
        n = int(cfg.users * cfg.days / 450 + plan.random())
        if cfg.users >= 20:
            n = max(1, n)
        pool = [u for u in self.users if u.role in ("employee", "admin") and u.weekend_day is None]
        rng.shuffle(pool)
        self.n_new_devices = 0
        for k, u in enumerate(pool[:n], start=1):
            laptop = u.devices[0]
            os = self._pick_laptop_os(rng, u.dept)
            new = self._laptop(rng, u.uid, 2, os, laptop.ip.rsplit(".", 1)[0] + f".{210 + k % 40}")
            if new.ua == laptop.ua:
                new = self._laptop(rng, u.uid, 2, "Linux" if os != "Linux" else "Windows", new.ip)
            u.new_laptop = new
            days = [
                g
                for g in range(1, cfg.days)
                if _weekday(_local_midnight(self.S, g, u.offset_ms), u.offset_ms) < 5
            ]
            u.nd_pass = rng.choice(days) if days else rng.randint(0, cfg.days - 1)
            cid = f"new_device-{k}"
            u.nd_label = ("benign", "new_device", cid)
            self.n_new_devices += 1

    def _plan_campaigns(self, plan: random.Random) -> list[_Campaign]:
        cfg = self.cfg
        out: list[_Campaign] = []
        lo, hi = cfg.attack_days_from, cfg.days - 1
        if not cfg.attacks or hi < lo:
            return out
        for s in ATTACK_SCENARIOS:
            for k in range(1, self.counts[s] + 1):
                cid = f"{s}-{k}"
                out.append(_Campaign(s, cid, ("attack", s, cid), plan.randint(lo, hi)))
        return out

    # -- simulation ----------------------------------------------------------

    def chunks(self) -> Iterator[list[Item]]:
        """Yield the events of the window in time order, one simulated day at a time.

        Pass ``g`` simulates every entity's local day ``g`` (the local day
        whose midnight is nearest to ``start + g`` days, so it starts no
        earlier than ``start + g days - 12 h``); after it, everything before
        ``start + (g + 1) days - 12 h`` is final: it is sorted (stably, so
        ties keep generation order) and yielded as one list. Events still
        lack ``metadata``; :meth:`events` adds it.
        """
        S, D, end = self.S, self.D, self.end
        prev_wm = S - 2 * DAY_MS
        pending: list[Item] = []
        for g in range(-1, D + 1):
            self._sessions = {}
            self._net_times = {}
            buf: list[Item] = []
            for u in self.users:
                if u.utype == "System":
                    self._service_day(u, g, buf)
                else:
                    self._user_day(u, g, buf)
            for d in self.userless:
                self._device_day(d, g, buf)
            for c in self.campaigns:
                if not c.done and c.due <= g < D:
                    self._realize(c, g, buf)
            pending.extend(buf)
            pending.sort(key=_T)
            if pending and pending[0][0] < prev_wm:  # programming error: flushed too early
                raise RuntimeError(f"event at {pending[0][0]} precedes watermark {prev_wm}")
            wm = S + (g + 1) * DAY_MS - 12 * HOUR_MS if g < D else end
            cut = bisect_left(pending, wm, key=_T)
            first = bisect_left(pending, S, hi=cut, key=_T)
            last = bisect_left(pending, end, lo=first, hi=cut, key=_T)
            if last > first:
                yield pending[first:last]
            prev_wm = wm
            del pending[:cut]

    def events(self) -> Iterator[tuple[str, dict[str, object], Label]]:
        """Yield ``(event_id, event, label)`` in time order, with ``metadata`` set."""
        prefix = f"evt-{self.seed}-"
        product, version = _PRODUCT, _OCSF_VERSION
        n = 0
        for chunk in self.chunks():
            for _, ev, lab in chunk:
                uid = prefix + str(n).zfill(9)
                n += 1
                ev["metadata"] = {"uid": uid, "product": product, "version": version}
                yield uid, ev, lab

    # normal activity ---------------------------------------------------------

    def _user_day(self, u: _User, g: int, out: list[Item]) -> None:
        if u.dormant and not (u.dormant_day0 and g == 0):
            return
        trip: _Trip | None = None  # set while the user is at a trip destination
        for tr in u.trips:
            if tr.dep_pass < g <= tr.ret_pass:
                trip = tr
                break
        off = trip.city.offset_min * MIN_MS if trip is not None else u.offset_ms
        M = _local_midnight(self.S, g, off)
        wd = _weekday(M, off)
        rng = random.Random(f"{self.seed}/u/{u.idx}/{g}")  # noqa: S311
        # where the user is today
        ci = 0
        if trip is not None:
            home = mplace = trip.hotel
            wplace = trip.office if (trip.office and wd < 5 and rng.random() < 0.6) else home
        else:
            if len(u.cities) > 1 and rng.random() < 0.15:
                ci = 1
            hp = u.home_places[ci]
            home = hp[0] if len(hp) == 1 or rng.random() < 0.85 else hp[1]
            office = u.office if ci == 0 else None
            wplace = (
                office if (office is not None and wd < 5 and rng.random() < u.p_office) else home
            )
            mp = u.mobile_places[ci]
            mplace = mp[rng.randrange(len(mp))]
        devices = u.devices
        dlab: dict[str, Label] = {}
        if u.new_laptop is not None and g >= u.nd_pass:
            devices = [u.new_laptop, *devices[1:]]
            if not u.nd_done:  # the first day the new laptop is used is look-alike
                dlab[u.new_laptop.uid] = u.nd_label
        if u.role == "vendor":
            workday = wd in u.vendor_days and rng.random() > 0.05
        else:
            workday = (wd < 5 and rng.random() > 0.03) or wd == u.weekend_day
        buf: list[Item] = []
        sessions: list[_Session] = []
        if workday:
            start = M + int((u.start_min + rng.gauss(0.0, 20.0)) * MIN_MS)
            length = u.len_min + rng.gauss(0.0, 30.0)
            if wd >= 5:
                length *= 0.5
            end = start + int(length * MIN_MS)
            n_log = rng.randint(*u.logons)
            n_net = rng.randint(*u.nets)
            if wd >= 5:
                n_log, n_net = max(2, n_log // 2), max(4, n_net // 2)
            self._activity(
                u, rng, devices, wplace, mplace, start, end, n_log, n_net, buf, sessions, dlab
            )
        elif u.role != "vendor" and rng.random() < 0.35:
            phones = [d for d in devices if d.kind != "laptop"] or devices[:1]
            start = M + rng.randint(9 * HOUR_MS, 18 * HOUR_MS)
            end = start + rng.randint(30 * MIN_MS, 240 * MIN_MS)
            self._activity(
                u,
                rng,
                phones,
                home,
                mplace,
                start,
                end,
                rng.randint(1, 3),
                rng.randint(0, 4),
                buf,
                sessions,
                dlab,
                casual=True,
            )
        if u.on_call and rng.random() < 0.12:
            home_p = u.home_places[ci][0] if trip is None else home
            start = M + rng.randint(30 * MIN_MS, 240 * MIN_MS)
            end = start + rng.randint(15 * MIN_MS, 75 * MIN_MS)
            self._activity(
                u,
                rng,
                devices[:1],
                home_p,
                home_p,
                start,
                end,
                rng.randint(1, 3),
                rng.randint(2, 8),
                buf,
                sessions,
                dlab,
            )
        if trip is not None:
            # at the destination: only between arrival and the return flight
            lo_keep, hi_keep, lab = trip.t_arr, trip.t_dep2, trip.label
            buf = [(t, ev, lab) for t, ev, _ in buf if lo_keep <= t < hi_keep]
        elif u.trips:
            # at home: nothing while away (flights included)
            for tr in u.trips:
                t0, t1 = tr.t_dep, tr.t_arr2
                buf = [it for it in buf if not t0 <= it[0] < t1]
        else:
            self._sessions[u.idx] = sessions
        if dlab and any(it[2] is u.nd_label for it in buf):
            u.nd_done = True
        out.extend(buf)

    def _activity(
        self,
        u: _User,
        rng: random.Random,
        devices: list[_Device],
        wplace: _Place,
        mplace: _Place,
        start: int,
        end: int,
        n_log: int,
        n_net: int,
        out: list[Item],
        sessions: list[_Session],
        dlab: dict[str, Label],
        casual: bool = False,
    ) -> None:
        span = max(1, end - start)
        rand = rng.random
        user_d = u.user_d
        apps, app_cum = u.apps, u.app_cum
        n_apps = len(apps)
        n_dev = len(devices)
        # logons, in time order so sessions can be attached to network events
        times = sorted(start + int(rand() * span) for _ in range(n_log))
        mfa_done: set[str] = set()
        # per device: logon times, session dicts, logoff times (no logoff: open all day)
        dev_sessions: dict[str, tuple[list[int], list[dict[str, object]], list[int]]] = {}
        for t in times:
            if casual or n_dev == 1:
                dev = devices[0] if not casual else devices[int(rand() * n_dev)]
            else:
                r = rand()
                dev = devices[0] if r < 0.78 else devices[1 + int(rand() * (n_dev - 1))]
            place = wplace
            if dev.kind == "phone" and rand() < 0.4:
                place = mplace
            src = place.src(dev.uid)
            app = apps[min(bisect_right(app_cum, rand()), n_apps - 1)]
            lab = dlab.get(dev.uid, _NORMAL) if dlab else _NORMAL
            if rand() < u.typo:
                tf = t - 5_000 - int(rand() * 40_000)
                out.append(
                    (
                        tf,
                        _auth(
                            tf,
                            user_d,
                            src,
                            dev.ref,
                            dev.http,
                            None,
                            app,
                            2,
                            "invalid_password",
                            False,
                            1,
                        ),
                        lab,
                    )
                )
            sid: dict[str, object] = {"uid": f"s-{rng.getrandbits(64):016x}"}
            mfa = dev.uid not in mfa_done or rand() < 0.08
            mfa_done.add(dev.uid)
            out.append(
                (t, _auth(t, user_d, src, dev.ref, dev.http, sid, app, 1, None, mfa, 1), lab)
            )
            t_off: int | None = None
            if rand() < 0.35:
                t_off = t + 60_000 + int(rng.expovariate(1.0 / 4_500_000.0))
                t_off = min(t_off, end + 45 * MIN_MS)
                if t_off > t:
                    out.append(
                        (
                            t_off,
                            _auth(
                                t_off, user_d, src, dev.ref, dev.http, sid, app, 1, None, False, 2
                            ),
                            lab,
                        )
                    )
            sessions.append(_Session(t, sid, app, dev, t_off))
            ts, ss, es = dev_sessions.setdefault(dev.uid, ([], [], []))
            ts.append(t)
            ss.append(sid)
            es.append(t_off if t_off is not None else 1 << 62)
        # network activity
        actor = u.actor
        actor_user = u.actor_user
        lat_flows, lat_cum = u.lat_flows, u.lat_cum
        out_flows, out_cum = u.out_flows, u.out_cum
        n_lat, n_out = len(lat_flows), len(out_flows)
        p_out = 1.0 if casual else u.p_out
        net_span = span + 30 * MIN_MS
        zt = _ztable()
        bits = rng.getrandbits
        exp = math.exp
        laptop_uid = devices[0].uid if devices[0].kind == "laptop" else None
        net_times: list[int] = []
        for _ in range(n_net):
            t = start + int(rand() * net_span)
            r = rand()
            if casual or n_dev == 1 or r < 0.86:
                dev = devices[0] if not casual else devices[int(rand() * n_dev)]
            else:
                dev = devices[1 + int(rand() * (n_dev - 1))]
            if dev.kind != "laptop" or rand() < p_out or not n_lat:
                dst, conn, mu_in, mu_out, sig = out_flows[
                    min(bisect_right(out_cum, rand()), n_out - 1)
                ]
            else:
                dst, conn, mu_in, mu_out, sig = lat_flows[
                    min(bisect_right(lat_cum, rand()), n_lat - 1)
                ]
            b_in = int(exp(mu_in + sig * zt[bits(16)]))
            b_out = int(exp(mu_out + sig * zt[bits(16)]))
            dur = int(exp(7.3 + 1.1 * zt[bits(16)]))
            act = actor
            if rand() < 0.3:
                ds = dev_sessions.get(dev.uid)
                if ds is not None:
                    i = bisect_right(ds[0], t) - 1
                    if i >= 0 and t < ds[2][i]:  # only sessions still open
                        act = {"user": actor_user, "session": ds[1][i]}
            ev: dict[str, object] = {
                "class_uid": 4001,
                "category_uid": 4,
                "activity_id": 6,
                "time": t,
                "metadata": None,
                "actor": act,
                "src_endpoint": dev.net_src,
                "dst_endpoint": dst,
                "connection_info": conn,
                "traffic": {
                    "bytes_in": b_in,
                    "bytes_out": b_out,
                    "packets_in": b_in // 1200 + 1,
                    "packets_out": b_out // 900 + 1,
                },
                "duration": dur,
            }
            out.append((t, ev, dlab.get(dev.uid, _NORMAL) if dlab else _NORMAL))
            if dev.uid == laptop_uid:
                net_times.append(t)
        if net_times:
            self._net_times.setdefault(u.idx, []).extend(net_times)

    def _service_day(self, u: _User, g: int, out: list[Item]) -> None:
        place, dev, app = u.svc_place, u.svc_device, u.svc_app
        if place is None or dev is None or app is None:
            return
        M = _local_midnight(self.S, g, 0)
        rng = random.Random(f"{self.seed}/s/{u.idx}/{g}")  # noqa: S311
        src = place.src(dev.uid)
        user_d = u.user_d
        iv = u.svc_interval_ms
        t = M + u.svc_phase_ms
        stop = M + DAY_MS
        while t < stop:
            tt = max(M, t + rng.randint(-20_000, 20_000))
            sid: dict[str, object] = {"uid": f"s-{rng.getrandbits(64):016x}"}
            out.append(
                (
                    tt,
                    _auth(tt, user_d, src, dev.ref, dev.http, sid, app, 1, None, False, 1),
                    _NORMAL,
                )
            )
            t += iv

    def _device_day(self, d: _Userless, g: int, out: list[Item]) -> None:
        M = _local_midnight(self.S, g, 0)
        rng = random.Random(f"{self.seed}/dev/{d.device.uid}/{g}")  # noqa: S311
        src = d.device.net_src
        stop = M + DAY_MS
        zt, bits, exp, rand = _ztable(), rng.getrandbits, math.exp, rng.random
        append = out.append
        normal = _NORMAL
        for iv, phase, jit, (dst, conn, mu_in, mu_out, sig) in d.flows:
            t = M + phase
            span = 2 * jit
            while t < stop:
                tt = t - jit + int(rand() * span)
                if tt < M:
                    tt = M
                b_in = int(exp(mu_in + sig * zt[bits(16)]))
                b_out = int(exp(mu_out + sig * zt[bits(16)]))
                ev: dict[str, object] = {
                    "class_uid": 4001,
                    "category_uid": 4,
                    "activity_id": 6,
                    "time": tt,
                    "metadata": None,
                    "src_endpoint": src,
                    "dst_endpoint": dst,
                    "connection_info": conn,
                    "traffic": {
                        "bytes_in": b_in,
                        "bytes_out": b_out,
                        "packets_in": b_in // 1200 + 1,
                        "packets_out": b_out // 900 + 1,
                    },
                    "duration": int(exp(6.0 + 0.8 * zt[bits(16)])),
                }
                append((tt, ev, normal))
                t += iv

    # attack campaigns --------------------------------------------------------

    def _pool(self, rng: random.Random, roles: tuple[str, ...]) -> list[_User]:
        pool = [
            u
            for u in self.users
            if u.role in roles and not u.traveller and u.uid not in self._victims
        ]
        rng.shuffle(pool)
        return pool

    def _attacker_place(
        self, rng: random.Random, exclude: set[str], residential: float = 0.0
    ) -> _Place:
        src = _FOREIGN_RESIDENTIAL if rng.random() < residential else _HOSTING
        choices = [i for i in src if i.city.country not in exclude] or list(_HOSTING)
        infra = rng.choice(choices)
        return _Place(infra.isp.ip(rng), infra.city, infra.isp.asn, infra.isp.name, infra.isp.kind)

    @staticmethod
    def _attacker_ua(rng: random.Random, user: _User, script: float) -> tuple[str, bool]:
        """Return (user agent, is_script) different from all of the user's devices."""
        own = {d.ua for d in user.devices}
        if rng.random() < script:
            return rng.choice(_SCRIPT_UAS), True
        ua = rng.choice([u for u in _ODD_BROWSER_UAS if u not in own] or list(_ODD_BROWSER_UAS))
        return ua, False

    def _lo(self, g: int) -> int:
        """Earliest time a campaign realised in pass ``g`` may use."""
        return max(self.att_lo, self.S + g * DAY_MS - 12 * HOUR_MS)

    def _window(self, g: int, span: int) -> tuple[int, int]:
        """Attacker-chosen start range for a campaign lasting up to ``span`` ms in pass g."""
        lo = max(self.att_lo, self.S + g * DAY_MS)
        hi = min(self.S + (g + 1) * DAY_MS, self.end - span)
        return lo, hi

    def _realize(self, c: _Campaign, g: int, out: list[Item]) -> None:
        """Try to stage campaign ``c`` in pass ``g``; if no victim fits, it waits a pass."""
        scenarios: dict[str, Callable[[_Campaign, int, random.Random, list[Item]], bool]] = {
            "account_takeover": self._c_account_takeover,
            "session_hijack": self._c_session_hijack,
            "password_spray": self._c_password_spray,
            "brute_force": self._c_brute_force,
            "lateral_movement": self._c_lateral_movement,
            "exfiltration": self._c_exfiltration,
            "insider_off_hours": self._c_insider_off_hours,
            "dormant_account_abuse": self._c_dormant_account_abuse,
            "vendor_account_abuse": self._c_vendor_account_abuse,
        }
        rng = random.Random(f"{self.seed}/camp/{c.cid}/{g}")  # noqa: S311
        buf: list[Item] = []
        ok = scenarios[c.scenario](c, g, rng, buf)
        if ok and buf:
            c.done = True
            out.extend(buf)

    def _pick_time(
        self, rng: random.Random, g: int, spans: list[tuple[int, int]], duration: int
    ) -> int | None:
        """Uniform time in ``spans`` that a campaign of ``duration`` may use in pass g."""
        lo, hi = self._lo(g), self.end - duration
        clipped = [(max(a, lo), min(b, hi)) for a, b in spans]
        clipped = [(a, b) for a, b in clipped if b > a]
        total = sum(b - a for a, b in clipped)
        if total <= 0:
            return None
        x = rng.randrange(total)
        for a, b in clipped:
            if x < b - a:
                return a + x
            x -= b - a
        return None  # unreachable

    def _anchor(
        self, rng: random.Random, u: _User, g: int, span: int, sessions: bool
    ) -> int | _Session | None:
        lo, hi = self._lo(g), self.end - span
        if sessions:
            cands = [
                s
                for s in self._sessions.get(u.idx, [])
                if lo <= s.t < hi and (s.end is None or s.end > s.t + 45 * MIN_MS)
            ]
            return rng.choice(cands) if cands else None
        times = [t for t in self._net_times.get(u.idx, []) if lo <= t < hi]
        return rng.choice(times) if times else None

    def _c_account_takeover(
        self, c: _Campaign, g: int, rng: random.Random, out: list[Item]
    ) -> bool:
        pool = self._pool(rng, ("employee", "admin"))
        lo, hi = self._window(g, 2 * HOUR_MS)
        if not pool or hi <= lo:
            return False
        u = pool[0]
        self._victims.add(u.uid)
        place = self._attacker_place(rng, u.countries())
        ua, script = self._attacker_ua(rng, u, 0.5)
        fp: dict[str, object] | None = None if script else {"uid": f"d-{rng.getrandbits(40):010x}"}
        src = place.src(None if fp is None else str(fp["uid"]))
        http: dict[str, object] = {"user_agent": ua}
        t = rng.randint(lo, hi - 1)
        n = rng.randint(3, 10)
        sid: dict[str, object] = {"uid": f"s-{rng.getrandbits(64):016x}"}
        first = rng.choice(("mail", "mail", "file-share", "vpn"))
        out.append(
            (
                t,
                _auth(t, u.user_d, src, fp, http, sid, first, 1, None, rng.random() < 0.4, 1),
                c.label,
            )
        )
        for _ in range(n - 1):
            t += rng.randint(20 * SEC_MS, 480 * SEC_MS)
            app = rng.choice(_ATO_APPS)
            if rng.random() < 0.35:
                sid = {"uid": f"s-{rng.getrandbits(64):016x}"}
            out.append((t, _auth(t, u.user_d, src, fp, http, sid, app, 1, None, False, 1), c.label))
        return True

    def _c_session_hijack(self, c: _Campaign, g: int, rng: random.Random, out: list[Item]) -> bool:
        for u in self._pool(rng, ("employee", "admin")):
            s = self._anchor(rng, u, g, 3 * HOUR_MS, sessions=True)
            if not isinstance(s, _Session):
                continue
            self._victims.add(u.uid)
            place = self._attacker_place(rng, u.countries(), residential=0.3)
            ua, script = self._attacker_ua(rng, u, 0.3)
            fp: dict[str, object] | None = None
            if not script and rng.random() < 0.5:
                fp = {"uid": f"d-{rng.getrandbits(40):010x}"}
            src = place.src(None if fp is None else str(fp["uid"]))
            http: dict[str, object] = {"user_agent": ua}
            t = s.t + rng.randint(2 * MIN_MS, 20 * MIN_MS)
            for i in range(rng.randint(2, 6)):
                app = s.app if i == 0 else rng.choice((s.app, "mail", "file-share"))
                out.append(
                    (t, _auth(t, u.user_d, src, fp, http, s.sid, app, 1, None, False, 1), c.label)
                )
                t += rng.randint(30 * SEC_MS, 300 * SEC_MS)
            return True
        return False

    def _c_password_spray(self, c: _Campaign, g: int, rng: random.Random, out: list[Item]) -> bool:
        pool = [u for u in self.users if u.utype != "System"]
        lo, hi = self._window(g, HOUR_MS)
        k = min(len(pool), rng.randint(30, 80))
        if k < 2 or hi <= lo:
            return False
        targets = rng.sample(pool, k)
        rounds = 2 if (k <= 50 and rng.random() < 0.5) else 1
        place = self._attacker_place(rng, set())
        http: dict[str, object] = {"user_agent": rng.choice(_SPRAY_UAS)}
        src = place.src(None)
        app = rng.choice(("mail", "vpn"))
        total = k * rounds
        window = rng.randint(15 * MIN_MS, 35 * MIN_MS)
        t0 = rng.randint(lo, hi - 1)
        step = window / total
        t = t0
        for i in range(total):
            t = t0 + int(i * step + rng.random() * step * 0.5)
            u = targets[i % k]
            out.append(
                (
                    t,
                    _auth(t, u.user_d, src, None, http, None, app, 2, "invalid_password", False, 1),
                    c.label,
                )
            )
        if rng.random() < 0.4:
            weak = [u for u in targets if u.role in ("employee",) and u.uid not in self._victims]
            if weak:
                u = rng.choice(weak)
                self._victims.add(u.uid)
                t += rng.randint(5 * SEC_MS, 60 * SEC_MS)
                sid: dict[str, object] = {"uid": f"s-{rng.getrandbits(64):016x}"}
                out.append(
                    (t, _auth(t, u.user_d, src, None, http, sid, app, 1, None, False, 1), c.label)
                )
        return True

    def _c_brute_force(self, c: _Campaign, g: int, rng: random.Random, out: list[Item]) -> bool:
        pool = self._pool(rng, ("employee", "admin", "vendor"))
        lo, hi = self._window(g, HOUR_MS)
        if not pool or hi <= lo:
            return False
        u = pool[0]
        self._victims.add(u.uid)
        place = self._attacker_place(rng, u.countries(), residential=0.3)
        ua, script = self._attacker_ua(rng, u, 0.6)
        http: dict[str, object] = {"user_agent": ua}
        src = place.src(None)
        app = "vpn" if "vpn" in u.apps else "mail"
        t = rng.randint(lo, hi - 1)
        for _ in range(rng.randint(15, 60)):
            out.append(
                (
                    t,
                    _auth(t, u.user_d, src, None, http, None, app, 2, "invalid_password", False, 1),
                    c.label,
                )
            )
            t += rng.randint(1500, 9000)
        sid: dict[str, object] = {"uid": f"s-{rng.getrandbits(64):016x}"}
        out.append((t, _auth(t, u.user_d, src, None, http, sid, app, 1, None, False, 1), c.label))
        for _ in range(rng.randint(0, 3)):
            t += rng.randint(20 * SEC_MS, 300 * SEC_MS)
            a = rng.choice(("mail", "file-share", app))
            out.append((t, _auth(t, u.user_d, src, None, http, sid, a, 1, None, False, 1), c.label))
        return True

    def _device_victim(self, rng: random.Random, g: int, span: int) -> tuple[_User, int] | None:
        """A victim whose laptop the attacker drives, and when the campaign starts.

        Preferably while the victim is working (their laptop is busy anyway);
        failing that (weekend, leave), any time of the victim's day: laptops are
        often left on, and malware does not keep office hours.
        """
        pool = self._pool(rng, ("employee", "admin"))
        for u in pool:
            t0 = self._anchor(rng, u, g, span, sessions=False)
            if isinstance(t0, int):
                return u, t0
        for u in pool:
            M = _local_midnight(self.S, g, u.offset_ms)
            t = self._pick_time(rng, g, [(M, M + DAY_MS)], span)
            if t is not None:
                return u, t
        return None

    def _c_lateral_movement(
        self, c: _Campaign, g: int, rng: random.Random, out: list[Item]
    ) -> bool:
        picked = self._device_victim(rng, g, 2 * HOUR_MS)
        if picked is not None:
            u, t0 = picked
            self._victims.add(u.uid)
            dev = u.devices[0] if u.new_laptop is None or g < u.nd_pass else u.new_laptop
            used = {h for h, _ in u.hosts}
            cands = [h[0] for h in self.hosts if h[0] not in used and h[3] != "domain-controller"]
            n = min(len(cands), rng.randint(15, 40))
            targets = rng.sample(cands, n)
            window = rng.randint(30 * MIN_MS, 60 * MIN_MS)
            times = sorted(t0 + rng.randint(60_000, window) for _ in range(n))
            for host, t in zip(targets, times, strict=True):
                ports = [rng.choices((445, 3389, 22, 5985), (0.4, 0.2, 0.2, 0.2))[0]]
                if rng.random() < 0.2:
                    ports.append(rng.choice((445, 5985, 3389)))
                for j, port in enumerate(dict.fromkeys(ports)):
                    tt = t + j * rng.randint(200, 5000)
                    if rng.random() < 0.35:
                        b_out = int(math.exp(rng.gauss(_LN(2e4), 1.0)))
                        b_in = int(math.exp(rng.gauss(_LN(6e4), 1.2)))
                        dur = rng.randint(1_000, 60_000)
                    else:
                        b_out, b_in, dur = (
                            rng.randint(60, 400),
                            rng.randint(0, 120),
                            rng.randint(1, 3_000),
                        )
                    ev = _net(
                        tt,
                        u.actor,
                        dev.net_src,
                        self.hdst(host, port),
                        _CONN[("tcp", 3)],
                        b_in,
                        b_out,
                        dur,
                    )
                    out.append((tt, ev, c.label))
            return True
        return False

    def _c_exfiltration(self, c: _Campaign, g: int, rng: random.Random, out: list[Item]) -> bool:
        picked = self._device_victim(rng, g, 4 * HOUR_MS)
        if picked is not None:
            u, t0 = picked
            self._victims.add(u.uid)
            dev = u.devices[0] if u.new_laptop is None or g < u.nd_pass else u.new_laptop
            excl = u.dst_countries() | u.countries()
            dests = [e for e in _EXFIL if e[2] not in excl and e[1].asn not in u.dst_asns()]
            host, isp, country = rng.choice(dests or list(_EXFIL))
            dst: dict[str, object] = {
                "ip": isp.ip(rng),
                "port": 443,
                "hostname": host,
                "location": {"country": country},
                "autonomous_system": {"number": isp.asn, "name": isp.name},
            }
            t = t0 + rng.randint(MIN_MS, 15 * MIN_MS)
            for _ in range(rng.randint(3, 10)):
                b_out = int(math.exp(rng.uniform(_LN(1e8), _LN(5e9))))
                b_in = int(math.exp(rng.gauss(_LN(5e4), 1.0)))
                dur = int(b_out * 1000 / rng.uniform(2e6, 4e7))
                out.append(
                    (
                        t,
                        _net(t, u.actor, dev.net_src, dst, _CONN[("tcp", 2)], b_in, b_out, dur),
                        c.label,
                    )
                )
                t += rng.randint(2 * MIN_MS, 20 * MIN_MS)
            return True
        return False

    def _weekend_ahead(self, g: int) -> bool:
        return any(_weekday(self.S + h * DAY_MS, 0) >= 5 for h in range(g, self.D))

    def _c_insider_off_hours(
        self, c: _Campaign, g: int, rng: random.Random, out: list[Item]
    ) -> bool:
        strict = self._weekend_ahead(g)
        pool = [
            u
            for u in self._pool(rng, ("employee",))
            if not any(a in u.apps for a in _SENSITIVE_APPS) and u.dept not in ("finance", "hr")
        ]
        for u in pool:
            M = _local_midnight(self.S, g, u.offset_ms)
            if strict and _weekday(M, u.offset_ms) < 5:
                continue
            t_pick = self._pick_time(rng, g, [(M + 2 * HOUR_MS, M + 4 * HOUR_MS)], 3 * HOUR_MS)
            if t_pick is None:
                continue
            t = t_pick
            self._victims.add(u.uid)
            dev = u.devices[0] if u.new_laptop is None or g < u.nd_pass else u.new_laptop
            src = u.home_places[0][0].src(dev.uid)
            n_auth = rng.randint(2, 5)
            n_dl = rng.randint(2, 7)
            for i in range(n_auth):
                app = _SENSITIVE_APPS[i % 3] if i < 3 else rng.choice(_SENSITIVE_APPS)
                sid: dict[str, object] = {"uid": f"s-{rng.getrandbits(64):016x}"}
                out.append(
                    (
                        t,
                        _auth(t, u.user_d, src, dev.ref, dev.http, sid, app, 1, None, i == 0, 1),
                        c.label,
                    )
                )
                t += rng.randint(2 * MIN_MS, 15 * MIN_MS)
            t -= rng.randint(MIN_MS, 10 * MIN_MS)
            for _ in range(n_dl):
                host, port = rng.choice(
                    (
                        ("fs01", 445),
                        ("fs02", 445),
                        ("erp-db01", 1433),
                        ("fs03", 445),
                        ("db01", 5432),
                    )
                )
                b_in = int(math.exp(rng.uniform(_LN(1e8), _LN(2e9))))
                b_out = int(math.exp(rng.gauss(_LN(5e4), 1.0)))
                dur = int(b_in * 1000 / rng.uniform(3e7, 1.1e8))
                ev = _net(
                    t,
                    u.actor,
                    dev.net_src,
                    self.hdst(host, port),
                    _CONN[("tcp", 3)],
                    b_in,
                    b_out,
                    dur,
                )
                out.append((t, ev, c.label))
                t += rng.randint(3 * MIN_MS, 15 * MIN_MS)
            return True
        return False

    def _c_dormant_account_abuse(
        self, c: _Campaign, g: int, rng: random.Random, out: list[Item]
    ) -> bool:
        # an account seen on day 0 is only "dormant" again a couple of days later
        late = g >= 2 or g == self.D - 1
        pool = [u for u in self._pool(rng, ("dormant",)) if late or not u.dormant_day0]
        lo, hi = self._window(g, 2 * HOUR_MS)
        if not pool or hi <= lo:
            return False
        u = pool[0]
        self._victims.add(u.uid)
        place = self._attacker_place(rng, u.countries(), residential=0.5)
        ua, script = self._attacker_ua(rng, u, 0.4)
        http: dict[str, object] = {"user_agent": ua}
        src = place.src(None)
        t = rng.randint(lo, hi - 1)
        if rng.random() < 0.3:
            out.append(
                (
                    t,
                    _auth(
                        t, u.user_d, src, None, http, None, "mail", 2, "invalid_password", False, 1
                    ),
                    c.label,
                )
            )
            t += rng.randint(10 * SEC_MS, 120 * SEC_MS)
        sid: dict[str, object] = {"uid": f"s-{rng.getrandbits(64):016x}"}
        out.append(
            (t, _auth(t, u.user_d, src, None, http, sid, "mail", 1, None, False, 1), c.label)
        )
        for _ in range(rng.randint(2, 6)):
            t += rng.randint(30 * SEC_MS, 600 * SEC_MS)
            app = rng.choice(("mail", "file-share", "vpn", "crm", "wiki", "file-share"))
            out.append(
                (t, _auth(t, u.user_d, src, None, http, sid, app, 1, None, False, 1), c.label)
            )
        return True

    def _c_vendor_account_abuse(
        self, c: _Campaign, g: int, rng: random.Random, out: list[Item]
    ) -> bool:
        vendors = [u for u in self.users if u.role == "vendor"]
        rng.shuffle(vendors)
        vendors.sort(key=lambda v: v.uid in self._victims)
        for u in vendors:
            M = _local_midnight(self.S, g, u.offset_ms)
            if _weekday(M, u.offset_ms) in u.vendor_days:  # night / late evening
                spans = [(M, M + 5 * HOUR_MS), (M + 21 * HOUR_MS, M + DAY_MS)]
            else:  # a day the vendor never works
                spans = [(M, M + DAY_MS)]
            t_pick = self._pick_time(rng, g, spans, 2 * HOUR_MS)
            if t_pick is None:
                continue
            t = t_pick
            self._victims.add(u.uid)
            place = self._attacker_place(rng, u.countries())
            ua, script = self._attacker_ua(rng, u, 0.3)
            http: dict[str, object] = {"user_agent": ua}
            src = place.src(None)
            sid: dict[str, object] = {"uid": f"s-{rng.getrandbits(64):016x}"}
            apps = ["admin-console", "finance-erp"]
            apps += [
                rng.choice(("admin-console", "finance-erp", *u.apps))
                for _ in range(rng.randint(0, 5))
            ]
            rng.shuffle(apps)
            first = u.apps[0]
            out.append(
                (
                    t,
                    _auth(t, u.user_d, src, None, http, sid, first, 1, None, rng.random() < 0.5, 1),
                    c.label,
                )
            )
            for app in apps:
                t += rng.randint(30 * SEC_MS, 600 * SEC_MS)
                out.append(
                    (t, _auth(t, u.user_d, src, None, http, sid, app, 1, None, False, 1), c.label)
                )
            return True
        return False

    # -- org document ----------------------------------------------------------

    def n_devices(self) -> int:
        n = len(self.userless)
        for u in self.users:
            n += len(u.devices) + (u.new_laptop is not None)
        return n

    def org_dict(self) -> dict[str, object]:
        users: list[dict[str, object]] = []
        for u in self.users:
            home = u.cities[0]
            d: dict[str, object] = {
                "id": u.uid,
                "name": u.name,
                "email": u.email,
                "type": u.utype,
                "role": u.role,
                "department": u.dept,
                "home": {
                    "country": home.country,
                    "city": home.name,
                    "tz": u.region.tz if u.utype != "System" else "UTC",
                    "utc_offset_min": home.offset_min,
                    "lat": home.lat,
                    "long": home.lon,
                },
                "cities": [c.name for c in u.cities],
                "apps": list(u.apps),
                "flags": {
                    "admin": u.role == "admin",
                    "vendor": u.role == "vendor",
                    "service": u.role == "service",
                    "traveller": u.traveller,
                    "dormant": u.dormant,
                    "on_call": u.on_call,
                    "weekend_worker": u.weekend_day is not None,
                },
            }
            if u.utype == "System":
                d["service"] = {
                    "app": u.svc_app,
                    "interval_s": u.svc_interval_ms // 1000,
                    "device": u.svc_device.uid if u.svc_device else None,
                    "ip": u.svc_place.ip if u.svc_place else None,
                }
                users.append(d)
                continue
            d["isp"] = {"asn": u.home_places[0][0].asn, "name": u.home_places[0][0].as_name}
            d["home_ips"] = [p.to_dict() for ps in u.home_places for p in ps]
            d["mobile_ips"] = [p.to_dict() for ps in u.mobile_places for p in ps]
            d["office"] = u.office.to_dict() if u.office else None
            devs = [x.to_dict() for x in u.devices]
            if u.new_laptop is not None:
                nl = u.new_laptop.to_dict()
                nl["issued_day"] = u.nd_pass
                nl["campaign"] = u.nd_label[2]
                devs.append(nl)
            d["devices"] = devs
            d["hosts"] = [{"hostname": h, "ip": self.host_ip[h], "port": p} for h, p in u.hosts]
            d["saas"] = [_SAAS[s][0] for s in u.saas]
            d["work_hours"] = {
                "start_min_local": round(u.start_min),
                "length_min": round(u.len_min),
                "weekdays": list(u.vendor_days) if u.role == "vendor" else [0, 1, 2, 3, 4],
                "weekend_day": u.weekend_day,
            }
            if u.dormant:
                d["last_seen_days_before_start"] = u.last_seen_days_before
            if u.trips:
                d["trips"] = [
                    {
                        "campaign": t.cid,
                        "country": t.city.country,
                        "city": t.city.name,
                        "depart_ms": t.t_dep,
                        "arrive_ms": t.t_arr,
                        "return_depart_ms": t.t_dep2,
                        "return_arrive_ms": t.t_arr2,
                        "hotel": t.hotel.to_dict(),
                    }
                    for t in u.trips
                ]
            users.append(d)

        def ids(pred: str) -> list[str]:
            return [u.uid for u in self.users if u.role == pred]

        return {
            "generator": "zt-synthetic",
            "seed": self.seed,
            "start_ms": self.S,
            "days": self.D,
            "domain": DOMAIN,
            "users": users,
            "devices_without_user": [
                {**x.device.to_dict(), "flows": x.desc} for x in self.userless
            ],
            "hosts": [
                {"hostname": h, "ip": ip, "ports": list(p), "role": r} for h, ip, p, r in self.hosts
            ],
            "apps": {a: {"hostname": h, "ip": ip} for a, (h, ip) in _APPS.items()},
            "admins": ids("admin"),
            "vendors": ids("vendor"),
            "service_accounts": ids("service"),
            "travellers": [u.uid for u in self.users if u.traveller],
            "dormant": [u.uid for u in self.users if u.dormant],
        }


# ----------------------------------------------------------------------------
# Event builders (hot path: plain dict literals, shared sub-dicts)
# ----------------------------------------------------------------------------


def _auth(
    t: int,
    user_d: dict[str, object],
    src: dict[str, object],
    dev: dict[str, object] | None,
    http: dict[str, object],
    session: dict[str, object] | None,
    app: str,
    status: int,
    detail: str | None,
    mfa: bool,
    activity: int,
) -> dict[str, object]:
    ev: dict[str, object] = {
        "class_uid": 3002,
        "category_uid": 3,
        "activity_id": activity,
        "time": t,
        "metadata": None,
        "status_id": status,
    }
    if detail is not None:
        ev["status_detail"] = detail
    ev["user"] = user_d
    ev["src_endpoint"] = src
    if dev is not None:
        ev["device"] = dev
    ev["http_request"] = http
    if session is not None:
        ev["session"] = session
    ev["service"] = _SERVICE_D[app]
    ev["dst_endpoint"] = _APP_DST[app]
    ev["is_mfa"] = mfa
    return ev


def _net(
    t: int,
    actor: dict[str, object] | None,
    src: dict[str, object],
    dst: dict[str, object],
    conn: dict[str, object],
    b_in: int,
    b_out: int,
    dur: int,
) -> dict[str, object]:
    ev: dict[str, object] = {
        "class_uid": 4001,
        "category_uid": 4,
        "activity_id": 6,
        "time": t,
        "metadata": None,
    }
    if actor is not None:
        ev["actor"] = actor
    ev["src_endpoint"] = src
    ev["dst_endpoint"] = dst
    ev["connection_info"] = conn
    ev["traffic"] = {
        "bytes_in": b_in,
        "bytes_out": b_out,
        "packets_in": b_in // 1200 + 1,
        "packets_out": b_out // 900 + 1,
    }
    ev["duration"] = dur
    return ev


# ----------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------


def _time(ev: dict[str, object]) -> int:
    t = ev["time"]
    return t if isinstance(t, int) else 0


def _entity(ev: dict[str, object]) -> str | None:
    """User uid of an event (auth user or network actor), if any."""
    who = ev.get("user")
    if who is None:
        actor = ev.get("actor")
        who = actor.get("user") if isinstance(actor, dict) else None
    return str(who["uid"]) if isinstance(who, dict) else None


@dataclass(eq=False)
class _CampStat:
    cid: str
    scenario: str
    label: str
    first_ms: int
    last_ms: int = 0
    events: int = 0
    users: set[str] = field(default_factory=set)

    def add(self, ev: dict[str, object]) -> None:
        self.last_ms = _time(ev)
        self.events += 1
        who = _entity(ev)
        if who is not None:
            self.users.add(who)

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.cid,
            "scenario": self.scenario,
            "label": self.label,
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "events": self.events,
            "users": sorted(self.users) if len(self.users) <= 5 else len(self.users),
        }


def generate(cfg: GeneratorConfig) -> Iterator[tuple[dict[str, object], dict[str, object]]]:
    """Yield ``(ocsf_event, label)`` pairs in non-decreasing event time.

    Parameters
    ----------
    cfg : GeneratorConfig
        What to simulate. Equal configurations give identical output.

    Yields
    ------
    event : dict
        One OCSF 1.1 Authentication (``class_uid`` 3002) or Network Activity
        (4001) document. Sub-dicts are shared between events: treat as
        read-only.
    label : dict
        ``{"event_id", "label", "scenario", "campaign"}``; ``label`` is
        ``"normal"``, ``"attack"`` or ``"benign"``.

    Raises
    ------
    ValueError
        If the configuration is out of range (``users`` or ``days`` < 1).

    Examples
    --------
    >>> pairs = list(generate(GeneratorConfig(users=8, days=1, attacks=False)))
    >>> len(pairs) > 100, pairs[0][1]["label"], pairs[0][0]["metadata"]["uid"]
    (True, 'normal', 'evt-42-000000000')
    """
    world = _World(cfg)
    for uid, ev, (label, scenario, campaign) in world.events():
        yield ev, {"event_id": uid, "label": label, "scenario": scenario, "campaign": campaign}


def _write_streams(world: _World, out_dir: Path) -> tuple[int, int, int, dict[str, _CampStat]]:
    """Stream events.jsonl and labels.jsonl; return (events, attack, benign, campaigns).

    Each line goes straight into a 64 KiB file buffer: keeping thousands of
    small ``bytes`` objects alive to ``join`` them later is several times
    slower (allocator churn) than copying each one into the buffer at once.
    """
    dumps = orjson.dumps
    nl = orjson.OPT_APPEND_NEWLINE
    n = n_attack = n_benign = 0
    camp: dict[str, _CampStat] = {}
    tails: dict[Label, str] = {}  # label -> JSON text after the event id
    buffering = 1 << 16
    with (
        (out_dir / "events.jsonl").open("wb", buffering=buffering) as fe,
        (out_dir / "labels.jsonl").open("wb", buffering=buffering) as fl,
    ):
        write_ev, write_lab = fe.write, fl.write
        prefix = f"evt-{world.seed}-"
        product, version = _PRODUCT, _OCSF_VERSION
        for _, ev, lab in itertools.chain.from_iterable(world.chunks()):
            uid = prefix + str(n).zfill(9)
            ev["metadata"] = {"uid": uid, "product": product, "version": version}
            write_ev(dumps(ev, option=nl))
            tail = tails.get(lab)
            if tail is None:
                label, scenario, campaign = lab
                tail = tails[lab] = dumps(
                    {"label": label, "scenario": scenario, "campaign": campaign}
                ).decode()[1:]
            write_lab(f'{{"event_id":"{uid}",{tail}\n'.encode())
            n += 1
            campaign = lab[2]
            if campaign is not None:
                label, scenario = lab[0], lab[1]
                if label == "attack":
                    n_attack += 1
                else:
                    n_benign += 1
                st = camp.get(campaign)
                if st is None:
                    st = camp[campaign] = _CampStat(campaign, str(scenario), label, _time(ev))
                st.add(ev)
    return n, n_attack, n_benign, camp


def write_dataset(cfg: GeneratorConfig, out_dir: Path) -> GeneratedSummary:
    """Write ``events.jsonl``, ``labels.jsonl`` and ``org.json`` to ``out_dir``.

    Events are streamed to disk a simulated day at a time; memory does not
    grow with ``cfg.days``.

    Parameters
    ----------
    cfg : GeneratorConfig
        What to simulate.
    out_dir : pathlib.Path
        Output directory, created if missing; existing files are replaced.

    Returns
    -------
    GeneratedSummary
        Counts of what was written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world = _World(cfg)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of short-lived acyclic dicts: cyclic GC is pure overhead here
    try:
        n, n_attack, n_benign, camp = _write_streams(world, out_dir)
    finally:
        if gc_was_enabled:
            gc.enable()
    counts: dict[str, int] = {s: 0 for s in (*ATTACK_SCENARIOS, *BENIGN_SCENARIOS)}
    for st in camp.values():
        counts[st.scenario] += 1
    org = world.org_dict()
    org["campaigns"] = [st.to_dict() for st in sorted(camp.values(), key=lambda x: x.first_ms)]
    summary = GeneratedSummary(
        events=n,
        users=len(world.users),
        devices=world.n_devices(),
        days=cfg.days,
        campaigns=counts,
        attack_events=n_attack,
        benign_lookalike_events=n_benign,
    )
    org["summary"] = summary.to_dict()
    (out_dir / "org.json").write_bytes(orjson.dumps(org, option=orjson.OPT_INDENT_2))
    return summary
