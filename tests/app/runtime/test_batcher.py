from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence

import anyio.to_thread
import numpy as np
import pytest

from app.runtime.batcher import Batcher


class Recorder:
    """A model function that doubles its input and records the batch sizes it was called with."""

    def __init__(self, delay_s: float = 0.0, poison: float | None = None) -> None:
        self.sizes: list[int] = []
        self.delay_s = delay_s
        self.poison = poison
        self.lock = threading.Lock()

    async def __call__(self, images: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """The model call as LoadedModel.call makes it: awaited, the work in another thread."""
        return await anyio.to_thread.run_sync(self.run, images, outputs)

    def run(self, images: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        with self.lock:
            self.sizes.append(len(images))
        if self.poison is not None and np.any(images == self.poison):
            raise ValueError("poisoned input")
        time.sleep(self.delay_s)
        return dict.fromkeys(outputs, images * 2)


def images(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, 28, 28, 1), value, dtype=np.float32)


async def run_all(batcher: Batcher, values: list[float], outputs: Sequence[str] = ("probabilities",)) -> list:
    results = await asyncio.gather(*(batcher.infer(images(v), outputs) for v in values), return_exceptions=True)
    await batcher.close()
    return results


def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    model = Recorder(delay_s=0.01)
    batcher = Batcher(model, max_batch=64, max_delay_s=0.05)
    results = asyncio.run(run_all(batcher, [float(i) for i in range(20)]))
    assert model.sizes == [20]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["probabilities"], images(2.0 * i))


def test_batches_never_exceed_the_maximum() -> None:
    model = Recorder(delay_s=0.005)
    batcher = Batcher(model, max_batch=8, max_delay_s=0.05)
    asyncio.run(run_all(batcher, [1.0] * 30))
    assert max(model.sizes) <= 8
    assert sum(model.sizes) == 30


def test_a_lone_request_waits_no_longer_than_the_delay() -> None:
    batcher = Batcher(Recorder(), max_batch=64, max_delay_s=0.02)

    async def one() -> float:
        start = time.perf_counter()
        await batcher.infer(images(1.0), ["probabilities"])
        await batcher.close()
        return time.perf_counter() - start

    assert asyncio.run(one()) < 1.0  # generous: the point is it does not wait for a full batch


def test_requests_for_different_outputs_are_not_mixed() -> None:
    model = Recorder()
    batcher = Batcher(model, max_batch=64, max_delay_s=0.05)

    async def mixed() -> list:
        calls = [batcher.infer(images(1.0), ["probabilities"]), batcher.infer(images(2.0), ["conv1"])]
        results = await asyncio.gather(*calls)
        await batcher.close()
        return results

    first, second = asyncio.run(mixed())
    assert list(first) == ["probabilities"]
    assert list(second) == ["conv1"]
    assert sorted(model.sizes) == [1, 1]


def test_a_failing_request_does_not_fail_its_neighbours() -> None:
    model = Recorder(poison=-1.0)
    batcher = Batcher(model, max_batch=64, max_delay_s=0.05)
    results = asyncio.run(run_all(batcher, [1.0, -1.0, 3.0]))
    assert isinstance(results[1], ValueError)
    np.testing.assert_array_equal(results[0]["probabilities"], images(2.0))
    np.testing.assert_array_equal(results[2]["probabilities"], images(6.0))


def test_observer_sees_batch_sizes_and_queue_waits() -> None:
    seen: list[tuple[int, float]] = []
    batcher = Batcher(Recorder(), max_batch=64, max_delay_s=0.01, observe=lambda n, wait: seen.append((n, wait)))
    began = time.perf_counter()
    asyncio.run(run_all(batcher, [1.0] * 5))
    assert [n for n, _ in seen] == [5]
    assert 0 <= seen[0][1] <= time.perf_counter() - began  # the first request's wait: within the whole run


def test_multi_image_requests_are_split_back() -> None:
    model = Recorder()
    batcher = Batcher(model, max_batch=64, max_delay_s=0.05)

    async def two() -> list:
        results = await asyncio.gather(batcher.infer(images(1.0, n=3), ["p"]), batcher.infer(images(5.0, n=2), ["p"]))
        await batcher.close()
        return results

    first, second = asyncio.run(two())
    assert first["p"].shape[0] == 3
    assert second["p"].shape[0] == 2
    assert model.sizes == [5]


@pytest.mark.parametrize("max_batch", [1, 4])
def test_oversized_request_runs_alone(max_batch: int) -> None:
    model = Recorder()
    batcher = Batcher(model, max_batch=max_batch, max_delay_s=0.01)

    async def big() -> dict:
        result = await batcher.infer(images(1.0, n=10), ["p"])
        await batcher.close()
        return result

    assert asyncio.run(big())["p"].shape[0] == 10


