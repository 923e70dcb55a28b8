"""End-to-end through the command line: generate -> train -> replay, and the demo."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from detector.cli import main
from tests.conftest import read_jsonl

DECISION_FIELDS = ("event_id", "entity", "action", "risk", "reasons")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def generated(workdir: Path) -> Path:
    out = workdir / "data"
    assert main(["generate", "--users", "40", "--days", "4", "--out", str(out), "--seed", "9",
                 "--attack-days-from", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def trained(workdir: Path, generated: Path) -> Path:
    model = workdir / "model"
    assert main(["train", "--events", str(generated / "events.jsonl"), "--out", str(model),
                 "--trees", "20", "--seed", "3"]) == 0
    return model


def test_generate_writes_events_labels_and_org(generated: Path) -> None:
    for name in ("events.jsonl", "labels.jsonl", "org.json"):
        assert (generated / name).stat().st_size > 0


def test_train_writes_a_verifiable_model(trained: Path) -> None:
    meta = orjson.loads((trained / "model.json").read_bytes())
    assert set(meta["files"]) == {"forest_auth.npz", "forest_network.npz", "peers.json"}
    assert meta["training"]["events"] > 1000
    assert 0 < meta["thresholds"]["step_up"] <= meta["thresholds"]["revoke"] <= 1


def test_train_is_deterministic(workdir: Path, generated: Path, trained: Path) -> None:
    again = workdir / "model-again"
    assert main(["train", "--events", str(generated / "events.jsonl"), "--out", str(again),
                 "--trees", "20", "--seed", "3", "--name", "model"]) == 0
    a = orjson.loads((trained / "model.json").read_bytes())
    b = orjson.loads((again / "model.json").read_bytes())
    assert a["files"] == b["files"]
    assert a["version"] == b["version"]


def test_replay_one_decision_per_accepted_event_in_order(
    workdir: Path, generated: Path, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = generated / "events.jsonl"
    lines = events.read_bytes().splitlines()
    mixed = workdir / "mixed.jsonl"
    bad = [b"not json", b"[1, 2]", b'{"class_uid": 1001, "time": 1}',
           b'{"kind": "auth", "ts": 1767225600000}', b"x" * 70_000]
    # Interleave bad lines with the first 2,000 good ones.
    body = []
    for i, line in enumerate(lines[:2000]):
        body.append(line)
        if i % 400 == 0:
            body.append(bad[(i // 400) % len(bad)])
    mixed.write_bytes(b"\n".join(body) + b"\n")
    decisions = workdir / "decisions.jsonl"
    rejects = workdir / "rejects.jsonl"
    capsys.readouterr()
    assert main(["replay", "--model", str(trained), "--events", str(mixed),
                 "--decisions", str(decisions), "--rejects", str(rejects),
                 "--batch-size", "137"]) == 0
    summary = orjson.loads(capsys.readouterr().out)
    got = list(read_jsonl(decisions))
    rej = list(read_jsonl(rejects))
    expected_ids = [orjson.loads(x)["metadata"]["uid"] for x in lines[:2000]]
    assert [d["event_id"] for d in got] == expected_ids
    assert all(tuple(d)[:5] == DECISION_FIELDS for d in got)
    assert {r["reason"] for r in rej} == {"not_json", "not_object", "unknown_class",
                                          "missing_entity", "too_large"}
    assert summary["lines"] == summary["accepted"] + summary["rejected"] == len(body)
    assert summary["accepted"] == 2000


def test_replay_twice_gives_identical_output(workdir: Path, generated: Path, trained: Path) -> None:
    outs = []
    for n, batch in enumerate(("1", "1000")):
        out = workdir / f"twice-{n}.jsonl"
        assert main(["replay", "--model", str(trained), "--events",
                     str(generated / "events.jsonl"), "--decisions", str(out),
                     "--batch-size", batch]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_replay_refuses_a_tampered_model(workdir: Path, trained: Path, generated: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    bad = workdir / "tampered"
    shutil.copytree(trained, bad)
    forest = bad / "forest_auth.npz"
    data = bytearray(forest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    forest.write_bytes(bytes(data))
    code = main(["replay", "--model", str(bad), "--events", str(generated / "events.jsonl"),
                 "--decisions", str(workdir / "never.jsonl")])
    assert code == 2
    assert "sha256 mismatch" in capsys.readouterr().err


def test_demo_runs_on_the_default_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--users", "40", "--warmup-days", "3", "--show", "5"]) == 0
    out = capsys.readouterr().out
    assert "events/s" in out
    assert "attacks caught:" in out
    assert "false alarms" in out


def test_evaluate_after_replay(workdir: Path, generated: Path, trained: Path) -> None:
    decisions = workdir / "eval-decisions.jsonl"
    assert main(["replay", "--model", str(trained), "--events", str(generated / "events.jsonl"),
                 "--decisions", str(decisions)]) == 0
    out = workdir / "eval"
    assert main(["evaluate", "--decisions", str(decisions), "--labels",
                 str(generated / "labels.jsonl"), "--out", str(out)]) == 0
    metrics = orjson.loads((out / "metrics.json").read_bytes())
    assert 0.5 <= metrics["roc_auc"] <= 1.0
    assert list(out.glob("*.png"))
    assert (out / "report.md").stat().st_size > 0


def test_train_with_a_feature_subset(workdir: Path, generated: Path) -> None:
    from detector.model import load_model
    from detector.train import TrainConfig, train

    subset = ("hour_rarity", "country_rarity", "asn_rarity", "device_rarity", "host_rarity",
              "bytes_out_z")
    out = workdir / "subset-model"
    train([generated / "events.jsonl"], out, TrainConfig(n_estimators=10, features=subset))
    m = load_model(out)
    assert {f for km in m.kinds.values() for f in km.features} == set(subset)
    with pytest.raises(ValueError, match="unknown feature"):
        train([generated / "events.jsonl"], workdir / "bad", TrainConfig(features=("nope",)))
    with pytest.raises(ValueError, match="no feature"):
        train([generated / "events.jsonl"], workdir / "bad", TrainConfig(features=("mfa",)))
