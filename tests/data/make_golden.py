"""Regenerate the golden end-to-end replay files (run after an intended change).

    python tests/data/make_golden.py

Writes ``golden_events.jsonl.gz`` (a generated 20-user, 3-day organisation
with attacks on the last day, plus ECS and native documents and malformed
lines) and ``golden_decisions.jsonl.gz`` (what ``models/default`` decides).
Review the diff of decisions before committing new golden files.
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

EXTRA = [
    # ECS authentication, success and failure
    {"@timestamp": "2026-01-03T09:15:00Z", "event": {"category": ["authentication"],
     "outcome": "success", "id": "ecs-1"}, "user": {"name": "ecs.user"},
     "source": {"ip": "81.2.69.142", "geo": {"country_iso_code": "GB", "city_name": "London",
                "location": {"lat": 51.5, "lon": -0.12}}, "as": {"number": 2856}},
     "user_agent": {"original": "Mozilla/5.0"}},
    {"@timestamp": "2026-01-03T09:16:00Z", "event": {"category": "authentication",
     "outcome": "failure", "id": "ecs-2"}, "user": {"name": "ecs.user"},
     "source": {"ip": "185.220.101.4", "geo": {"country_iso_code": "DE"}, "as": {"number": 24940}}},
    # native network, device without a user
    {"kind": "network", "id": "nat-1", "ts": "2026-01-03T10:00:00Z", "device": "cam-7",
     "ip": "10.9.9.9", "dst_ip": "8.8.8.8", "dst_port": 443, "direction": "outbound",
     "dst_country": "US", "dst_asn": 15169, "bytes_out": 5000, "bytes_in": 100000},
]
BAD = [b"{not json", b"42", b'{"class_uid": 3002, "time": "yesterday", "user": {"uid": "x"}}',
       b'{"class_uid": 3002, "time": 1767225600000}', b'{"class_uid": 9999, "time": 1}']


def main() -> None:
    from detector.engine import Detector
    from detector.generate import GeneratorConfig, write_dataset
    from detector.model import load_model
    from detector.replay import replay

    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(GeneratorConfig(users=20, days=3, seed=21, attack_days_from=2), Path(tmp))
        lines = (Path(tmp) / "events.jsonl").read_bytes().splitlines()
    third = len(lines) // 3
    body = lines[:third] + [orjson.dumps(d) for d in EXTRA] + BAD + lines[third:]
    raw = b"\n".join(body) + b"\n"
    (HERE / "golden_events.jsonl.gz").write_bytes(gzip.compress(raw, mtime=0))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "events.jsonl"
        src.write_bytes(raw)
        out = Path(tmp) / "decisions.jsonl"
        det = Detector(load_model(REPO / "models" / "default"))
        with out.open("wb") as fh:
            replay(det, [src], fh, None, batch_size=500)
        (HERE / "golden_decisions.jsonl.gz").write_bytes(gzip.compress(out.read_bytes(), mtime=0))


if __name__ == "__main__":
    main()
