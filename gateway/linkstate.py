"""The state machine of a network link (the store broker now, the HQ link later), as a table.

Rules:
- a link starts ``idle`` and ends ``closed``; ``closed`` is final;
- it is ``connecting`` while a TCP connect and the MQTT handshake are under way;
- ``up`` only after the broker acknowledged the session (CONNACK with success);
- any failure or loss goes to ``backoff``, which waits a jittered delay and tries again;
- ``close`` is legal from every state but ``closed``.

An event not in the table for the current state is a bug and raises ``IllegalTransition``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["IllegalTransition", "LinkEvent", "LinkMachine", "LinkState"]


class LinkState(StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    UP = "up"
    BACKOFF = "backoff"
    CLOSED = "closed"


class LinkEvent(StrEnum):
    START = "start"
    CONNECTED = "connected"
    FAILED = "failed"
    LOST = "lost"
    RETRY = "retry"
    CLOSE = "close"


S, E = LinkState, LinkEvent
TRANSITIONS: Final[dict[tuple[LinkState, LinkEvent], LinkState]] = {
    (S.IDLE, E.START): S.CONNECTING,
    (S.CONNECTING, E.CONNECTED): S.UP,
    (S.CONNECTING, E.FAILED): S.BACKOFF,
    (S.UP, E.LOST): S.BACKOFF,
    (S.BACKOFF, E.RETRY): S.CONNECTING,
    (S.IDLE, E.CLOSE): S.CLOSED,
    (S.CONNECTING, E.CLOSE): S.CLOSED,
    (S.UP, E.CLOSE): S.CLOSED,
    (S.BACKOFF, E.CLOSE): S.CLOSED,
}


class IllegalTransition(RuntimeError):
    def __init__(self, state: LinkState, event: LinkEvent) -> None:
        super().__init__(f"event {event.value!r} is not allowed in state {state.value!r}")


class LinkMachine:
    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = LinkState.IDLE

    def fire(self, event: LinkEvent) -> LinkState:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise IllegalTransition(self.state, event) from None
        return self.state
