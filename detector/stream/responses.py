"""The reference revocation consumer (kafka-python): ``detector responses``.

:class:`ResponseConsumer` tails the response topic and hands every signal to
a handler. Its guarantees:

* **nothing is lost**: an offset is committed only after the handler succeeded
  for that record; a failing handler is retried with capped exponential
  backoff, and when it gives up (permanent error, or ``max_attempts``
  exhausted) the consumer stops *without* committing, so the signal is read
  again on the next start;
* **no double call for a duplicated signal**: signals are deduplicated by
  ``signal_id`` (the worker emits the same id when it redelivers an event).
  The id set is bounded (most recent ``dedup_size`` ids) and in memory;
  across restarts the committed offsets do that job. A crash between a
  handler's success and the commit can call that one signal again: the
  handler's endpoint should be idempotent on ``signal_id`` (CAEP ``jti``).

* **only signed signals are acted on** (with a :class:`~detector.sets.SetVerifier`,
  i.e. ``--jwks``): each record's ``set`` token is verified (ES256 signature
  by a ``kid`` of the JWKS, ``iss``, ``aud``, ``iat`` freshness) and the
  handler gets the signal *from the signed payload*; an envelope that
  disagrees with it, a replayed ``jti``, an unsigned or a forged record is
  refused with a reason code (:data:`~detector.sets.REFUSAL_REASONS`),
  counted, logged (reason, signal id, partition, offset) and committed past:
  it can never become valid. Without a verifier the consumer refuses to
  start unless ``allow_unsigned`` is explicitly set (see docs/signals.md).

Built-in handlers: :class:`PrintHandler`, :class:`FileHandler` and
:class:`HttpPostHandler` (an IdP logout or token-revocation endpoint).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from detector.sets import SET_FIELD, ReplayCache, SetError, SetVerifier
from detector.signals import to_caep_set
from detector.stream.settings import KafkaConnection

logger = logging.getLogger(__name__)


class TransientError(Exception):
    """The handler may succeed if retried (timeout, 5xx, connection refused)."""


class PermanentError(Exception):
    """Retrying cannot help (a 4xx other than 408/429, a malformed signal)."""


class Handler(Protocol):
    """Acts on one signal; raises :class:`TransientError`/:class:`PermanentError`."""

    def __call__(self, signal: dict[str, Any]) -> None:
        """Handle ``signal`` (a response-topic record)."""


class PrintHandler:
    """Write each signal as one JSON line to a stream (stdout by default)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout

    def __call__(self, signal: dict[str, Any]) -> None:
        """Print ``signal``."""
        self.stream.write(orjson.dumps(signal).decode() + "\n")
        self.stream.flush()


