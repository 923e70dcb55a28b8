"""A pickle payload that records when it is unpickled: a stand-in for arbitrary code.

Shared by the tests that prove no load path unpickles anything (model
artifacts, forest arrays, model reload): write ``pickle.dumps(Payload())``
(or a numpy object array holding one) where an artifact is expected, clear
:data:`UNPICKLED`, load, and assert it is still empty.
"""

from __future__ import annotations

from collections.abc import Callable

#: Tags of the payloads unpickled so far (cleared by each test).
UNPICKLED: list[str] = []


def record_unpickle(tag: str) -> str:
    """Record that a payload ran; return its tag (what unpickling yields)."""
    UNPICKLED.append(tag)
    return tag


class Payload:
    """Unpickling this object calls :func:`record_unpickle`."""

    def __reduce__(self) -> tuple[Callable[[str], str], tuple[str]]:
        return (record_unpickle, ("payload ran",))
