"""Check the Kafka connection before a component starts: fail fast, and say why.

The Kafka clients retry a failed bootstrap until a timeout and then report
only "Unable to bootstrap": a wrong password, a CA that does not match the
broker's certificate, and a broker that is down all look alike. The
operator needs to know which. :func:`check_connection` opens one connection
the way the clients will (same TLS context, same SASL mechanism and
credentials) with ``aiokafka.conn.create_conn``, which raises the real
error, and turns it into a :class:`BrokerConnectionError` that names the
cause and the setting to fix.

Refused credentials and an untrusted certificate are permanent: they fail at
once. An unreachable broker may be starting: it is retried until the timeout.
The password is never part of a message.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any, Final

from detector.stream.settings import KafkaConnection

logger = logging.getLogger(__name__)

#: How long an unreachable broker is retried (kafka-python's bootstrap default).
CONNECT_TIMEOUT_S: Final = 30.0
_RETRY_S: Final = 1.0
_ATTEMPT_TIMEOUT_S: Final = 10.0


class BrokerConnectionError(ConnectionError):
    """The brokers are unreachable, or refuse this client's TLS or credentials."""


def _split(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bootstrap server {server!r} is not host:port")
    return host.strip("[]"), int(port)


def _permanent(conn: KafkaConnection, server: str, exc: BaseException) -> str | None:
    """Return the message for an error that retrying cannot fix, else None."""
    from aiokafka import errors

    if isinstance(exc, errors.SaslAuthenticationFailed):
        detail = exc.args[0] if exc.args else type(exc).__name__
        return (
            f"authentication failed at {server}: the broker refused user "
            f"{conn.sasl_username!r} with {conn.sasl_mechanism.value} ({detail}); "
            "check the SASL username and password (--sasl-username, DETECTOR_SASL_PASSWORD) "
            "and the mechanism (--sasl-mechanism)"
        )
    if isinstance(exc, errors.UnsupportedSaslMechanismError):
        return (
            f"the broker at {server} does not accept SASL mechanism "
            f"{conn.sasl_mechanism.value}; check --sasl-mechanism"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        ca = str(conn.ssl_cafile) if conn.ssl_cafile is not None else "the system's CAs"
        return (
            f"TLS: the certificate of the broker at {server} is not trusted "
            f"({exc.verify_message}; trusted: {ca}); give the CA that signed the broker's "
            "certificate with --ssl-cafile (DETECTOR_SSL_CAFILE)"
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS handshake with {server} failed ({exc.reason or exc}); is it a TLS listener? "
            f"this client uses security protocol {conn.security_protocol.value}"
        )
    if isinstance(exc, errors.KafkaError) and not getattr(exc, "retriable", False) and not (
        isinstance(exc, errors.KafkaConnectionError | errors.KafkaTimeoutError)
    ):
        return f"Kafka at {server} refused the connection: {exc}"
    return None


async def _attempt(conn: KafkaConnection, server: str, timeout_s: float) -> None:
    from aiokafka.conn import create_conn

    host, port = _split(server)
    cfg: dict[str, Any] = conn.aiokafka_config()
    del cfg["bootstrap_servers"]
    opened = await asyncio.wait_for(
        create_conn(
            host, port, client_id="detector-preflight",
            request_timeout_ms=int(timeout_s * 1000), **cfg,
        ),
        timeout_s,
    )
    opened.close()


def check_connection(conn: KafkaConnection, timeout_s: float = CONNECT_TIMEOUT_S) -> str:
    """Connect (TLS and SASL included) to one bootstrap server; return its address.

    Tries the servers in turn until one accepts, retrying unreachable ones for
    up to ``timeout_s`` seconds.

    Raises
    ------
    BrokerConnectionError
        At once when a broker refuses the credentials or its certificate is
        not trusted; after ``timeout_s`` when no broker could be reached. The
        message names the cause and the setting to check.
    """
    return asyncio.run(_check(conn, timeout_s))


async def _check(conn: KafkaConnection, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        for server in conn.servers:
            remaining = deadline - time.monotonic()
            try:
                await _attempt(conn, server, max(1.0, min(_ATTEMPT_TIMEOUT_S, remaining)))
            except Exception as exc:  # classified below; nothing is swallowed silently
                message = _permanent(conn, server, exc)
                if message is not None:
                    raise BrokerConnectionError(message) from None
                # aiokafka's messages already start with the error's name.
                last = f"{server}: {str(exc) or type(exc).__name__}"
                logger.warning("kafka connection check failed %s", last)
                continue
            return server
        if time.monotonic() + _RETRY_S >= deadline:
            break
        await asyncio.sleep(_RETRY_S)
    raise BrokerConnectionError(
        f"cannot reach Kafka at {','.join(conn.servers)} within {timeout_s:g}s "
        f"(last error: {last}); check --bootstrap-servers and that the security protocol "
        f"{conn.security_protocol.value} is what the listener speaks"
    )