class FileHandler:
    """Append each signal as one JSON line to a file, flushed and fsynced."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __call__(self, signal: dict[str, Any]) -> None:
        """Append ``signal`` durably."""
        try:
            with self.path.open("ab") as fh:
                fh.write(orjson.dumps(signal) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise TransientError(f"cannot append to {self.path}: {exc.strerror}") from exc


class HttpPostHandler:
    """POST each signal as JSON to a URL (e.g. an IdP's session-revocation endpoint).

    Parameters
    ----------
    url : ``http://`` or ``https://`` endpoint
    body : ``"signal"`` posts the response-topic record; ``"caep"`` posts the
        CAEP Security Event Token payload (unsigned JSON); ``"set"`` posts
        the detector's signed SET itself (``application/secevent+jwt``, as in
        RFC 8935 push delivery), so the endpoint can verify it too
    issuer : the CAEP ``iss`` claim
    token : optional bearer token (sent, never logged)
    timeout_s : per-request timeout
    """

    def __init__(
        self,
        url: str,
        body: str = "signal",
        issuer: str = "urn:zt-detector",
        token: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("the HTTP handler needs an http:// or https:// URL")
        if body not in ("signal", "caep", "set"):
            raise ValueError("body must be 'signal', 'caep' or 'set'")
        self.url = url
        self.body = body
        self.issuer = issuer
        self._token = token
        self.timeout_s = timeout_s

    def __call__(self, signal: dict[str, Any]) -> None:
        """POST ``signal``; 2xx is success."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": signal["signal_id"]}
        if self.body == "set":
            token = signal.get(SET_FIELD)
            if not isinstance(token, str):
                raise PermanentError("no signed SET to post (is the worker signing?)")
            data = token.encode("ascii")
            headers["Content-Type"] = "application/secevent+jwt"
        else:
            payload = signal if self.body == "signal" else to_caep_set(signal, self.issuer)
            data = orjson.dumps(payload)
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(  # noqa: S310 (scheme checked in __init__)
            self.url, data=data, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:  # noqa: S310
                resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (408, 429) or exc.code >= 500:
                raise TransientError(f"HTTP {exc.code}") from exc
            raise PermanentError(f"HTTP {exc.code}") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise TransientError(type(exc).__name__) from exc


class HandlerFailed(Exception):
    """The handler gave up on a signal; its offset was not committed."""


@dataclass
class ConsumeStats:
    """Counts of one consumer run."""

    records: int = 0
    handled: int = 0
    duplicates: int = 0
    malformed: int = 0
    retries: int = 0
    by_action: Counter[str] = field(default_factory=Counter)
    #: Signals whose SET verified (and were then handled or found replayed).
    verified: int = 0
    #: Records refused by verification, by reason code. With a verifier,
    #: records = handled + malformed + sum(refused) (a repeated jti is
    #: ``replayed``); without one, records = handled + duplicates + malformed.
    refused: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready summary."""
        return {
            "records": self.records,
            "handled": self.handled,
            "duplicates": self.duplicates,
            "malformed": self.malformed,
            "retries": self.retries,
            "by_action": dict(self.by_action),
            "verified": self.verified,
            "refused": dict(self.refused),
        }


_SAFE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def _loggable_id(value: object) -> str:
    """Return ``value`` if it looks like a signal id, else a placeholder.

    A refused record's ``signal_id`` is unauthenticated input: never let it
    forge log lines.
    """
    return value if isinstance(value, str) and _SAFE_ID.fullmatch(value) else "<invalid>"


class ResponseConsumer:
    """Tail the response topic; call ``handler`` once per distinct signal.

    Parameters
    ----------
    connection : how to reach the brokers
    topic : the response topic
    group_id : consumer group (offsets are committed per group)
    handler : called with each signal record (a dict)
    dedup_size : how many recent signal ids are remembered
    max_attempts : attempts per signal before giving up; 0 = retry forever
    backoff_s, backoff_max_s : first retry delay, doubled up to the cap
    consumer : a ``kafka.KafkaConsumer``-like object (tests); built when None
    verifier : verify every record's SET and act only on the signed signal;
        refuse everything else
    allow_unsigned : act on unverified records (no ``verifier``); must be
        asked for explicitly, the consumer refuses to start with neither
    clock : epoch seconds, for the freshness window (tests pass a fake)

    Raises ``ValueError`` without a verifier unless ``allow_unsigned``, and
    with both.
    """

    def __init__(
        self,
        connection: KafkaConnection,
        topic: str,
        group_id: str,
        handler: Handler,
        dedup_size: int = 100_000,
        max_attempts: int = 0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        consumer: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        verifier: SetVerifier | None = None,
        allow_unsigned: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if verifier is None and not allow_unsigned:
            raise ValueError(
                "refusing to act on unsigned signals: give a JWKS to verify them "
                "(--jwks FILE) or allow unsigned signals explicitly (--allow-unsigned)"
            )
        if verifier is not None and allow_unsigned:
            raise ValueError("--jwks and --allow-unsigned exclude each other")
        self.verifier = verifier
        self._clock = clock
        self._replay = ReplayCache()
        self.topic = topic
        self.handler = handler
        self.dedup_size = dedup_size
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._sleep = sleep
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.stats = ConsumeStats()
        if consumer is None:
            from kafka import KafkaConsumer

            consumer = KafkaConsumer(
                topic,
                group_id=group_id,
                client_id=f"{group_id}-responses",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **connection.kafka_python_config(),
            )
        self._consumer = consumer

    def _remember(self, signal_id: str) -> None:
        self._seen[signal_id] = None
        if len(self._seen) > self.dedup_size:
            self._seen.popitem(last=False)

    def _call(self, signal: dict[str, Any], stop: threading.Event | None) -> None:
        attempt = 0
        delay = self.backoff_s
        while True:
            attempt += 1
            try:
                self.handler(signal)
                return
            except PermanentError as exc:
                raise HandlerFailed(
                    f"signal {signal['signal_id']}: permanent failure: {exc}"
                ) from exc
            except TransientError as exc:
                if self.max_attempts and attempt >= self.max_attempts:
                    raise HandlerFailed(
                        f"signal {signal['signal_id']}: gave up after {attempt} attempts: {exc}"
                    ) from exc
                if stop is not None and stop.is_set():
                    raise HandlerFailed("stopped while retrying") from exc
                self.stats.retries += 1
                logger.warning(
                    "handler failed signal_id=%s attempt=%d error=%s retry_in=%.2fs",
                    signal["signal_id"], attempt, exc, delay,
                )
                self._sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)

    def _commit(self, record: Any) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        tp = TopicPartition(record.topic, record.partition)
        self._consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})

    def handle_record(self, record: Any, stop: threading.Event | None = None) -> None:
        """Handle one consumed record, then commit past it.

        Raises :class:`HandlerFailed` (nothing committed) when the handler gives up.
        """
        self.stats.records += 1
        try:
            signal = orjson.loads(record.value)
            if not isinstance(signal, dict) or not isinstance(signal.get("signal_id"), str):
                raise ValueError("no signal_id")
        except (orjson.JSONDecodeError, ValueError, TypeError):
            # Not a signal: nothing can ever handle it, so skip (and say so).
            self.stats.malformed += 1
            logger.error(
                "malformed signal record topic=%s partition=%d offset=%d",
                record.topic, record.partition, record.offset,
            )
            self._commit(record)
            return
        if self.verifier is not None:
            self._handle_signed(self.verifier, signal, record, stop)
            self._commit(record)
            return
        signal_id = signal["signal_id"]
        if signal_id in self._seen:
            self.stats.duplicates += 1
            logger.info("duplicate signal skipped signal_id=%s", signal_id)
        else:
            self._call(signal, stop)
            self._remember(signal_id)
            self.stats.handled += 1
            self.stats.by_action[str(signal.get("action"))] += 1
            logger.info(
                "signal handled signal_id=%s action=%s partition=%d offset=%d",
                signal_id, signal.get("action"), record.partition, record.offset,
            )
        self._commit(record)

    def _handle_signed(
        self,
        verifier: SetVerifier,
        envelope: dict[str, Any],
        record: Any,
        stop: threading.Event | None,
    ) -> None:
        now = self._clock()
        if self.stats.records % 1024 == 0:
            self._replay.prune(now)
        try:
            verified = verifier.verify_record(envelope, now)
            if self._replay.seen(verified.jti, now):
                # a worker's redelivery and an attacker's copy look alike and
                # are harmless while the jti is remembered: the handler ran.
                self._replay.remember(verified.jti, verifier.valid_until(verified))
                raise SetError("replayed")
        except SetError as exc:
            self._refuse(exc, envelope, record)
            return
        self.stats.verified += 1
        # act on the signed content only (verify_record checked the envelope equals it)
        signal = {**verified.signal, SET_FIELD: verified.token}
        self._call(signal, stop)
        self._replay.remember(verified.jti, verifier.valid_until(verified))
        self.stats.handled += 1
        self.stats.by_action[str(signal.get("action"))] += 1
        logger.info(
            "signal handled signal_id=%s action=%s kid=%s partition=%d offset=%d",
            verified.jti, signal.get("action"), verified.kid, record.partition, record.offset,
        )

    def _refuse(self, exc: SetError, envelope: dict[str, Any], record: Any) -> None:
        self.stats.refused[exc.reason] += 1
        if exc.reason == "replayed":
            level = logging.INFO
            hint = "already handled: a redelivery or a replay"
        elif exc.reason == "expired":
            level = logging.ERROR
            hint = ("older than the freshness window: this consumer lags by more than "
                    "max_age_s (or clocks disagree); a genuine signal is LOST to it")
        else:
            level = logging.ERROR
            hint = "not acted on"
        logger.log(
            level,
            "signal refused reason=%s signal_id=%s topic=%s partition=%d offset=%d: %s%s",
            exc.reason, _loggable_id(envelope.get("signal_id")), record.topic,
            record.partition, record.offset, hint,
            f" ({exc.detail})" if exc.detail else "",
        )

    def run(
        self,
        stop: threading.Event | None = None,
        idle_timeout_s: float | None = None,
        max_records: int | None = None,
    ) -> ConsumeStats:
        """Consume until ``stop`` is set, ``idle_timeout_s`` passes with no record,
        or ``max_records`` records were read.

        Raises :class:`HandlerFailed` when the handler gives up on a signal.
        """
        last_record = time.monotonic()
        while stop is None or not stop.is_set():
            batches = self._consumer.poll(timeout_ms=500, max_records=100)
            for records in batches.values():
                for record in records:
                    self.handle_record(record, stop)
                    last_record = time.monotonic()
                    if max_records is not None and self.stats.records >= max_records:
                        return self.stats
            idle = time.monotonic() - last_record
            if idle_timeout_s is not None and idle >= idle_timeout_s:
                break
        return self.stats

    def close(self) -> None:
        """Close the consumer (leaves the group)."""
        self._consumer.close()
