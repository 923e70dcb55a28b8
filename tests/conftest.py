"""Shared fixtures: a small generated organisation and a model trained on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.events import Event, parse_event

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "models" / "default"
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z (a Thursday)


def make_auth(**overrides: Any) -> Event:
    """Return a parsed native auth event with sensible defaults, overridden."""
    doc: dict[str, Any] = {
        "kind": "auth",
        "id": "e1",
        "ts": START_MS + 9 * 3_600_000,
        "user": "ana",
        "ok": True,
        "ip": "198.51.100.7",
        "country": "US",
        "city": "Chicago",
        "lat": 41.88,
        "lon": -87.63,
        "asn": 7922,
        "device": "laptop-1",
        "ua": "Mozilla/5.0 (Macintosh)",
        "service": "mail",
        "session": "s-1",
    }
    doc.update(overrides)
    return parse_event(orjson.dumps({k: v for k, v in doc.items() if v is not None}))


def make_net(**overrides: Any) -> Event:
    """Return a parsed native network event with defaults, overridden."""
    doc: dict[str, Any] = {
        "kind": "network",
        "id": "n1",
        "ts": START_MS + 10 * 3_600_000,
        "user": "ana",
        "device": "laptop-1",
        "ip": "10.0.0.5",
        "dst_ip": "10.1.0.10",
        "dst_host": "files-1",
        "dst_port": 445,
        "direction": "lateral",
        "bytes_out": 20_000,
        "bytes_in": 400_000,
    }
    doc.update(overrides)
    return parse_event(orjson.dumps({k: v for k, v in doc.items() if v is not None}))


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated organisation: 60 users, 6 days, attacks from day 4."""
    from detector.generate import GeneratorConfig, write_dataset

    out = tmp_path_factory.mktemp("dataset")
    write_dataset(GeneratorConfig(users=60, days=6, seed=11, attack_days_from=4), out)
    return out


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained (20 trees) on a separate attack-free organisation."""
    from detector.generate import GeneratorConfig, write_dataset
    from detector.train import TrainConfig, train

    data = tmp_path_factory.mktemp("train-data")
    write_dataset(GeneratorConfig(users=60, days=5, seed=3, attacks=False), data)
    out = tmp_path_factory.mktemp("models") / "small"
    train([data / "events.jsonl"], out, TrainConfig(n_estimators=20, seed=1, name="small"))
    return out


@pytest.fixture(scope="session")
def small_events(small_dataset: Path) -> list[Event]:
    """The parsed events of ``small_dataset``."""
    out = []
    with open(small_dataset / "events.jsonl", "rb") as fh:
        for line in fh:
            out.append(parse_event(line))
    return out


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the JSON records of a JSONL file."""
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print any log leak found, and the hostile-input fuzz tally when those tests ran."""
    for leak in _LEAKS:
        terminalreporter.write_line(f"LOG LEAK: {leak}", red=True)
    import sys
    from collections import Counter

    module = sys.modules.get("tests.test_hostile")
    tally = getattr(module, "TALLY", None)
    if not tally:
        return
    by_test: dict[str, Counter[str]] = {}
    for (test, result), n in tally.items():
        by_test.setdefault(test, Counter())[result] += n
    for test, counts in [*sorted(by_test.items()), ("total", sum(by_test.values(), Counter()))]:
        total = sum(counts.values())
        accepted = counts.get("accept", 0)
        rejects = {k: v for k, v in sorted(counts.items()) if k != "accept"}
        terminalreporter.write_line(
            f"hostile fuzz [{test}]: {total} cases = {accepted} accepted and decided"
            f" + {total - accepted} rejected {rejects}"
        )


# ------------------------------------------------ log hygiene over the whole run
#
# Every test's captured log records, stdout and stderr are scanned for secret
# material and for the canaries tests/test_log_hygiene.py plants in events and
# settings. Only what reaches pytest's capture is seen (loggers at WARNING
# unless a test lowers them; worker subprocesses log to their own files), so
# this is a safety net: tests/test_log_hygiene.py drives the flows at DEBUG.
_LEAK_PATTERNS = (
    "PRIVATE KEY-----",
    "sasl_plain_password",
    "Bearer ",
    "canary-sasl-pw-",
    "canary-bearer-tok-",
    "canary-signing-key-",
    "canary-user-agent-",
    "canary-status-detail-",
    "canary-raw-bytes-",
)
_LEAKS: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "log_leak_expected: the test plants a leak on purpose (not scanned)"
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record any secret pattern in a test's captured logs, stdout or stderr."""
    if "log_leak_expected" in report.keywords:
        return
    for title, text in report.sections:
        for pattern in _LEAK_PATTERNS:
            if pattern in text:
                _LEAKS.append(f"{report.nodeid} [{title}]: {pattern!r}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when any test's captured output leaked a secret pattern."""
    if _LEAKS and exitstatus == 0:
        session.exitstatus = 1