def test_with_no_time_left_the_next_batch_starts_before_other_ready_work() -> None:
    # The model must not wait for the event loop: once a request is queued and the delay is spent, its batch starts
    # in the same step, ahead of callbacks already waiting to run (such as answering the previous batch).
    order: list[str] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        second: list[asyncio.Future] = []

        async def call(batch: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
            order.append("model")
            if not second:
                second.append(asyncio.ensure_future(batcher.infer(images(2.0), outputs)))
                await asyncio.sleep(0)  # the second request queues while this batch runs
                for _ in range(3):
                    loop.call_soon(order.append, "other")
            return dict.fromkeys(outputs, batch)

        batcher = Batcher(call, max_batch=64, max_delay_s=0.0)
        await batcher.infer(images(1.0), ["probabilities"])
        await second[0]
        await batcher.close()

    asyncio.run(scenario())
    assert order == ["model", "model", "other", "other", "other"]


def test_a_failure_outside_the_model_call_fails_its_batch_not_the_batcher(caplog: pytest.LogCaptureFixture) -> None:
    observed: list[int] = []

    def observe(size: int, waited_s: float) -> None:  # runs in the batcher's worker, outside the model call
        observed.append(size)
        if len(observed) == 1:
            raise RuntimeError("metrics backend down")

    async def scenario() -> tuple[object, object]:
        batcher = Batcher(Recorder(), max_batch=64, max_delay_s=0.002, observe=observe)
        # Without the guard the worker dies: both calls would wait forever, hence the (generous) timeouts.
        first = await asyncio.gather(asyncio.wait_for(batcher.infer(images(1.0), ["x"]), 5), return_exceptions=True)
        second = await asyncio.wait_for(batcher.infer(images(2.0), ["x"]), timeout=5)
        await batcher.close()
        return first[0], second

    with caplog.at_level(logging.ERROR, logger="app.runtime.batcher"):
        first, second = asyncio.run(scenario())
    assert isinstance(first, RuntimeError)
    assert [r.getMessage() for r in caplog.records] == ["batch of 1 requests failed"]
    np.testing.assert_array_equal(second["x"], images(4.0))  # type: ignore[index]


def test_an_unavailable_model_fails_the_whole_batch_at_once() -> None:
    """A lost model process: each request gets the retriable error once, none is sent again in turn."""
    from app.errors import ModelRestarting

    calls: list[int] = []

    async def lost(images: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        calls.append(len(images))
        await asyncio.sleep(0.01)
        raise ModelRestarting("the model process stopped; try again.")

    async def scenario() -> list[object]:
        batcher = Batcher(lost, max_batch=8, max_delay_s=0.002)
        try:
            return await asyncio.gather(*(batcher.infer(images(0.1), ["y"]) for _ in range(4)), return_exceptions=True)
        finally:
            await batcher.close()

    results = asyncio.run(scenario())
    assert all(isinstance(r, ModelRestarting) for r in results)
    assert calls == [4]  # one batched call, not followed by one call per request


def test_a_request_arriving_within_the_delay_joins_the_batch() -> None:
    model = Recorder()
    batcher = Batcher(model, max_batch=64, max_delay_s=2.0)

    async def staggered() -> None:
        first = asyncio.ensure_future(batcher.infer(images(1.0), ["p"]))
        await asyncio.sleep(0.05)  # well within the 2 s the first request may wait
        await asyncio.gather(first, batcher.infer(images(2.0), ["p"]))
        await batcher.close()

    asyncio.run(staggered())
    assert model.sizes == [2]


def test_a_request_arriving_within_a_short_delay_joins_the_batch() -> None:
    model = Recorder()
    batcher = Batcher(model, max_batch=64, max_delay_s=0.9)  # delays are milliseconds in service: under a second

    async def arriving_while_the_first_waits() -> None:
        first = asyncio.ensure_future(batcher.infer(images(1.0), ["p"]))
        for _ in range(5):  # the worker takes the first request and waits for more
            await asyncio.sleep(0)
        await asyncio.gather(first, batcher.infer(images(2.0), ["p"]))
        await batcher.close()

    asyncio.run(arriving_while_the_first_waits())
    assert model.sizes == [2]


@pytest.mark.parametrize(("requests", "sizes"), [((2, 2), [4]), ((3, 2), [3, 2]), ((1, 1, 1, 1), [4])])
def test_a_batch_takes_requests_whole_up_to_exactly_the_maximum(requests: tuple[int, ...], sizes: list[int]) -> None:
    model = Recorder()
    batcher = Batcher(model, max_batch=4, max_delay_s=0.05)

    async def together() -> None:
        await asyncio.gather(*(batcher.infer(images(1.0, n), ["p"]) for n in requests))
        await batcher.close()

    asyncio.run(together())
    assert model.sizes == sizes


def test_a_full_batch_runs_without_waiting_for_the_delay() -> None:
    model = Recorder()
    batcher = Batcher(model, max_batch=2, max_delay_s=60.0)

    async def full() -> None:
        # A minute's delay, but the batch is full at once: it must not wait (the 10 s bound only stops a hang).
        await asyncio.wait_for(asyncio.gather(batcher.infer(images(1.0), ["p"]), batcher.infer(images(2.0), ["p"])), 10)
        await batcher.close()

    asyncio.run(full())
    assert model.sizes == [2]


def test_close_stops_the_worker() -> None:
    async def scenario() -> asyncio.Task[None]:
        batcher = Batcher(Recorder(), max_batch=4, max_delay_s=0.01)
        await batcher.infer(images(1.0), ["p"])
        worker = batcher._worker
        assert worker is not None
        await batcher.close()
        assert worker.done()  # ended by close itself, not by asyncio.run's cleanup
        return worker

    assert asyncio.run(scenario()).cancelled()
