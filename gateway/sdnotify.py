"""A small sd_notify client: tells systemd that the gateway serves, is alive, or is stopping.

Under a ``Type=notify`` unit systemd hands the service the address of its notification socket in
``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket) and, when ``WatchdogSec=`` is
set, the watchdog period in ``WATCHDOG_USEC`` for the process ``WATCHDOG_PID``. A notification is
one datagram of ``KEY=VALUE`` lines (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=...``).

Outside systemd every method does nothing. Nothing here raises: a notification that cannot be
sent is logged (at most once a minute) and dropped, since the gateway must keep serving whether
or not systemd hears it; a watchdog that stops hearing it restarts the service, which is the
point. The socket is non-blocking, so a slow manager never stalls the event loop.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from gateway.logs import RateLimitedLog

__all__ = ["Notifier"]

_log = logging.getLogger(__name__)


def _address(value: str | None) -> str | None:
    """The socket address named by ``NOTIFY_SOCKET``, or None when it names none we can use."""
    if not value:
        return None
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None  # a relative path or another transport (vsock:...): not ours to guess


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Half the watchdog period in seconds when the watchdog is on for ``pid``, else None."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner is not None and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 2_000_000


class Notifier:
    """Sends service notifications to systemd, read from an environment mapping.

    ``Notifier(os.environ)`` in the gateway; tests pass their own mapping and ``pid``.
    """

    __slots__ = ("_address", "_log", "_watchdog_interval_s")

    def __init__(self, environ: Mapping[str, str], *, pid: int | None = None) -> None:
        self._address = _address(environ.get("NOTIFY_SOCKET"))
        self._watchdog_interval_s = (
            _watchdog_interval(environ, os.getpid() if pid is None else pid)
            if self._address is not None
            else None
        )
        self._log = RateLimitedLog(_log, interval=60.0)

    @property
    def enabled(self) -> bool:
        """Whether systemd asked for notifications (``NOTIFY_SOCKET`` is set and usable)."""
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to call :meth:`watchdog`: half the unit's ``WatchdogSec=``, or None when no
        watchdog watches this process."""
        return self._watchdog_interval_s

    def ready(self) -> None:
        """The gateway serves: a ``Type=notify`` start completes."""
        self._send("READY=1")

    def watchdog(self) -> None:
        """The gateway is alive (a no-op when no watchdog watches this process)."""
        if self._watchdog_interval_s is not None:
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        """The gateway has begun to shut down."""
        self._send("STOPPING=1")

    def status(self, text: str) -> None:
        """A one-line status that ``systemctl status`` shows."""
        self._send("STATUS=" + " ".join(text.splitlines()))

    def _send(self, message: str) -> None:
        address = self._address
        if address is None:
            return
        data = message.encode("utf-8", errors="replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(data, address)
        except OSError as exc:
            self._log.warning(
                "notify_failed",
                "could not notify systemd",
                socket=address.replace("\0", "@", 1),
                notification=message.partition("=")[0],
                error=f"{type(exc).__name__}: {exc}",
            )
