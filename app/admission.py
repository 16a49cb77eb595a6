"""Admission by work, not by request count: per worker, budgets of request-body bytes and of decoded pixels in
flight, and a few threads to decode with.

A request's cost is known before the work: its body from Content-Length before the body is read (app.middleware),
its pixels from the image header before any pixel is decoded (app.preprocess.decoded_pixels). A burst of large
uploads waits in line here, in the event loop, holding little: uvicorn stops reading a body nobody reads. Waiters
are served first come, first served; one that cannot start within `wait_s` gets 503 `overloaded`.
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

# Bodies this small are not counted against the body budget: a thousand of them take 64 MB, and a digit's PNG must
# not wait in line behind large uploads.
SMALL_BODY = 64 * 1024


@dataclass
class _Waiter:
    amount: int
    granted: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Budget:
    """At most `capacity` units of work in flight; a request beyond it waits up to `wait_s`, then is refused.

    `what` and `setting` name the units and the setting that sizes them, for the 503's message.
    """

    def __init__(self, capacity: int, wait_s: float, what: str, setting: str) -> None:
        self.capacity = capacity
        self.wait_s = wait_s
        self.in_use = 0
        self._waiting: deque[_Waiter] = deque()
        self._refusal = f"The service is busy with as many {what} as it may hold ({capacity:,}, {setting}); try again."

    @asynccontextmanager
    async def hold(self, amount: int) -> AsyncIterator[None]:
        """Room for `amount` while the block runs; Overloaded when none comes in time."""
        held = await self.acquire(amount)
        try:
            yield
        finally:
            self.release(held)

    async def acquire(self, amount: int) -> int:
        """Waits for room for `amount` and takes it; returns what it took, for `release`. Overloaded after wait_s."""
        amount = min(amount, self.capacity)  # one request larger than the whole budget still runs, alone
        if not self._waiting and self.in_use + amount <= self.capacity:
            self.in_use += amount
            return amount
        waiter = _Waiter(amount)
        self._waiting.append(waiter)
        try:
            async with asyncio.timeout(self.wait_s):
                await waiter.granted
        except BaseException as exc:  # timed out, or the request itself was cancelled
            if waiter.granted.done() and not waiter.granted.cancelled():
                self.release(amount)  # granted just as it gave up
            else:
                with suppress(ValueError):  # already dropped by _grant_waiting as cancelled
                    self._waiting.remove(waiter)
                self._grant_waiting()  # a large waiter leaving the head of the line may let smaller ones in
            if isinstance(exc, TimeoutError):
                raise Overloaded(self._refusal) from None
            raise
        return amount

    def release(self, amount: int) -> None:
        self.in_use -= amount
        self._grant_waiting()

    def _grant_waiting(self) -> None:
        while self._waiting:
            waiter = self._waiting[0]
            if waiter.granted.cancelled():  # timed out, its task not yet resumed to leave the line itself
                self._waiting.popleft()
                continue
            if self.in_use + waiter.amount > self.capacity:
                return
            self._waiting.popleft()
            self.in_use += waiter.amount
            waiter.granted.set_result(None)


class DecodePool:
    """Large images decoded off the event loop by `threads` threads, within a budget of decoded pixels.

    As many threads as cores: more decode no faster, hold more pictures at once, and take the GIL from the event
    loop in turn (with anyio's 40 threads, a small /predict during a burst of 64 large JPEGs waited ~95 ms at the
    median; measured in benchmarks/burst.py).
    """

    def __init__(self, budget: Budget, threads: int) -> None:
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
