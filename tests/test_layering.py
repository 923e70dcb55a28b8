"""The core never imports faust, asyncio or Kafka clients, and never reads env or clock."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = [
    "detector.events",
    "detector.config",
    "detector.baseline",
    "detector.context",
    "detector.features",
    "detector.policy",
    "detector.forest",
    "detector.model",
    "detector.engine",
    "detector.signals",
    "detector.sets",
    "detector.metrics",
]
FORBIDDEN_MODULES = ("faust", "mode", "aiokafka", "kafka", "asyncio")
PKG = Path(__file__).resolve().parent.parent / "detector"


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_streaming_stack(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_MODULES!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"


@pytest.mark.parametrize("module", CORE)
def test_core_module_reads_no_clock_or_environment(module: str) -> None:
    source = (PKG / (module.split(".")[1] + ".py")).read_text()
    tree = ast.parse(source)
    banned_attrs = {("time", "time"), ("time", "time_ns"), ("os", "environ"), ("os", "getenv"),
                    ("datetime", "now"), ("datetime", "utcnow"), ("date", "today")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert (node.value.id, node.attr) not in banned_attrs, (module, node.attr)
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            assert all(a.name not in ("environ", "getenv") for a in node.names), module
