"""One MQTT 5 link (paho-mqtt 2.x), driven by the asyncio event loop instead of paho's thread.

paho tells us when its socket opens and closes and when it has bytes to write; we register the
socket with the event loop and call ``loop_read``/``loop_write`` when it is ready, and
``loop_misc`` once a second for keepalive. The only blocking call, the TCP connect, runs in
the default executor and is bounded by paho's ``connect_timeout``; the CONNACK wait is bounded
by the same figure. Lost links come back with jittered exponential backoff, forever, until
``aclose()``. Callbacks that fire on the connect thread cross to the loop with
``call_soon_threadsafe``.

Incoming messages land in a bounded queue (``inbox``); when it is full the message is dropped
and counted (``dropped``): sensing data is perishable and the broker must never be
back-pressured by a slow consumer into disconnecting us.

``publish_acked`` returns a future per message that completes when the broker's PUBACK for it
arrives (``inflight`` counts those still waiting). paho's in-memory session is not trusted
across a reconnect (the broker may have restarted without our session): when the link drops,
every waiting future fails with ``LinkDownError`` and paho forgets those messages, so the
caller, who still has them (the outbox), decides what to send again and in which order.
Messages from plain ``publish`` keep paho's own redelivery after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from beacons.backoff import Backoff
from gateway.errors import LinkDownError, LinkError
from gateway.linkstate import LinkEvent, LinkMachine, LinkState
from gateway.mqtt.driver import LoopDriver

__all__ = ["InboundMessage", "MqttLink", "Tls", "Will"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Tls:
    """TLS to the broker: CA bundle (empty: the system's), client certificate and key."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class MqttLink:
    """Owns one paho client and its socket registration. ``run()`` is the supervisor task."""

    def __init__(
        self,
        *,
        name: str,
        host: str,
        port: int,
        client_id: str,
        subscriptions: Sequence[tuple[str, int]],
        keepalive: int = 30,
        connect_timeout: float = 5.0,
        backoff: Backoff | None = None,
        session_expiry: int = 3600,
        username: str = "",
        password: str = "",
        will: Will | None = None,
        birth: Will | None = None,
        tls: Tls | None = None,
        inbox_size: int = 1024,
        on_state: Callable[[LinkState], None] | None = None,
    ) -> None:
        self.name = name
        self._host = host
        self._port = port
        self._client_id = client_id
        self._subscriptions = tuple(subscriptions)
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._backoff = backoff or Backoff(0.5, 30.0)
        self._session_expiry = session_expiry
        self._username = username
        self._password = password
        self._will = will
        self._birth = birth
        self._tls = tls
        self._on_state = on_state
        self.inbox: asyncio.Queue[InboundMessage] = asyncio.Queue(maxsize=inbox_size)
        self.dropped = 0
        self.received = 0
        self.last_error = ""
        self._machine = LinkMachine()
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._driver = LoopDriver()
        self._connack: asyncio.Future[None] | None = None
        self._lost = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        # publish_acked: message id -> the future its PUBACK completes.
        self._acks: dict[int, asyncio.Future[None]] = {}

    # ----- public -----

    @property
    def state(self) -> LinkState:
        return self._machine.state

    @property
    def is_up(self) -> bool:
        return self._machine.state is LinkState.UP

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state.value, "broker": f"{self._host}:{self._port}"}
        if self.last_error and not self.is_up:
            out["detail"] = self.last_error
        out["received"] = self.received
        out["dropped"] = self.dropped
        return out

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Queue a message for the broker. Raises ``LinkDownError`` when the link is down."""
        if self._client is None or not self.is_up:
            raise LinkDownError(f"{self.name} link is {self.state.value}")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise LinkError(f"{self.name} publish to {topic} failed: {paho.error_string(info.rc)}")

    @property
    def inflight(self) -> int:
        """Messages from ``publish_acked`` still waiting for the broker's PUBACK."""
        return len(self._acks)

    def publish_acked(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: int | None = None,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> asyncio.Future[None]:
        """Queue a message; the future completes when the broker acknowledges it.

        QoS 1 completes on the PUBACK (a failure reason code sets ``LinkError``), QoS 0 once
        the bytes are written. The future fails with ``LinkDownError`` if the link drops
        first. Raises ``LinkDownError`` at once when the link is down. The MQTT 5 properties
        Message Expiry Interval, Response Topic and Correlation Data are set when given.
        """
        if qos not in (0, 1):
            raise ValueError(f"publish_acked supports QoS 0 and 1, not {qos}")
        if self._client is None or self._loop is None or not self.is_up or self._lost.is_set():
            state = "lost" if self.is_up else self.state.value
            raise LinkDownError(f"{self.name} link is {state}")
        props: Properties | None = None
        if expiry_s is not None or response_topic is not None or correlation is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if expiry_s is not None:
                props.MessageExpiryInterval = expiry_s
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
        future: asyncio.Future[None] = self._loop.create_future()
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS and info.is_published():
            future.set_result(None)  # QoS 0, already written
        elif info.rc in _QUEUED:
            # Queued in paho (and, for NO_CONN or CONN_LOST, about to be failed and dropped
            # by the loss handling, which runs after this call returns).
            self._acks[info.mid] = future
        else:
            raise LinkError(f"{self.name} publish to {topic} failed: {paho.error_string(info.rc)}")
        return future

    async def run(self) -> None:
        """Connect, stay connected, reconnect with backoff; returns only after ``aclose()``."""
        self._loop = asyncio.get_running_loop()
        try:
            while not self._closing and self._client is None:
                try:
                    self._client = self._make_client()
                except LinkError as exc:  # e.g. a certificate not provisioned yet
                    self.last_error = str(exc)
                    self._fire(LinkEvent.START if self.state is LinkState.IDLE else LinkEvent.RETRY)
                    self._fire(LinkEvent.FAILED)
                    log.error(
                        "broker link cannot be set up", extra={"link": self.name, "error": str(exc)}
                    )
                    await self._sleep_backoff()
            while not self._closing:
                await self._session()
        finally:
            self._teardown()

    async def aclose(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._closed.set()
        self._lost.set()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(LinkError("closing"))

    # ----- one connection's life -----

    async def _session(self) -> None:
        assert self._loop is not None
        assert self._client is not None
        self._fire(LinkEvent.START if self.state is LinkState.IDLE else LinkEvent.RETRY)
        self._lost = asyncio.Event()
        self._connack = self._loop.create_future()
        # Settled from callbacks and from aclose(), possibly when nobody awaits it any more.
        self._connack.add_done_callback(_retrieve)
        try:
            await self._connect()
        except (OSError, LinkError, TimeoutError) as exc:
            if self._closing:
                return
            self.last_error = _describe(exc)
            self._fire(LinkEvent.FAILED)
            log.warning(
                "broker connect failed", extra={"link": self.name, "error": self.last_error}
            )
            await self._sleep_backoff()
            return
        self._backoff.reset()
        self.last_error = ""
        self._fire(LinkEvent.CONNECTED)
        log.info(
            "broker link up", extra={"link": self.name, "broker": f"{self._host}:{self._port}"}
        )
        for topic, qos in self._subscriptions:
            self._client.subscribe(topic, qos=qos)
        if self._birth is not None:
            b = self._birth
            self._client.publish(b.topic, b.payload, qos=b.qos, retain=b.retain)
        misc = asyncio.create_task(self._misc_loop(), name=f"{self.name}-mqtt-misc")
        try:
            await self._lost.wait()
        finally:
            misc.cancel()
            await asyncio.gather(misc, return_exceptions=True)
        self._abandon_acks()
        if self._closing:
            return
        self._fire(LinkEvent.LOST)
        log.warning("broker link lost", extra={"link": self.name, "error": self.last_error})
        await self._sleep_backoff()

    async def _connect(self) -> None:
        assert self._loop is not None
        assert self._client is not None
        assert self._connack is not None
        client = self._client
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry

        def blocking_connect() -> MQTTErrorCode:
            return client.connect(
                self._host,
                self._port,
                keepalive=self._keepalive,
                clean_start=False,
                properties=props,
            )

        # The executor call is bounded by paho's connect_timeout; it is always awaited to the
        # end so that two connects never run inside paho at once.
        rc = await self._loop.run_in_executor(None, blocking_connect)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise LinkError(f"connect: {paho.error_string(rc)}")
        async with asyncio.timeout(self._connect_timeout):
            await self._connack

    async def _misc_loop(self) -> None:
        assert self._client is not None
        while True:
            await asyncio.sleep(1.0)
            self._client.loop_misc()

    async def _sleep_backoff(self) -> None:
        """Wait the next backoff delay, or less if the link is closed meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._backoff.next()):
                await self._closed.wait()

    def _abandon_acks(self) -> None:
        """Fail every waiting ``publish_acked`` future and make paho forget those messages;
        messages from plain ``publish`` are queued again for paho's redelivery."""
        if not self._acks or self._client is None:
            return
        ours, self._acks = self._acks, {}
        client = self._client
        for message in client.drop_out_messages():
            if message.mid not in ours:
                client.publish(
                    message.topic,
                    message.payload,
                    qos=message.qos,
                    retain=message.retain,
                    properties=message.properties,
                )
        error = LinkDownError(f"{self.name} link dropped before the broker acknowledged")
        for future in ours.values():
            if not future.done():
                future.set_exception(error)
        log.info(
            "unacknowledged publishes abandoned", extra={"link": self.name, "count": len(ours)}
        )

    def _teardown(self) -> None:
        client = self._client
        if client is not None:
            if self.is_up:
                client.disconnect()
                client.loop_write()
            # paho closes its socket on disconnect; make sure the loop forgets it either way.
            self._driver.unwatch()
            sock = client.socket()
            if sock is not None:
                sock.close()
            self._abandon_acks()
        if self.state is not LinkState.CLOSED:
            self._fire(LinkEvent.CLOSE)

    def _fire(self, event: LinkEvent) -> None:
        state = self._machine.fire(event)
        if self._on_state is not None:
            self._on_state(state)

    # ----- paho client and its callbacks -----

    def _make_client(self) -> paho.Client:
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )
        client.connect_timeout = self._connect_timeout
        if self._tls is not None:
            try:
                client.tls_set(
                    ca_certs=self._tls.ca_file or None,
                    certfile=self._tls.cert_file or None,
                    keyfile=self._tls.key_file or None,
                )
            except (OSError, ValueError) as exc:
                raise LinkError(f"{self.name} TLS set-up failed: {exc}") from exc
        if self._username:
            client.username_pw_set(self._username, self._password or None)
        if self._will is not None:
            w = self._will
            client.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
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
                future.set_exception(LinkError(f"broker refused the session: {reason}"))
            else:
                future.set_result(None)

        self._driver.in_loop(settle)

    def _on_disconnect(
        self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        def settle() -> None:
            self.last_error = f"disconnected: {reason}"
            future = self._connack
            if future is not None and not future.done():
                future.set_exception(LinkError(self.last_error))
            self._lost.set()

        self._driver.in_loop(settle)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self.received += 1
        try:
            self.inbox.put_nowait(
                InboundMessage(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain))
            )
        except asyncio.QueueFull:
            self.dropped += 1

    def _on_publish(
        self, _c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _p: Properties
    ) -> None:
        def settle() -> None:
            future = self._acks.pop(mid, None)
            if future is None or future.done():
                return
            if reason.is_failure:
                future.set_exception(LinkError(f"{self.name} broker refused a publish: {reason}"))
            else:
                future.set_result(None)

        self._driver.in_loop(settle)


# paho return codes with which the message stays queued in paho's session.
_QUEUED = frozenset(
    {
        MQTTErrorCode.MQTT_ERR_SUCCESS,
        MQTTErrorCode.MQTT_ERR_NO_CONN,
        MQTTErrorCode.MQTT_ERR_CONN_LOST,
    }
)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the broker"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
