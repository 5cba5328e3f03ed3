"""One MQTT 5 connection for the HQ tools, driven by the asyncio loop (paho-mqtt 2.x).

``gateway.mqtt.MqttLink`` is the store's long-lived link; HQ needs what it does not offer:
the broker's acknowledgement of each publish (PUBACK, as a future), MQTT 5 request/response
properties on both sides, SUBACK/UNSUBACK waits, and manual acknowledgement of what it
receives, so that a message is acknowledged only once its effect is committed (an event not
yet in HQ's LMDB is redelivered, never lost). One ``MqttSession`` is one connection: it does
not reconnect; ``serve`` makes a new one after a loss, with backoff.

paho is driven as ``MqttLink`` drives it: its socket is registered with the event loop; the
blocking TCP connect runs in the default executor, bounded by ``connect_timeout``, and its
callbacks cross back with ``call_soon_threadsafe``. Every other callback runs on the loop.

Received messages go to ``inbox`` (bounded, ``inbox_size``). When it is full a message is
dropped and counted (``dropped``); a QoS 1 message dropped so is never acknowledged, and the
broker redelivers it with the session. With manual acknowledgement the broker never has more
than its in-flight window outstanding, so the inbox does not fill in practice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import LinkError
from gateway.mqtt.driver import LoopDriver

__all__ = ["AckWindow", "Delivery", "MqttSession"]

log = logging.getLogger(__name__)

_MISC_INTERVAL_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message the broker delivered; acknowledge it with :meth:`MqttSession.ack`."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    response_topic: str | None
    correlation_data: bytes | None


class MqttSession:
    """Owns one paho client for one connection. ``connect()`` does the I/O."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        clean_start: bool = True,
        session_expiry: int = 0,
        keepalive: int = 30,
        connect_timeout: float = 5.0,
        inbox_size: int = 1024,
        manual_ack: bool = False,
        max_inflight: int = 100,
    ) -> None:
        self._host = host
        self._port = port
        self._client_id = client_id
        self._clean_start = clean_start
        self._session_expiry = session_expiry
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._manual_ack = manual_ack
        self._max_inflight = max_inflight
        self.inbox: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=inbox_size)
        self.dropped = 0
        self.last_error = ""
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._driver = LoopDriver()
        self._connack: asyncio.Future[None] | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._requests: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._up = False
        self._lost = asyncio.Event()
        self._misc: asyncio.Task[None] | None = None

    @property
    def is_up(self) -> bool:
        return self._up

    @property
    def broker(self) -> str:
        return f"{self._host}:{self._port}"

    async def wait_lost(self) -> None:
        await self._lost.wait()

    # ----- connect and close -----

    async def connect(self) -> None:
        """Open the connection; ``LinkError`` when the broker is unreachable or refuses."""
        self._loop = asyncio.get_running_loop()
        client = self._client = self._make_client()
        self._connack = self._loop.create_future()
        self._connack.add_done_callback(_retrieve)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry

        def blocking_connect() -> MQTTErrorCode:
            return client.connect(
                self._host,
                self._port,
                keepalive=self._keepalive,
                clean_start=self._clean_start,
                properties=props,
            )

        try:
            rc = await self._loop.run_in_executor(None, blocking_connect)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise LinkError(f"{self.broker}: {paho.error_string(rc)}")
            async with asyncio.timeout(self._connect_timeout):
                await self._connack
        except (OSError, TimeoutError) as exc:
            self._teardown()
            raise LinkError(f"cannot reach the broker at {self.broker}: {_describe(exc)}") from exc
        except LinkError:
            self._teardown()
            raise
        self._up = True
        self._misc = asyncio.create_task(self._misc_loop(), name="hq-mqtt-misc")

    async def aclose(self, *, end_session: bool = False, wait_s: float = 5.0) -> None:
        """Disconnect (ending the broker's session when ``end_session``) and forget the socket.
        Publishes still awaiting their PUBACK fail with ``LinkError``."""
        client = self._client
        if client is not None and self._up:
            props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            if end_session and self._session_expiry:
                props.SessionExpiryInterval = 0
            client.disconnect(properties=props)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._lost.wait()
        if self._misc is not None:
            self._misc.cancel()
            await asyncio.gather(self._misc, return_exceptions=True)
            self._misc = None
        self._teardown()

    # ----- requests -----

    async def subscribe(self, topics: Sequence[tuple[str, int]], *, wait_s: float) -> None:
        """Subscribe and wait for the SUBACK; ``LinkError`` if any topic is refused."""
        codes = await self._request(lambda c: c.subscribe(list(topics)), wait_s, "subscribe")
        refused = [
            f"{t}: {code}" for (t, _q), code in zip(topics, codes, strict=False) if code.is_failure
        ]
        if refused:
            raise LinkError(f"the broker refused subscriptions: {'; '.join(refused)}")

    async def unsubscribe(self, topics: Sequence[str], *, wait_s: float) -> None:
        await self._request(lambda c: c.unsubscribe(list(topics)), wait_s, "unsubscribe")

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> asyncio.Future[None]:
        """Queue a message; the future settles on the broker's PUBACK (on the write at QoS 0)
        and fails with ``LinkError`` on a refusal or when the connection goes."""
        client = self._live()
        assert self._loop is not None
        props: Properties | None = None
        if correlation_data is not None or response_topic is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation_data is not None:
                props.CorrelationData = correlation_data
        info = client.publish(topic, payload, qos=qos, properties=props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise LinkError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        future: asyncio.Future[None] = self._loop.create_future()
        future.add_done_callback(_retrieve)
        if info.is_published():
            future.set_result(None)
        else:
            self._pending[info.mid] = future
        return future

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge a delivery (with ``manual_ack``); a no-op once the connection is gone."""
        if self._client is not None and self._up and self._manual_ack and delivery.qos > 0:
            self._client.ack(delivery.mid, delivery.qos)

    async def _request(
        self,
        send: Callable[[paho.Client], tuple[MQTTErrorCode, int | None]],
        wait_s: float,
        what: str,
    ) -> list[ReasonCode]:
        client = self._live()
        assert self._loop is not None
        rc, mid = send(client)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise LinkError(f"{what} failed: {paho.error_string(rc)}")
        future: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
        future.add_done_callback(_retrieve)
        self._requests[mid] = future
        try:
            async with asyncio.timeout(wait_s):
                return await future
        except TimeoutError:
            raise LinkError(f"no answer to {what} from {self.broker} in {wait_s} s") from None
        finally:
            self._requests.pop(mid, None)

    def _live(self) -> paho.Client:
        if self._client is None or not self._up:
            raise LinkError(f"not connected to {self.broker}")
        return self._client

    # ----- paho client and its callbacks -----

    def _make_client(self) -> paho.Client:
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
            manual_ack=self._manual_ack,
        )
        client.connect_timeout = self._connect_timeout
        client.max_inflight_messages_set(self._max_inflight)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_suback
        client.on_unsubscribe = self._on_suback
        self._driver.attach(client)
        return client

    def _on_connect(
        self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        def settle() -> None:
            future = self._connack
            if future is None or future.done():
                return
            if reason.is_failure:
                future.set_exception(LinkError(f"the broker refused the session: {reason}"))
            else:
                future.set_result(None)

        self._driver.in_loop(settle)

    def _on_disconnect(
        self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        def settle() -> None:
            self._up = False
            self.last_error = f"disconnected: {reason}"
            error = LinkError(f"{self.last_error} ({self.broker})")
            if self._connack is not None and not self._connack.done():
                self._connack.set_exception(error)
            self._fail_pending(error)
            self._lost.set()

        self._driver.in_loop(settle)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        response = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        delivery = Delivery(
            msg.topic,
            bytes(msg.payload),
            msg.qos,
            msg.mid,
            response if isinstance(response, str) else None,
            bytes(correlation) if isinstance(correlation, bytes | bytearray) else None,
        )
        try:
            self.inbox.put_nowait(delivery)
        except asyncio.QueueFull:
            self.dropped += 1

    def _on_publish(
        self, _c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _p: Properties | None
    ) -> None:
        future = self._pending.pop(mid, None)
        if future is None or future.done():
            return
        if reason.is_failure:
            future.set_exception(LinkError(f"the broker refused a publish: {reason}"))
        else:
            future.set_result(None)

    def _on_suback(
        self, _c: paho.Client, _u: Any, mid: int, codes: list[ReasonCode], _p: Properties | None
    ) -> None:
        future = self._requests.get(mid)
        if future is not None and not future.done():
            future.set_result(list(codes))

    def _fail_pending(self, error: LinkError) -> None:
        pending: list[asyncio.Future[Any]] = [*self._pending.values(), *self._requests.values()]
        self._pending.clear()
        for future in pending:
            if not future.done():
                future.set_exception(error)

    async def _misc_loop(self) -> None:
        while self._client is not None:
            await asyncio.sleep(_MISC_INTERVAL_S)
            self._client.loop_misc()

    def _teardown(self) -> None:
        self._up = False
        self._fail_pending(LinkError(f"connection to {self.broker} closed"))
        self._driver.unwatch()
        client = self._client
        if client is not None:
            sock = client.socket()
            if sock is not None:
                sock.close()
        self._lost.set()


class AckWindow:
    """At most ``size`` publishes awaiting their PUBACK. ``send`` waits for room (back-pressure);
    a wait with no acknowledgement for ``timeout`` seconds fails with ``LinkError``."""

    def __init__(
        self,
        session: MqttSession,
        *,
        size: int,
        timeout: float,
        on_ack: Callable[[int], None] | None = None,
    ) -> None:
        self._session = session
        self._size = size
        self._timeout = timeout
        self._on_ack = on_ack
        self._outstanding: deque[asyncio.Future[None]] = deque()
        self.sent = 0
        self.acked = 0

    async def send(
        self, topic: str, payload: bytes, *, correlation_data: bytes | None = None
    ) -> None:
        while len(self._outstanding) >= self._size:
            await self._settle_oldest()
        future = self._session.publish(topic, payload, qos=1, correlation_data=correlation_data)
        self._outstanding.append(future)
        self.sent += 1

    async def drain(self) -> None:
        while self._outstanding:
            await self._settle_oldest()

    async def _settle_oldest(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(self._outstanding[0])
        except TimeoutError:
            raise LinkError(
                f"no PUBACK from {self._session.broker} in {self._timeout} s "
                f"({self.acked} of {self.sent} acknowledged)"
            ) from None
        self._outstanding.popleft()
        self.acked += 1
        if self._on_ack is not None:
            self._on_ack(self.acked)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
