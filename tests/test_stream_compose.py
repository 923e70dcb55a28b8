"""docker-compose.yml and the Dockerfile refer only to things that exist in the project.

No Docker engine runs here, so this checks what can be checked: the file
parses; the expected services are there; every ``detector`` command line
parses with the real CLI parser; every DETECTOR_* variable is a real setting;
the Kafka image matches the broker the tests run; the Dockerfile's COPY
sources exist. PyYAML is not a project dependency, so the compose file keeps
to a small YAML subset (block mappings and sequences, flow lists, plain or
quoted scalars; no anchors) that ``_load_yaml`` reads.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from detector.cli import build_parser
from detector.stream.settings import KafkaConnection, WorkerSettings

REPO = Path(__file__).resolve().parents[1]
SERVICES = {"kafka", "topics", "keys", "jwks", "worker-1", "worker-2", "producer", "responses"}


def _scalar(text: str) -> Any:
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _load_yaml(text: str) -> Any:
    lines: list[tuple[int, str]] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        assert "&" not in stripped.split(":")[0] and not stripped.startswith("<<"), raw
        lines.append((len(raw) - len(raw.lstrip(" ")), stripped))

    def block(i: int, indent: int) -> tuple[Any, int]:
        if lines[i][1].startswith("- "):
            items: list[Any] = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                items.append(_scalar(lines[i][1][2:]))
                i += 1
            return items, i
        mapping: dict[str, Any] = {}
        while i < len(lines) and lines[i][0] == indent:
            key, _, rest = lines[i][1].partition(":")
            i += 1
            if rest.strip():
                mapping[key] = _scalar(rest)
            elif i < len(lines) and lines[i][0] > indent:
                mapping[key], i = block(i, lines[i][0])
            else:
                mapping[key] = None
        return mapping, i

    doc, end = block(0, 0)
    assert end == len(lines), f"unparsed line: {lines[end]}"
    return doc


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = _load_yaml((REPO / "docker-compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_compose_has_the_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        for dep in (svc.get("depends_on") or {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
    for name, svc in services.items():
        for vol in svc.get("volumes") or []:
            assert vol.split(":")[0] in compose["volumes"], f"{name}: volume {vol}"


def test_kafka_image_is_the_broker_the_tests_run(compose: dict[str, Any]) -> None:
    pom = (REPO / "scripts" / "kafka" / "pom.xml").read_text()
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert version
    for name in ("kafka", "topics"):
        assert compose["services"][name]["image"] == f"apache/kafka:{version.group(1)}"
    assert "broker,controller" in compose["services"]["kafka"]["environment"][
        "KAFKA_PROCESS_ROLES"]


def test_topic_creation_covers_the_topics_the_detector_uses(compose: dict[str, Any]) -> None:
    script = " ".join(compose["services"]["topics"]["command"])
    created = set(re.findall(r"(zt\.[a-z]+):\d+", script))
    s = WorkerSettings(model_dir=Path("m"))
    assert created == {*s.input_topics, s.response_topic, s.dlq_topic}


@pytest.mark.parametrize(
    "service", ["keys", "jwks", "worker-1", "worker-2", "producer", "responses"]
)
def test_detector_commands_parse_with_the_real_cli(
    compose: dict[str, Any], service: str
) -> None:
    svc = compose["services"][service]
    assert svc["image"] == "zt-detector:latest"
    args = build_parser().parse_args(svc["command"])  # SystemExit on an unknown flag
    assert args.command in {"worker", "produce", "responses", "keys"}
    known = {f"DETECTOR_{f.name.upper()}" for f in (*fields(WorkerSettings),
                                                     *fields(KafkaConnection))}
    for var in svc.get("environment") or {}:
        assert var in known, f"{service}: {var} is not a setting"


def test_one_service_builds_the_image_from_the_dockerfile(compose: dict[str, Any]) -> None:
    builders = [n for n, s in compose["services"].items() if "build" in s]
    assert builders == ["worker-1"] and compose["services"]["worker-1"]["build"] == "."
    assert (REPO / "Dockerfile").is_file()


def test_dockerfile_copies_existing_files_and_runs_the_cli() -> None:
    text = (REPO / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            *sources, _dest = shlex.split(line)[1:]
            for src in sources:
                if "*" not in src:  # README.md* may be absent
                    assert (REPO / src).exists(), f"Dockerfile copies missing {src}"
    assert 'ENTRYPOINT ["detector"]' in text
    assert (REPO / "models" / "default" / "model.json").is_file()
    env = dict(re.findall(r"(DETECTOR_[A-Z_]+)=(\S+)", text))
    assert env["DETECTOR_MODEL_DIR"] == "/app/models/default"


def _mounts(svc: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Return container path -> (volume, read_only) of a service."""
    out = {}
    for spec in svc.get("volumes") or []:
        volume, path, *mode = spec.split(":")
        out[path] = (volume, mode == ["ro"])
    return out


def _volume_of(svc: dict[str, Any], file: str) -> tuple[str, bool]:
    for path, mount in _mounts(svc).items():
        if file.startswith(path.rstrip("/") + "/"):
            return mount
    raise AssertionError(f"{file} is on no volume of the service")


def test_workers_sign_with_the_generated_key_and_the_consumer_verifies(
    compose: dict[str, Any]
) -> None:
    services = compose["services"]
    parse = build_parser().parse_args
    keys = parse(services["keys"]["command"])
    jwks = parse(services["jwks"]["command"])
    responses = parse(services["responses"]["command"])
    assert keys.keys_command == "generate" and keys.keep_existing, "restarts keep the key"
    key_volume, _ = _volume_of(services["keys"], keys.out)
    # jwks publishes the public half of that very key into its own volume
    assert jwks.keys_command == "jwks" and len(jwks.key) == 1
    assert _volume_of(services["jwks"], jwks.key[0]) == (key_volume, True)
    assert Path(jwks.key[0]).name == Path(keys.out).name
    jwks_volume, _ = _volume_of(services["jwks"], jwks.out)
    assert jwks_volume != key_volume
    assert "keys" in services["jwks"]["depends_on"]
    for name in ("worker-1", "worker-2"):
        svc = services[name]
        env = svc["environment"]
        key_file = env["DETECTOR_SIGNING_KEY_FILE"]
        assert _volume_of(svc, key_file) == (key_volume, True), "workers read the key, ro"
        assert Path(key_file).name == Path(keys.out).name
        assert svc["depends_on"]["keys"]["condition"] == "service_completed_successfully"
        assert (env["DETECTOR_ISSUER"], env["DETECTOR_AUDIENCE"]) == (
            responses.issuer, responses.audience)
    # the consumer verifies against the published JWKS and never sees the private key
    assert responses.jwks and not responses.allow_unsigned
    assert _volume_of(services["responses"], responses.jwks) == (jwks_volume, True)
    assert Path(responses.jwks).name == Path(jwks.out).name
    assert key_volume not in {v for v, _ in _mounts(services["responses"]).values()}
    assert services["responses"]["depends_on"]["jwks"]["condition"] == (
        "service_completed_successfully")
    for name in ("producer", "kafka", "topics"):
        assert key_volume not in {v for v, _ in _mounts(services[name]).values()}
