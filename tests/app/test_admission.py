"""Admission by work: the budgets of body bytes and decoded pixels in flight, alone and in the service."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.admission import Budget, DecodePool
from app.errors import Overloaded
from app.handlers import http_status
from app.main import create_app
from app.preprocess import decoded_pixels, open_image
from app.settings import Settings
from tests.helpers import MODELS_DIR, encode, photo_of
from training.data import Mnist

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def budget(capacity: int = 10, wait_s: float = 1.0) -> Budget:
    return Budget(capacity, wait_s, "things", "MNIST_THINGS")


async def test_requests_within_the_budget_all_run_at_once() -> None:
    shared, running = budget(), []

    async def work(amount: int) -> None:
        async with shared.hold(amount):
            running.append(shared.in_use)
            await asyncio.sleep(0.01)

    await asyncio.gather(work(3), work(3), work(4))
    assert max(running) == 10
    assert shared.in_use == 0


async def test_beyond_the_budget_requests_wait_their_turn_in_order() -> None:
    shared, order = budget(), []

    async def work(name: str, amount: int) -> None:
        async with shared.hold(amount):
            order.append(name)
            await asyncio.sleep(0.01)

    await asyncio.gather(work("first", 8), work("large", 8), work("small", 1))
    assert order == ["first", "large", "small"]  # small fits beside first, but large came before it
    assert shared.in_use == 0


async def test_a_request_that_waits_too_long_is_refused_and_leaves_nothing_held() -> None:
    shared = budget(wait_s=0.05)
    held = await shared.acquire(10)
    with pytest.raises(Overloaded, match="MNIST_THINGS") as refused:
        await shared.acquire(1)
    assert http_status(refused.value) == 503
    assert refused.value.retry_after_s == 1
    shared.release(held)
    assert shared.in_use == 0
    assert await shared.acquire(10) == 10  # nobody left in line


async def test_a_large_waiter_giving_up_lets_the_smaller_ones_behind_it_in() -> None:
    shared = budget(wait_s=0.2)
    held = await shared.acquire(6)
    large = asyncio.create_task(shared.acquire(8))
    await asyncio.sleep(0.1)
    small = asyncio.create_task(shared.acquire(3))  # in line behind the large one, and giving up later
    with pytest.raises(Overloaded):
        await large
    assert await small == 3
    shared.release(held)
    shared.release(3)
    assert shared.in_use == 0


async def test_a_cancelled_waiter_leaves_the_line() -> None:
    shared = budget()
    held = await shared.acquire(10)
    waiter = asyncio.create_task(shared.acquire(5))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    shared.release(held)
    assert shared.in_use == 0
    assert await shared.acquire(10) == 10


async def test_one_request_larger_than_the_budget_runs_alone() -> None:
    shared = budget()
    assert await shared.acquire(50) == 10
    shared.release(10)
    assert shared.in_use == 0


def test_a_jpeg_costs_the_pixels_of_its_dct_scaled_decoding(mnist_sample: Mnist) -> None:
    big = photo_of(mnist_sample.test.images[0], size=4000, scale=120, offset=(300, 300))
    assert decoded_pixels(open_image(encode(big, "JPEG"))) == 1000 * 1000  # 1/4 scale: 1/8 would be under 920 px
    assert decoded_pixels(open_image(encode(big.resize((3000, 3000)), "PNG"))) == 3000 * 3000  # no such scaling


def test_budgets_smaller_than_the_largest_request_are_refused() -> None:
    with pytest.raises(ValidationError, match="MNIST_DECODE_BUDGET_PIXELS"):
        Settings(max_image_pixels=1000, decode_budget_pixels=999)
    with pytest.raises(ValidationError, match="MNIST_BODY_BUDGET_BYTES"):
        Settings(max_upload_bytes=1000, body_budget_bytes=999)


@pytest.fixture(scope="module")
def tight() -> Iterator[TestClient]:
    settings = Settings(models_dir=MODELS_DIR, admission_wait_s=0.05)
    with TestClient(create_app(settings)) as client:
        yield client


def _fill(client: TestClient, shared: Budget) -> int:
    assert client.portal is not None
    return int(client.portal.call(shared.acquire, shared.capacity))


def test_no_room_to_decode_is_503_overloaded_then_served(tight: TestClient, mnist_sample: Mnist) -> None:
    image = encode(photo_of(mnist_sample.test.images[0], size=400, scale=10), "JPEG")
    pixels = tight.app.state.decode_pool.budget  # type: ignore[attr-defined]
    held = _fill(tight, pixels)
    tiny = tight.post("/predict", files={"file": ("digit.png", encode(mnist_sample.test.images[0]))})
    assert tiny.status_code == 200  # a small image never waits for the budget
    refused = tight.post("/predict", files={"file": ("photo.jpg", image)})
    assert refused.status_code == 503
    assert refused.json()["code"] == "overloaded"
    assert refused.headers["retry-after"] == "1"
    pixels.release(held)
    assert tight.post("/predict", files={"file": ("photo.jpg", image)}).json()["digit"] == 7


def test_no_room_for_a_large_body_is_503_overloaded_then_served(tight: TestClient, mnist_sample: Mnist) -> None:
    bodies = tight.app.state.body_budget  # type: ignore[attr-defined]
    image = encode(photo_of(mnist_sample.test.images[0], size=900, scale=25), "PNG", compress_level=0)
    assert len(image) > 64 * 1024  # large enough to count
    held = _fill(tight, bodies)
    small = tight.post("/predict", files={"file": ("digit.png", encode(mnist_sample.test.images[0]))})
    assert small.status_code == 200  # small bodies are not counted
    refused = tight.post("/predict", content=image, headers={"Content-Type": "image/png"})
    assert (refused.status_code, refused.json()["code"]) == (503, "overloaded")
    assert refused.headers["retry-after"] == "1"
    bodies.release(held)
    assert tight.post("/predict", content=image, headers={"Content-Type": "image/png"}).json()["digit"] == 7
    assert bodies.in_use == 0


async def test_the_refusal_names_the_units_the_budget_and_its_setting() -> None:
    shared = Budget(1_500_000, 0.01, "decoded pixels", "MNIST_DECODE_BUDGET_PIXELS")
    held = await shared.acquire(1_500_000)
    with pytest.raises(Overloaded) as refused:
        await shared.acquire(1)
    assert refused.value.detail == (
        "The service is busy with as many decoded pixels as it may hold (1,500,000, MNIST_DECODE_BUDGET_PIXELS); "
        "try again."
    )
    shared.release(held)


async def test_a_request_that_exactly_fills_the_budget_runs_at_once() -> None:
    shared = budget(capacity=10, wait_s=0.01)
    assert await shared.acquire(4) == 4
    assert await shared.acquire(6) == 6  # 4 + 6 == capacity: no wait, no refusal
    assert shared.in_use == 10


async def test_a_waiter_is_let_in_when_exactly_enough_room_is_freed() -> None:
    shared = budget(capacity=10)
    first = await shared.acquire(7)
    waiter = asyncio.create_task(shared.acquire(3 + 1))
    await asyncio.sleep(0)
    shared.release(first - 6)  # 6 in use: 4 free, exactly what the waiter needs
    assert await waiter == 4
    assert shared.in_use == 10


async def test_the_decode_pool_runs_in_its_threads_within_the_budget_and_frees_memory_when_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    released: list[int] = []
    monkeypatch.setattr("app.admission.release_free_memory", lambda: released.append(shared.in_use))
    shared = budget(capacity=100)
    pool = DecodePool(shared, threads=2)
    try:
        seen: list[tuple[str, int]] = []

        def decode(name: str) -> str:
            seen.append((threading.current_thread().name, shared.in_use))
            return name.upper()

        assert await pool.run(60, decode, "a") == "A"
        assert seen[0][0].startswith("decode")
        assert seen[0][1] == 60  # held while it ran
        assert released == [0]  # the budget emptied: memory handed back
        other = await shared.acquire(10)  # other work in flight: no trim after the next decode
        assert await pool.run(30, decode, "b") == "B"
        assert released == [0]
        shared.release(other)
    finally:
        pool.close()


async def test_a_waiter_is_not_let_in_while_it_would_overfill_the_budget() -> None:
    shared = budget(capacity=10)
    held = await shared.acquire(8)
    waiter = asyncio.create_task(shared.acquire(4))
    await asyncio.sleep(0)
    shared.release(1)  # 7 in use: 3 free, one short
    await asyncio.sleep(0)
    assert not waiter.done()
    assert shared.in_use == 7
    shared.release(1)
    assert await waiter == 4
    shared.release(held - 2 + 4)
    assert shared.in_use == 0


async def test_a_waiter_cancelled_at_the_head_of_the_line_lets_the_next_one_in_at_once() -> None:
    shared = budget(capacity=10)
    held = await shared.acquire(10)
    first = asyncio.create_task(shared.acquire(5))
    second = asyncio.create_task(shared.acquire(1))
    await asyncio.sleep(0)
    first.cancel()  # its place in line is cancelled now; its task leaves the line when it next runs
    shared.release(held)
    assert shared.in_use == 1  # the second, granted in the same step
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == 1
    shared.release(1)
    assert shared.in_use == 0


async def test_a_waiter_cancelled_just_as_it_was_let_in_gives_its_room_back() -> None:
    shared = budget(capacity=10)
    held = await shared.acquire(10)
    waiter = asyncio.create_task(shared.acquire(4))
    await asyncio.sleep(0)
    shared.release(held)  # grants the waiter...
    assert shared.in_use == 4
    waiter.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert shared.in_use == 0


async def test_the_decode_pool_decodes_with_at_most_its_threads() -> None:
    pool = DecodePool(budget(capacity=100), threads=1)
    lock, active, peak = threading.Lock(), [0], [0]

    def decode() -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        threading.Event().wait(0.05)
        with lock:
            active[0] -= 1

    try:
        await asyncio.gather(pool.run(1, decode), pool.run(1, decode), pool.run(1, decode))
    finally:
        pool.close()
    assert peak[0] == 1


async def test_closing_the_decode_pool_cancels_waiting_work_and_does_not_wait_for_running_work() -> None:
    pool = DecodePool(budget(capacity=100), threads=1)
    release = threading.Event()
    guard = threading.Timer(5.0, release.set)  # only ends a hang, should close wait for the running decode
    guard.start()

    def blocked() -> str:
        release.wait()
        return "ran"

    running = asyncio.ensure_future(pool.run(1, blocked))
    queued = asyncio.ensure_future(pool.run(1, blocked))
    await asyncio.sleep(0.05)
    pool.close()
    closed_while_running = not release.is_set()
    release.set()
    guard.cancel()
    assert closed_while_running
    assert await running == "ran"
    with pytest.raises(asyncio.CancelledError):
        await queued
