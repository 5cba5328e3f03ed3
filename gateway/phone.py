"""Offers waiting for a shopper's phone (sans-I/O, on the event loop).

The store has no push service of its own: the app collects what waits for it
(``GET /v1/me/messages``). Each shopper's queue is bounded (the oldest goes when it is full)
and :meth:`PhoneQueue.cancel` empties it at once, which a withdrawal of ``phone_messages`` or
``personalization``, a "no marketing" objection or an erasure does before its HTTP answer.
Nothing here is persisted: a message not collected before a restart was never sent, which is
the safe side for a shopper who may have changed their mind meanwhile.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Generic, TypeVar

__all__ = ["PhoneQueue"]

T = TypeVar("T")


class PhoneQueue(Generic[T]):
    def __init__(self, *, per_shopper: int = 10, max_shoppers: int = 10_000) -> None:
        if per_shopper < 1 or max_shoppers < 1:
            raise ValueError("queue bounds must be at least 1")
        self._per_shopper = per_shopper
        self._max_shoppers = max_shoppers
        self._queues: OrderedDict[str, deque[T]] = OrderedDict()
        self.dropped = 0
        self.cancelled = 0

    def push(self, shopper_id: str, message: T) -> None:
        queue = self._queues.get(shopper_id)
        if queue is None:
            if len(self._queues) >= self._max_shoppers:
                _, oldest = self._queues.popitem(last=False)
                self.dropped += len(oldest)
            queue = self._queues[shopper_id] = deque(maxlen=self._per_shopper)
        elif len(queue) == self._per_shopper:
            self.dropped += 1
        queue.append(message)
        self._queues.move_to_end(shopper_id)

    def take(self, shopper_id: str) -> list[T]:
        """Everything waiting for the shopper, oldest first; the queue is then empty."""
        queue = self._queues.pop(shopper_id, None)
        return list(queue) if queue is not None else []

    def peek(self, shopper_id: str) -> list[T]:
        return list(self._queues.get(shopper_id, ()))

    def cancel(self, shopper_id: str) -> int:
        """Drop what waits for the shopper; returns how many were cancelled."""
        queue = self._queues.pop(shopper_id, None)
        n = len(queue) if queue is not None else 0
        self.cancelled += n
        return n

    def shoppers(self) -> Iterable[str]:
        return tuple(self._queues)

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())
