"""zt-detector: streaming behavioral anomaly detection for zero-trust authorization.

The public API of the pure core. Importing this package has no side effects
and never imports faust, asyncio or Kafka clients.
"""

from __future__ import annotations

from detector.engine import Decision, Detector, EngineState
from detector.events import Event, EventKind, ParseError, parse_event
from detector.model import Model, load_model
from detector.policy import Action, Reason

__all__ = [
    "Action",
    "Decision",
    "Detector",
    "EngineState",
    "Event",
    "EventKind",
    "Model",
    "ParseError",
    "Reason",
    "load_model",
    "parse_event",
]
