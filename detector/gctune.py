"""Cyclic garbage-collector thresholds for the long-running entry points.

CPython's cyclic collector runs a young-generation pass every 700 net
allocations and, every 100 of those, a full pass over every tracked object
in the process. A worker or a replay allocates a few hundred objects per
event (parsed events, decisions, Kafka records, futures), almost none of
them in reference cycles: they are freed by reference counting as soon as
the batch is done. With the interpreter's thresholds the collector found
almost nothing and cost the worker about a fifth of its CPU, most of it in
full passes of 60-70 ms each over the held states, Faust's and aiokafka's
objects and the model (measured: 3.1-3.5 s of collector time in 17-18 s of
worker CPU for a 60,000-event drain; docs/streaming.md, "Garbage
collection").

Raising the thresholds makes the passes rare, not absent: cycles (exception
tracebacks, asyncio's futures) are still collected, only later. The entry
points (``detector worker``, ``detector replay``) apply
:data:`DEFAULT_THRESHOLD` unless told otherwise; the core itself never
touches interpreter settings.
"""

from __future__ import annotations

import gc
from typing import Final

#: CPython 3.11's own thresholds (``gc.get_threshold()`` of a fresh interpreter).
PYTHON_THRESHOLD: Final = (700, 10, 10)

#: The entry points' default: a young pass once a million more tracked
#: objects are alive than at the last one (the count is allocations minus
#: deallocations, so a steady stream whose batches are freed by reference
#: counting rarely reaches it; the worker's states held until the next
#: commit are what does), a middle pass every 50 young ones and a full pass
#: every 50 middle ones (CPython also skips a full pass until the objects
#: that survived the middle passes reach a quarter of the old generation).
#: Measured against 20,000,20,20 and 100,000,50,50 in the same runs, it
#: took the least CPU per event (docs/streaming.md, "Garbage collection").
DEFAULT_THRESHOLD: Final = (1_000_000, 50, 50)

#: How a threshold is written in flags and environment variables.
THRESHOLD_HELP: Final = (
    "cyclic GC thresholds: 'python' (the interpreter's 700,10,10) or three "
    "integers gen0,gen1,gen2 (default 1000000,50,50)"
)


def parse_threshold(text: str) -> tuple[int, int, int]:
    """Return the three thresholds written as ``"a,b,c"`` or ``"python"``.

    Raises ``ValueError`` on anything else, or on a young threshold below 1
    (``gc.set_threshold(0)`` would switch the collector off, which this
    setting does not offer: cycles must still be collected).

    Examples
    --------
    >>> parse_threshold("python"), parse_threshold("1000000, 50, 50")
    ((700, 10, 10), (1000000, 50, 50))
    >>> parse_threshold("0,10,10")
    Traceback (most recent call last):
    ...
    ValueError: gc threshold: each value must be >= 1 (0 would switch the collector off)
    """
    value = text.strip().lower()
    if value == "python":
        return PYTHON_THRESHOLD
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"gc threshold: expected 'python' or three integers a,b,c, got {text!r}")
    young, middle, old = (int(p) for p in parts)
    if min(young, middle, old) < 1:
        raise ValueError("gc threshold: each value must be >= 1 (0 would switch the collector off)")
    return young, middle, old


def format_threshold(threshold: tuple[int, int, int]) -> str:
    """Return ``threshold`` written as :func:`parse_threshold` reads it ("a,b,c")."""
    return ",".join(str(t) for t in threshold)


def apply_threshold(threshold: tuple[int, int, int]) -> tuple[int, int, int]:
    """Set the collector's thresholds for this process; return the previous ones."""
    previous: tuple[int, int, int] = gc.get_threshold()
    gc.set_threshold(*threshold)
    return previous
