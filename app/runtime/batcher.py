"""Dynamic batching: concurrent requests for one model are gathered into one ONNX Runtime call.

A batch closes when it holds `max_batch` images or when its first request has waited `max_delay_s`, so no
request waits on its neighbours longer than that. One model call runs at a time per model, off the event loop
(LoadedModel.call); while it runs, the next batch gathers. If a batched call fails, each request is retried alone,
so one bad request never fails its neighbours; unless the model itself was unavailable (its process was lost): then
the whole batch fails at once, with an error the clients may retry, instead of waiting in turn for a new process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from app.errors import ModelUnavailable

log = logging.getLogger(__name__)

Images = npt.NDArray[np.float32]
Outputs = dict[str, npt.NDArray[np.float32]]
Call = Callable[[Images, Sequence[str]], Awaitable[Outputs]]
Observer = Callable[[int, float], None]  # (batch size in images, seconds the oldest request queued)


@dataclass
class _Pending:
    images: Images
    outputs: tuple[str, ...]
    future: asyncio.Future[Outputs]
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, call: Call, *, max_batch: int, max_delay_s: float, observe: Observer | None = None) -> None:
        # No defaults: the service's come from its settings (MNIST_MAX_BATCH_SIZE, MNIST_BATCH_DELAY_MS).
        self._call = call
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self._observe = observe
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def infer(self, images: Images, outputs: Sequence[str]) -> Outputs:
        """The outputs for these images, computed in a batch with whatever else is waiting."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._serve(self._queue))
        pending = _Pending(images, tuple(outputs), asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        return await pending.future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker, self._queue = None, None

    async def _serve(self, queue: asyncio.Queue[_Pending]) -> None:
        carried: _Pending | None = None
        while True:
            first = carried or await queue.get()
            batch, carried = await self._gather(queue, first)
            try:
                await self._run_batch(batch)
            except Exception as exc:  # never let the worker die: its callers would wait forever
                log.exception("batch of %d requests failed", len(batch))
                for pending in batch:
                    _settle(pending, error=exc)

    async def _gather(self, queue: asyncio.Queue[_Pending], first: _Pending) -> tuple[list[_Pending], _Pending | None]:
        """Requests with the same outputs as `first`, until the batch is full or its delay has passed."""
        batch, size = [first], len(first.images)
        deadline = first.queued_at + self.max_delay_s
        while size < self.max_batch:
            if not queue.empty():
                item = queue.get_nowait()
            else:
                # With no time left, close the batch without awaiting: even a zero timeout would let every ready
                # task run first, and the model would wait for the event loop to answer the previous batch.
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            if item.outputs != first.outputs or size + len(item.images) > self.max_batch:
                return batch, item  # it starts the next batch
            batch.append(item)
            size += len(item.images)
        return batch, None

    async def _run_batch(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.done()]  # a client that went away has cancelled its future
        if not live:
            return
        if self._observe:
            self._observe(sum(len(p.images) for p in live), time.perf_counter() - live[0].queued_at)
        images = live[0].images if len(live) == 1 else np.concatenate([p.images for p in live])
        try:
            outputs = await self._call(images, live[0].outputs)
        except Exception as exc:
            if len(live) == 1 or isinstance(exc, ModelUnavailable):
                for pending in live:
                    _settle(pending, error=exc)
                return
            for pending in live:  # alone, so that only the faulty request fails
                await self._run_batch([pending])
            return
        start = 0
        for pending in live:
            end = start + len(pending.images)
            _settle(pending, result={name: value[start:end] for name, value in outputs.items()})
            start = end


def _settle(pending: _Pending, *, result: Outputs | None = None, error: BaseException | None = None) -> None:
    if pending.future.done():
        return
    if error is not None:
        pending.future.set_exception(error)
    else:
        pending.future.set_result(result or {})
