"""Tests of the synthetic OCSF generator (detector/generate.py)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.generate import (
    ATTACK_SCENARIOS,
    BENIGN_SCENARIOS,
    GeneratedSummary,
    GeneratorConfig,
    generate,
    write_dataset,
)

DAY = 86_400_000
HOUR = 3_600_000
CFG = GeneratorConfig(users=60, days=4, seed=7)

Ev = dict[str, Any]


class Dataset:
    def __init__(self, out: Path, summary: GeneratedSummary) -> None:
        self.out = out
        self.summary = summary
        self.events: list[Ev] = [
            orjson.loads(line) for line in (out / "events.jsonl").read_bytes().splitlines()
        ]
        self.labels: list[Ev] = [
            orjson.loads(line) for line in (out / "labels.jsonl").read_bytes().splitlines()
        ]
        self.org: Ev = orjson.loads((out / "org.json").read_bytes())
        self.users: dict[str, Ev] = {u["id"]: u for u in self.org["users"]}
        self.pairs = list(zip(self.events, self.labels, strict=True))

    def campaign(self, scenario: str) -> dict[str, list[Ev]]:
        out: dict[str, list[Ev]] = defaultdict(list)
        for ev, lab in self.pairs:
            if lab["scenario"] == scenario:
                out[lab["campaign"]].append(ev)
        return out

    def normal_of(self, uid: str) -> list[Ev]:
        return [ev for ev, lab in self.pairs if lab["label"] == "normal" and _entity(ev) == uid]


def _entity(ev: Ev) -> str | None:
    if "user" in ev:
        return str(ev["user"]["uid"])
    if "actor" in ev:
        return str(ev["actor"]["user"]["uid"])
    return None


def _haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 12_742.0 * math.asin(math.sqrt(a))


def _is_logon_ok(ev: Ev) -> bool:
    return bool(ev["class_uid"] == 3002 and ev["activity_id"] == 1 and ev["status_id"] == 1)


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    out = tmp_path_factory.mktemp("gen")
    return Dataset(out, write_dataset(CFG, out))


# -- determinism and stream properties ------------------------------------------------


def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path) -> None:
    cfg = GeneratorConfig(users=25, days=2, seed=3)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    sa, sb = write_dataset(cfg, a), write_dataset(cfg, b)
    assert sa == sb
    for name in ("events.jsonl", "labels.jsonl", "org.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    write_dataset(GeneratorConfig(users=25, days=2, seed=4), c)
    assert (a / "events.jsonl").read_bytes() != (c / "events.jsonl").read_bytes()


def test_generate_matches_written_files(ds: Dataset) -> None:
    for i, (ev, lab) in enumerate(generate(CFG)):
        assert ev == ds.events[i]
        assert lab == ds.labels[i]
        if i == 2000:
            break


def test_time_order_window_and_unique_ids(ds: Dataset) -> None:
    times = [ev["time"] for ev in ds.events]
    assert times == sorted(times)
    assert CFG.start_ms <= times[0] and times[-1] < CFG.start_ms + CFG.days * DAY
    ids = [ev["metadata"]["uid"] for ev in ds.events]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "evt-7-000000000"


def test_labels_match_events(ds: Dataset) -> None:
    assert len(ds.labels) == len(ds.events) == ds.summary.events
    for ev, lab in ds.pairs:
        assert lab["event_id"] == ev["metadata"]["uid"]
        assert set(lab) == {"event_id", "label", "scenario", "campaign"}
        assert lab["label"] in ("normal", "attack", "benign")
        if lab["label"] == "normal":
            assert lab["scenario"] is None and lab["campaign"] is None
        else:
            assert lab["campaign"].rsplit("-", 1)[0] == lab["scenario"]
            expected = ATTACK_SCENARIOS if lab["label"] == "attack" else BENIGN_SCENARIOS
            assert lab["scenario"] in expected


def test_every_scenario_appears(ds: Dataset) -> None:
    seen = {lab["scenario"] for lab in ds.labels if lab["scenario"]}
    assert seen == set(ATTACK_SCENARIOS) | set(BENIGN_SCENARIOS)
    assert all(ds.summary.campaigns[s] >= 1 for s in seen)
    n_attack = sum(lab["label"] == "attack" for lab in ds.labels)
    assert n_attack == ds.summary.attack_events
    assert 0 < n_attack < 0.05 * len(ds.labels)  # attacks are rare


def test_volume_is_realistic(ds: Dataset) -> None:
    per_user_day = len(ds.events) / (CFG.users * CFG.days)
    assert 25 < per_user_day < 90


# -- OCSF field paths ---------------------------------------------------------------


def test_auth_event_fields(ds: Dataset) -> None:
    auth = [ev for ev in ds.events if ev["class_uid"] == 3002]
    assert len(auth) > 1000
    for ev in auth:
        assert ev["category_uid"] == 3
        assert ev["activity_id"] in (1, 2)
        assert ev["status_id"] in (1, 2)
        assert ev["metadata"]["product"] == {"name": "zt-synthetic", "vendor_name": "zt-detector"}
        assert ev["metadata"]["version"] == "1.1.0"
        user = ev["user"]
        assert user["uid"].startswith("u") and user["type"] in ("User", "Admin", "Vendor", "System")
        assert user["email_addr"] == f"{user['name']}@example.com"
        src = ev["src_endpoint"]
        assert (
            src["ip"] and src["location"]["country"] and isinstance(src["location"]["lat"], float)
        )
        if not src["ip"].startswith("10."):
            assert isinstance(src["autonomous_system"]["number"], int)
            assert src["autonomous_system"]["name"]
        if "device" in ev:
            assert src["uid"] == ev["device"]["uid"]
        else:
            assert "uid" not in src
        assert ev["http_request"]["user_agent"]
        assert ev["service"]["name"] and ev["dst_endpoint"]["hostname"]
        assert isinstance(ev["is_mfa"], bool)
        if ev["status_id"] == 2:
            assert ev["status_detail"] == "invalid_password"
        else:
            assert ev["session"]["uid"].startswith("s-")
    failures = sum(ev["status_id"] == 2 for ev in auth)
    assert failures > 0


def test_network_event_fields(ds: Dataset) -> None:
    net = [ev for ev in ds.events if ev["class_uid"] == 4001]
    assert len(net) > 2000
    directions = set()
    for ev in net:
        assert ev["activity_id"] == 6
        src, dst, conn = ev["src_endpoint"], ev["dst_endpoint"], ev["connection_info"]
        assert src["uid"] and src["hostname"] and src["ip"].startswith("10.")
        assert conn["protocol_name"] in ("tcp", "udp")
        directions.add(conn["direction_id"])
        if conn["direction_id"] == 2:
            assert len(dst["location"]["country"]) == 2
            assert isinstance(dst["autonomous_system"]["number"], int)
            assert not dst["ip"].startswith("10.")
        else:
            assert conn["direction_id"] == 3
            assert dst["ip"].startswith("10.") and "location" not in dst
        assert isinstance(dst["port"], int) and dst["hostname"]
        t = ev["traffic"]
        assert all(isinstance(t[k], int) and t[k] >= 0 for k in t)
        assert set(t) == {"bytes_in", "bytes_out", "packets_in", "packets_out"}
        assert isinstance(ev["duration"], int)
        if "actor" in ev:
            assert set(ev["actor"]["user"]) == {"uid", "name", "type"}
    assert directions == {2, 3}
    assert any("session" in ev.get("actor", {}) for ev in net)


def test_roles_present(ds: Dataset) -> None:
    types = {ev["user"]["type"] for ev in ds.events if "user" in ev}
    assert types == {"User", "Admin", "Vendor", "System"}
    for key in ("travellers", "vendors", "admins", "service_accounts", "dormant"):
        assert ds.org[key], key
    assert len(ds.org["users"]) == CFG.users
    assert len(ds.org["devices_without_user"]) == max(5, CFG.users // 20)
    # service accounts: one service, around the clock, from one server ip
    for uid in ds.org["service_accounts"]:
        evs = ds.normal_of(uid)
        assert len({ev["service"]["name"] for ev in evs}) == 1
        assert len({ev["src_endpoint"]["ip"] for ev in evs}) == 1
        hours = {(ev["time"] // HOUR) % 24 for ev in evs}
        assert len(hours) >= 20


def test_device_only_events_have_no_actor(ds: Dataset) -> None:
    userless = {d["uid"] for d in ds.org["devices_without_user"]}
    seen = set()
    for ev in ds.events:
        if ev["class_uid"] != 4001:
            continue
        dev = ev["src_endpoint"]["uid"]
        if dev in userless:
            assert "actor" not in ev
            seen.add(dev)
        else:
            assert "actor" in ev
    assert seen == userless


def test_logon_speed_below_900_kmh(ds: Dataset) -> None:
    """Travellers (and everyone else) never move faster than a plane outside attacks."""
    by_user: dict[str, list[Ev]] = defaultdict(list)
    for ev, lab in ds.pairs:
        if lab["label"] != "attack" and _is_logon_ok(ev):
            by_user[ev["user"]["uid"]].append(ev)
    travelled = 0
    for uid, evs in by_user.items():
        for a, b in zip(evs, evs[1:], strict=False):
            la, lb = a["src_endpoint"]["location"], b["src_endpoint"]["location"]
            km = _haversine_km(la["lat"], la["long"], lb["lat"], lb["long"])
            if km < 1.0:
                continue
            hours = (b["time"] - a["time"]) / HOUR
            assert hours > 0 and km / hours < 900, (uid, km, hours)
            if uid in ds.org["travellers"] and km > 1000:
                travelled += 1
    assert travelled >= 2  # out and back at least once


def test_travel_is_benign_and_abroad(ds: Dataset) -> None:
    trips = ds.campaign("travel")
    abroad = 0
    for cid, evs in trips.items():
        uid = {str(_entity(ev)) for ev in evs}
        assert len(uid) == 1
        home = ds.users[uid.pop()]["home"]["country"]
        countries = {ev["src_endpoint"]["location"]["country"] for ev in evs if "user" in ev}
        assert home not in countries, cid
        abroad += bool(countries)
    assert abroad >= 1  # some trips are short or over a weekend: network traffic only


# -- attack scenario shapes -----------------------------------------------------------


def test_password_spray_shape(ds: Dataset) -> None:
    for cid, evs in ds.campaign("password_spray").items():
        fails = [ev for ev in evs if ev["status_id"] == 2]
        assert len({ev["src_endpoint"]["ip"] for ev in evs}) == 1, cid
        assert len({ev["user"]["uid"] for ev in fails}) >= 30
        assert all(ev["status_detail"] == "invalid_password" for ev in fails)
        assert all("device" not in ev for ev in evs)
        assert evs[-1]["time"] - evs[0]["time"] <= 45 * 60_000
        assert evs[0]["src_endpoint"]["autonomous_system"]["number"] in {
            14061, 16276, 24940, 20473, 9009, 16509
        }  # fmt: skip


def test_brute_force_shape(ds: Dataset) -> None:
    for cid, evs in ds.campaign("brute_force").items():
        assert len({ev["user"]["uid"] for ev in evs}) == 1
        assert len({ev["src_endpoint"]["ip"] for ev in evs}) == 1
        fails = [ev for ev in evs if ev["status_id"] == 2]
        assert 15 <= len(fails) <= 60
        first_ok = next(i for i, ev in enumerate(evs) if ev["status_id"] == 1)
        assert first_ok == len(fails), cid  # every failure precedes the success
        assert fails[-1]["time"] - fails[0]["time"] < 15 * 60_000


def test_account_takeover_shape(ds: Dataset) -> None:
    for cid, evs in ds.campaign("account_takeover").items():
        uid = {ev["user"]["uid"] for ev in evs}.pop()
        normal = ds.normal_of(uid)
        usual_countries = {e["src_endpoint"]["location"]["country"] for e in normal if "user" in e}
        usual_uas = {e["http_request"]["user_agent"] for e in normal if "user" in e}
        assert 3 <= len(evs) <= 10
        assert evs[0]["status_id"] == 1  # a stolen password works first time
        for ev in evs:
            assert ev["src_endpoint"]["location"]["country"] not in usual_countries, cid
            assert ev["http_request"]["user_agent"] not in usual_uas


def test_session_hijack_reuses_live_session(ds: Dataset) -> None:
    for cid, evs in ds.campaign("session_hijack").items():
        assert 2 <= len(evs) <= 6
        sid = {ev["session"]["uid"] for ev in evs}
        assert len(sid) == 1
        uid = evs[0]["user"]["uid"]
        opened = [e for e in ds.normal_of(uid) if "session" in e and e["session"]["uid"] in sid]
        assert opened, cid
        victim_ip = opened[0]["src_endpoint"]["ip"]
        assert opened[0]["time"] < evs[0]["time"] <= opened[0]["time"] + HOUR
        assert all(ev["src_endpoint"]["ip"] != victim_ip for ev in evs)
        assert all(
            ev["http_request"]["user_agent"] != opened[0]["http_request"]["user_agent"]
            for ev in evs
        )


def test_lateral_movement_shape(ds: Dataset) -> None:
    for cid, evs in ds.campaign("lateral_movement").items():
        uid = {ev["actor"]["user"]["uid"] for ev in evs}.pop()
        usual = {
            e["dst_endpoint"]["hostname"]
            for e in ds.normal_of(uid)
            if e["class_uid"] == 4001 and e["connection_info"]["direction_id"] == 3
        }
        hosts = {ev["dst_endpoint"]["hostname"] for ev in evs}
        assert 15 <= len(hosts) <= 40 and not hosts & usual, cid
        assert {ev["dst_endpoint"]["port"] for ev in evs} <= {22, 445, 3389, 5985}
        assert all(ev["connection_info"]["direction_id"] == 3 for ev in evs)
        assert evs[-1]["time"] - evs[0]["time"] <= 65 * 60_000


def test_exfiltration_shape(ds: Dataset) -> None:
    for cid, evs in ds.campaign("exfiltration").items():
        uid = evs[0]["actor"]["user"]["uid"]
        usual = {
            e["dst_endpoint"]["location"]["country"]
            for e in ds.normal_of(uid)
            if e["class_uid"] == 4001 and e["connection_info"]["direction_id"] == 2
        }
        assert 3 <= len(evs) <= 10
        for ev in evs:
            assert 1e8 <= ev["traffic"]["bytes_out"] <= 5e9
            assert ev["connection_info"]["direction_id"] == 2
            assert ev["dst_endpoint"]["location"]["country"] not in usual, cid


def test_insider_off_hours_shape(ds: Dataset) -> None:
    for cid, evs in ds.campaign("insider_off_hours").items():
        assert 4 <= len(evs) <= 12
        uid = _entity(evs[0])
        assert uid is not None
        user = ds.users[uid]
        local = evs[0]["time"] + user["home"]["utc_offset_min"] * 60_000
        assert 2 <= (local // HOUR) % 24 < 5, cid
        assert ((local // DAY) + 3) % 7 in (5, 6)  # Saturday or Sunday night
        auth = [ev for ev in evs if ev["class_uid"] == 3002]
        assert {ev["service"]["name"] for ev in auth} <= {"payroll", "finance-erp", "hr-portal"}
        assert not {"payroll", "finance-erp", "hr-portal"} & set(user["apps"])
        home_ips = {h["ip"] for h in user["home_ips"]}
        assert all(ev["src_endpoint"]["ip"] in home_ips for ev in auth)
        assert any(ev.get("traffic", {}).get("bytes_in", 0) >= 1e8 for ev in evs)


def test_dormant_and_vendor_abuse_shape(ds: Dataset) -> None:
    for evs in ds.campaign("dormant_account_abuse").values():
        user = ds.users[evs[0]["user"]["uid"]]
        assert user["flags"]["dormant"]
        assert all(ev["src_endpoint"]["location"]["country"] != user["home"]["country"]
                   for ev in evs)  # fmt: skip
    for evs in ds.campaign("vendor_account_abuse").values():
        user = ds.users[evs[0]["user"]["uid"]]
        assert user["type"] == "Vendor"
        assert {"admin-console", "finance-erp"} <= {ev["service"]["name"] for ev in evs}
        assert all(ev["src_endpoint"]["location"]["country"] != user["home"]["country"]
                   for ev in evs)  # fmt: skip


def test_new_device_is_a_new_laptop_from_usual_country(ds: Dataset) -> None:
    camps = ds.campaign("new_device")
    assert camps
    for evs in camps.values():
        uid = _entity(evs[0])
        assert uid is not None
        user = ds.users[uid]
        devs = {ev["src_endpoint"]["uid"] for ev in evs}
        assert len(devs) == 1
        before = [e for e in ds.normal_of(uid) if e["time"] < evs[0]["time"]]
        assert devs.isdisjoint({e["src_endpoint"].get("uid") for e in before})
        assert all(
            ev["src_endpoint"]["location"]["country"] == user["home"]["country"]
            for ev in evs
            if ev["class_uid"] == 3002
        )


# -- configuration knobs ----------------------------------------------------------------


def test_attack_days_from_and_attacks_off(tmp_path: Path) -> None:
    cfg = GeneratorConfig(users=40, days=3, seed=11, attack_days_from=2)
    first_attack: int | None = None
    n_attacks = 0
    for ev, lab in generate(cfg):
        if lab["label"] == "attack":
            n_attacks += 1
            if first_attack is None:
                first_attack = int(str(ev["time"]))
    assert n_attacks > 0 and first_attack is not None
    assert first_attack >= cfg.start_ms + 2 * DAY
    summary = write_dataset(GeneratorConfig(users=40, days=2, attacks=False), tmp_path)
    assert summary.attack_events == 0
    assert all(summary.campaigns[s] == 0 for s in ATTACK_SCENARIOS)


def test_write_dataset_files_and_summary(ds: Dataset) -> None:
    for name in ("events.jsonl", "labels.jsonl", "org.json"):
        assert (ds.out / name).stat().st_size > 0
    s = ds.summary.to_dict()
    assert s["events"] == len(ds.events) and s["users"] == CFG.users and s["days"] == CFG.days
    assert s["benign_lookalike_events"] == sum(lab["label"] == "benign" for lab in ds.labels)
    assert ds.org["summary"] == s
    assert {c["scenario"] for c in ds.org["campaigns"]} == set(ATTACK_SCENARIOS) | set(
        BENIGN_SCENARIOS
    )


def test_tiny_configs_and_validation() -> None:
    assert sum(1 for _ in generate(GeneratorConfig(users=1, days=1))) > 0
    with pytest.raises(ValueError):
        next(generate(GeneratorConfig(users=0)))


def test_bytes_do_not_depend_on_hash_seed(tmp_path: Path) -> None:
    """Set iteration order must never leak into the output (PYTHONHASHSEED)."""
    code = (
        "import sys, hashlib; from detector.generate import GeneratorConfig, generate; "
        "h = hashlib.sha256(); "
        "[h.update(repr(p).encode()) for p in generate(GeneratorConfig(users=25, days=2))]; "
        "print(h.hexdigest())"
    )
    root = Path(__file__).resolve().parents[1]
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(digests) == 1
