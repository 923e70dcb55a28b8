"""The connection check names the cause of a failure (no broker needed here).

Refused credentials and untrusted certificates are covered against a real
broker in tests/integration/test_kafka_sasl_ssl.py.
"""

from __future__ import annotations

import secrets
import socket

import pytest

from detector.stream.preflight import BrokerConnectionError, check_connection
from detector.stream.settings import KafkaConnection, SaslMechanism, SecurityProtocol


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_broker_is_retried_then_reported() -> None:
    conn = KafkaConnection(bootstrap_servers=f"127.0.0.1:{_closed_port()}")
    with pytest.raises(BrokerConnectionError, match="cannot reach Kafka at 127.0.0.1:") as info:
        check_connection(conn, timeout_s=1.5)
    assert "--bootstrap-servers" in str(info.value)
    # The CLI prints OSErrors as "detector <cmd>: error: <message>".
    assert isinstance(info.value, OSError)


def test_password_never_in_message() -> None:
    password = secrets.token_hex(12)
    conn = KafkaConnection(
        bootstrap_servers=f"127.0.0.1:{_closed_port()}",
        security_protocol=SecurityProtocol.SASL_PLAINTEXT,
        sasl_mechanism=SaslMechanism.SCRAM_SHA_512, sasl_username="u", sasl_password=password,
    )
    with pytest.raises(BrokerConnectionError) as info:
        check_connection(conn, timeout_s=1.0)
    assert password not in str(info.value)
