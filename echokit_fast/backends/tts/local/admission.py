"""Who may use the embedded TTS engine's streams: devices first, the HTTP API within its share.

An engine speaks at most ``streams`` requests at once, for two classes of clients:

* ``"api"`` (the HTTP API, ``echokit_fast.api.tts``): at most ``streams - reserve`` streams at
  once, never queued. A request past that share, or while every stream is taken or a device is
  waiting, is refused at once (:class:`~echokit_fast.backends.base.BackendBusy`).
* ``"device"`` (the device pipeline, the default): any free stream, the ``reserve`` ones
  included. When none is free the request waits, first come first served, up to ``queue_s``
  seconds for one, then is refused.

A stream freed while devices wait goes to the first of them. The state is guarded by a thread
lock and a waiter is woken on its own loop, so one engine may serve several event loops.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from echokit_fast.backends.base import BackendBusy

__all__ = ["BUSY_NOTICE", "Admission", "Client"]

log = logging.getLogger(__name__)

Client = Literal["device", "api"]

BUSY_NOTICE = "The speech synthesizer is busy. Please try again."


class _Waiter:
    __slots__ = ("future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.granted = False  # a freed stream was handed to it


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Admission:
    """The stream slots of one engine (see the module docstring). ``backend`` names the engine
    in errors (``tts:hibari``)."""

    def __init__(self, streams: int, reserve: int, queue_s: float, *, backend: str) -> None:
        if streams < 1:
            raise ValueError(f"streams must be at least 1, got {streams}")
        if not 0 <= reserve <= streams:
            raise ValueError(f"reserve must be between 0 and streams ({streams}), got {reserve}")
        if queue_s < 0:
            raise ValueError(f"queue_s must be >= 0, got {queue_s}")
        self.streams = streams
        self.reserve = reserve
        self.queue_s = queue_s
        self.backend = backend
        self._lock = threading.Lock()
        self._active = 0  # streams held, by either class
        self._api = 0  # of them, held by the HTTP API
        self._waiters: deque[_Waiter] = deque()

    @property
    def active(self) -> int:
        """Streams held now."""
        return self._active

    @property
    def waiting(self) -> int:
        """Device requests waiting for a stream."""
        return len(self._waiters)

    @asynccontextmanager
    async def slot(self, client: Client = "device") -> AsyncIterator[None]:
        """Hold one stream for the body of the ``async with``; BackendBusy when refused."""
        if client == "api":
            self._take_api()
        else:
            await self._take_device()
        try:
            yield
        finally:
            self._release(client)

    def _busy(self, detail: str) -> BackendBusy:
        return BackendBusy(f"{self.backend}: {detail}", notice=BUSY_NOTICE, backend=self.backend)

    def _take_api(self) -> None:
        share = self.streams - self.reserve
        with self._lock:
            if self._api < share and self._active < self.streams and not self._waiters:
                self._api += 1
                self._active += 1
                return
            held = self._api
        raise self._busy(
            f"the HTTP API holds {held} of its {share} streams "
            f"({self.reserve} of {self.streams} are kept for devices)"
        )

    async def _take_device(self) -> None:
        with self._lock:
            if self._active < self.streams and not self._waiters:
                self._active += 1
                return
            if self.queue_s <= 0:
                raise self._busy(f"all {self.streams} streams are in use")
            waiter = _Waiter(asyncio.get_running_loop())
            self._waiters.append(waiter)
            queued = len(self._waiters)
        log.debug("%s: a device request waits for a stream (%d waiting)", self.backend, queued)
        try:
            await asyncio.wait_for(waiter.future, self.queue_s)
        except TimeoutError:
            with self._lock:
                if not waiter.granted:
                    self._waiters.remove(waiter)
                    raise self._busy(
                        f"all {self.streams} streams stayed in use for {self.queue_s:g} s "
                        "(limits.tts_queue_s)"
                    ) from None
            # a stream was handed over as the wait ran out: admitted
        except BaseException:  # cancelled while waiting
            with self._lock:
                granted = waiter.granted
                if not granted:
                    self._waiters.remove(waiter)
            if granted:
                self._release("device")
            raise

    def _release(self, client: Client) -> None:
        with self._lock:
            if client == "api":
                self._api -= 1
            if self._waiters:  # the stream passes to the first waiting device
                waiter = self._waiters.popleft()
                waiter.granted = True
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
            else:
                self._active -= 1
