"""Faust's aiokafka transport with a configurable consumer fetch wait.

Registered in Faust's transport registry under the URL scheme
:data:`TRANSPORT_SCHEME`; the worker's broker URLs use it. Kept in its own
module because mode logs a service's lifecycle with the logger of the module
that defines its class (this one is kept at WARNING).
"""

from __future__ import annotations

from typing import Any, Final

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with the fetch wait taken from the settings.

    Faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500``. A fetch
    is not sent for partitions whose records are still buffered, so a
    partition drained just after a long-poll went out waits for that poll to
    expire: up to 1.5 s per hop, on four hops. The consumer is built by
    Faust, then given the configured wait before it starts.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "zt_fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = int(wait)  # read by AIOKafkaConsumer.start()
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`_ConsumerThread`."""

    Consumer = _Consumer


#: Broker URL scheme of :class:`Transport` (Faust's registry of transports).
TRANSPORT_SCHEME: Final = "zt-kafka"
TRANSPORTS.aliases[TRANSPORT_SCHEME] = f"{__name__}:Transport"
