"""A stop signal ends the reader's wait at once.

The agent's SIGINT/SIGTERM handler only sets a flag, and an interrupted
epoll_wait does not return for it: Python retries it after the handler
(PEP 475), and a signal another thread takes interrupts no wait at all. So
the loop would see the flag only when its wait times out. A wake-up fd
(signal.set_wakeup_fd: the C-level handler writes the signal number to it,
in whichever thread the signal lands) in the wait's epoll set ends the wait
instead; the wait empties it when it fires, so it never spins.
"""
from __future__ import annotations

import os
import select
import signal
import socket


class SignalWakeup:
    """The read end of the signals' wake-up fd, installed until close();
    made in the main thread (signal.set_wakeup_fd's rule), before the
    privilege drop (it opens nothing afterwards)."""

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        try:
            self._read.setblocking(False)
            self._write.setblocking(False)
            # A full buffer only means a wake-up is already pending.
            self._previous = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        except BaseException:
            self._read.close()
            self._write.close()
            raise
        self._closed = False

    def fileno(self) -> int:
        return self._read.fileno()

    def drain(self) -> None:
        """Reads the signal numbers written so far (the handlers act on the signals)."""
        try:
            while self._read.recv(256):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Uninstalls it (a later signal still runs its handler), then closes both ends."""
        if self._closed:
            return
        self._closed = True
        signal.set_wakeup_fd(self._previous)
        self.drain()
        self._read.close()
        self._write.close()


class RingWait:
    """A wait for a ring buffer map's fd to be readable (records queued)
    or for a non-blocking eventfd (notify_fd, unless -1) to be added to
    (records moved out of the ring by another thread); a SignalWakeup ends
    it too once wake_on() added it."""

    def __init__(self, fd: int, notify_fd: int = -1) -> None:
        self._epoll = select.epoll()
        try:
            self._epoll.register(fd, select.EPOLLIN)
            if notify_fd >= 0:
                self._epoll.register(notify_fd, select.EPOLLIN)
        except BaseException:
            self._epoll.close()
            raise
        self._notify_fd = notify_fd
        self._wakeup: SignalWakeup | None = None
        self._wake_fd = -1

    def wake_on(self, wakeup: SignalWakeup) -> None:
        self._epoll.register(wakeup.fileno(), select.EPOLLIN)
        self._wakeup = wakeup
        self._wake_fd = wakeup.fileno()

    def wait(self, timeout_s: float) -> bool:
        """Block until the ring has data, a signal came, or ``timeout_s``
        passes; True if the ring has data. Level-triggered: returns at once
        while unconsumed data is queued."""
        ready = self._epoll.poll(timeout_s)
        data = False
        for fd, _ in ready:
            if fd == self._wake_fd:
                self._wakeup.drain()  # type: ignore[union-attr]  # set together with _wake_fd
            else:
                if fd == self._notify_fd:
                    os.eventfd_read(fd)  # readable again only once added to again
                data = True
        return data

    def fileno(self) -> int:
        """The epoll fd: readable when wait() would return at once."""
        return self._epoll.fileno()

    def close(self) -> None:
        self._epoll.close()
