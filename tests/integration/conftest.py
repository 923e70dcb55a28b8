"""Integration tests against a real Kafka broker.

Every test in this directory is marked ``kafka`` (deselect with ``-m "not kafka"``).
The session-scoped ``kafka_bootstrap`` fixture gives the bootstrap address:

* ``KAFKA_BOOTSTRAP_SERVERS`` if it is set (a broker someone else runs);
* else a broker that ``scripts/kafka-local`` already runs (left running, as found);
* else it starts one with ``scripts/kafka-local start`` and stops it when the
  session ends.

A broker that cannot be started fails the tests with the broker's log tail:
never a silent skip.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KAFKA_LOCAL = REPO / "scripts" / "kafka-local"

# The first run fetches the broker jars (Maven) before the start itself (<= 90 s).
START_TIMEOUT_S = 900
STOP_TIMEOUT_S = 120
_TAIL_CHARS = 12_000


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.kafka)


def _kafka_local(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KAFKA_LOCAL), *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _tail(text: str) -> str:
    return text if len(text) <= _TAIL_CHARS else "...\n" + text[-_TAIL_CHARS:]


def _stop() -> subprocess.CompletedProcess[str]:
    return _kafka_local("stop", timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        yield external
        return

    running = _kafka_local("bootstrap", timeout=30)
    if running.returncode == 0 and running.stdout.strip():
        yield running.stdout.strip()
        return

    try:
        started = _kafka_local("start", timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        _stop()
        pytest.fail(
            f"scripts/kafka-local start did not finish in {START_TIMEOUT_S}s\n{_tail(stderr)}",
            pytrace=False,
        )
    if started.returncode != 0 or not started.stdout.strip():
        pytest.fail(
            f"scripts/kafka-local start failed (exit {started.returncode}):\n"
            f"{_tail(started.stderr)}",
            pytrace=False,
        )
    address = started.stdout.strip().splitlines()[-1]
    # Another session started it between our look and our start: it is theirs to stop.
    ours = "already running" not in started.stderr
    try:
        yield address
    finally:
        if ours:
            stopped = _stop()
            if stopped.returncode != 0:
                pytest.fail(
                    f"scripts/kafka-local stop failed (exit {stopped.returncode}):\n"
                    f"{_tail(stopped.stderr)}",
                    pytrace=False,
                )


# ------------------------------------------------------------------ streaming


@pytest.fixture(scope="session")
def stream_dataset(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[dict[str, object]]]:
    """A small generated workforce (with attacks) and its replay decisions, in order.

    ``detector replay`` semantics on the same file are the reference every
    streaming test compares the worker against.
    """
    import orjson

    from detector.engine import Detector
    from detector.generate import GeneratorConfig, write_dataset
    from detector.model import load_model
    from detector.replay import replay

    out = tmp_path_factory.mktemp("stream-dataset")
    write_dataset(GeneratorConfig(users=25, days=3, seed=7), out)
    events = out / "events.jsonl"
    with (out / "decisions.jsonl").open("wb") as fh:
        replay(Detector(load_model(REPO / "models" / "default")), [events], fh, None)
    lines = (out / "decisions.jsonl").read_bytes().splitlines()
    decisions = [orjson.loads(line) for line in lines]
    return events, decisions
