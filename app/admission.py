"""Admission by work, not by request count: a budget of decoded pixels in flight per worker, and a few threads.

A request's cost is known from the image header before any pixel is decoded (app.preprocess.decoded_pixels), so a
burst of large images waits here, in the event loop, instead of holding a decoded picture each in a thread.
Waiters are served first come, first served; one that cannot start within `wait_s` gets 503 `overloaded`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import TypeVar

from app.errors import Overloaded
from app.memory import release_free_memory

T = TypeVar("T")


@dataclass
class _Waiter:
    pixels: int
    granted: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class PixelBudget:
    """At most `capacity` decoded pixels in flight; a request beyond it waits up to `wait_s`, then is refused."""

    def __init__(self, capacity: int, wait_s: float) -> None:
        self.capacity = capacity
        self.wait_s = wait_s
        self.in_use = 0
        self._waiting: deque[_Waiter] = deque()

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """Room for `pixels` while the block runs; Overloaded when none comes in time."""
        pixels = min(pixels, self.capacity)  # one image larger than the whole budget still runs, alone
        await self._acquire(pixels)
        try:
            yield
        finally:
            self._release(pixels)

    async def _acquire(self, pixels: int) -> None:
        if not self._waiting and self.in_use + pixels <= self.capacity:
            self.in_use += pixels
            return
        waiter = _Waiter(pixels)
        self._waiting.append(waiter)
        try:
            async with asyncio.timeout(self.wait_s):
                await waiter.granted
        except BaseException as exc:  # timed out, or the request itself was cancelled
            if waiter.granted.done() and not waiter.granted.cancelled():
                self._release(pixels)  # granted just as it gave up
            else:
                with suppress(ValueError):  # already dropped by _grant_waiting as cancelled
                    self._waiting.remove(waiter)
                self._grant_waiting()  # a large waiter leaving the head of the line may let smaller ones in
            if isinstance(exc, TimeoutError):
                raise Overloaded(
                    f"The service is decoding as many pixels as it may ({self.capacity:,}, MNIST_DECODE_BUDGET_PIXELS);"
                    " try again shortly."
                ) from None
            raise

    def _release(self, pixels: int) -> None:
        self.in_use -= pixels
        self._grant_waiting()

    def _grant_waiting(self) -> None:
        while self._waiting:
            waiter = self._waiting[0]
            if waiter.granted.cancelled():  # timed out, its task not yet resumed to leave the line itself
                self._waiting.popleft()
                continue
            if self.in_use + waiter.pixels > self.capacity:
                return
            self._waiting.popleft()
            self.in_use += waiter.pixels
            waiter.granted.set_result(None)


class DecodePool:
    """Large images decoded off the event loop by `threads` threads, within a PixelBudget.

    As many threads as cores: more decode no faster, hold more pictures at once, and take the GIL from the event
    loop in turn (with anyio's 40 threads, a small /predict during a burst of 64 large JPEGs waited ~95 ms at the
    median; measured in benchmarks/burst.py).
    """

    def __init__(self, budget: PixelBudget, threads: int) -> None:
        self.budget = budget
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="decode")

    async def run(self, pixels: int, function: Callable[..., T], *args: object) -> T:
        """function(*args) in a decoding thread, once the budget has room for `pixels`."""
        async with self.budget.hold(pixels):
            result = await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        if self.budget.in_use == 0:
            release_free_memory()  # the burst is over: hand its memory back
        return result

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
