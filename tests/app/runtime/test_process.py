"""The model process answers as an in-process session would, one failing call fails alone, and a lost process
fails only the calls it held: the next call starts a new one. Each test here starts real child processes;
test_process_in_process.py runs both sides in this process, in milliseconds, for mutation testing."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest

from app import errors
from app.cards import read_card
from app.main import runtime_config
from app.runtime.process import ModelProcess, ModelProcessError, ModelProcessLost
from app.runtime.registry import load_registry
from app.settings import Settings
from tests.helpers import MODELS_DIR
from training.data import Mnist

CNN = MODELS_DIR / "cnn" / "model.onnx"


@pytest.fixture
def process() -> Iterator[ModelProcess]:
    """A model process holding cnn under the key "cnn"."""
    process = ModelProcess(["CPUExecutionProvider"], intra_op_threads=1, inter_op_threads=1)
    process.start()

    async def opened() -> list[str]:
        await process.started()
        return await process.open("cnn", CNN, read_card(CNN.parent))

    assert asyncio.run(opened()) == ["CPUExecutionProvider"]
    yield process
    process.close()


def images(mnist: Mnist, count: int) -> np.ndarray:
    return (mnist.test.images[:count].astype(np.float32) / 255)[..., np.newaxis]


def test_answers_match_an_in_process_session(process: ModelProcess, mnist_sample: Mnist) -> None:
    x = images(mnist_sample, 5)
    (values, seconds) = asyncio.run(process.run("cnn", x, ["probabilities", "conv1"]))
    expected = ort.InferenceSession(str(CNN), providers=["CPUExecutionProvider"]).run(
        ["probabilities", "conv1"], {"image": x}
    )
    np.testing.assert_allclose(values["probabilities"], expected[0], atol=1e-6)
    np.testing.assert_allclose(values["conv1"], expected[1], atol=1e-5)
    assert seconds > 0


def test_concurrent_calls_get_their_own_answers(process: ModelProcess, mnist_sample: Mnist) -> None:
    async def calls() -> list[tuple[dict[str, np.ndarray], float]]:
        return await asyncio.gather(
            *(process.run("cnn", images(mnist_sample, n), ["probabilities"]) for n in (1, 7, 3))
        )

    assert [len(values["probabilities"]) for values, _ in asyncio.run(calls())] == [1, 7, 3]


def test_a_failing_call_fails_alone(process: ModelProcess, mnist_sample: Mnist) -> None:
    async def calls() -> list[object]:
        bad = np.zeros((1, 27, 27, 1), np.float32)  # not the graph's input shape
        return await asyncio.gather(
            process.run("cnn", bad, ["probabilities"]),
            process.run("cnn", images(mnist_sample, 2), ["probabilities"]),
            return_exceptions=True,
        )

    failed, answered = asyncio.run(calls())
    assert isinstance(failed, ModelProcessError)
    assert not isinstance(failed, ModelProcessLost)
    assert "image" in str(failed)
    assert answered[0]["probabilities"].shape == (2, 10)  # type: ignore[index]


def test_a_lost_process_fails_its_calls_and_the_next_call_starts_another(
    process: ModelProcess, mnist_sample: Mnist
) -> None:
    async def killed_mid_call() -> None:
        call = asyncio.ensure_future(process.run("cnn", np.zeros((4000, 28, 28, 1), np.float32), ["probabilities"]))
        await asyncio.sleep(0.1)  # the child is computing
        process._process.kill()  # type: ignore[union-attr]
        with pytest.raises(ModelProcessLost, match="stopped"):
            await call

    asyncio.run(killed_mid_call())
    values, _ = asyncio.run(process.run("cnn", images(mnist_sample, 1), ["probabilities"]))
    assert values["probabilities"].shape == (1, 10)
    process._process.kill()  # type: ignore[union-attr]  # and while idle
    process._process.join()  # type: ignore[union-attr]
    values, _ = asyncio.run(process.run("cnn", images(mnist_sample, 2), ["probabilities"]))
    assert values["probabilities"].shape == (2, 10)


def test_the_registry_calls_its_models_in_the_process_and_says_503_while_it_is_lost(mnist_sample: Mnist) -> None:
    # Forced on: runtime_config turns the process off on a machine with fewer than two cores.
    config = replace(runtime_config(Settings(provider="cpu", intra_op_threads=1)), model_process=True)

    async def scenario() -> None:
        registry = await load_registry(MODELS_DIR, default_model="cnn", config=config)
        assert registry.process is not None
        # The worker holds no session of the models its process runs (it used to keep a second copy of each).
        assert not [o for o in gc.get_objects() if isinstance(o, ort.InferenceSession)]
        model = registry.get("cnn")
        assert (await model.infer(images(mnist_sample, 2), ["probabilities"]))["probabilities"].shape == (2, 10)
        call = asyncio.ensure_future(model.call(np.zeros((4000, 28, 28, 1), np.float32), ["probabilities"]))
        await asyncio.sleep(0.1)
        registry.process._process.kill()  # type: ignore[union-attr]
        with pytest.raises(errors.ModelUnavailable, match="try again"):
            await call
        assert (await model.infer(images(mnist_sample, 1), ["probabilities"]))["probabilities"].shape == (1, 10)
        await registry.close()
        assert registry.process._process is None

    asyncio.run(scenario())


def test_close_stops_the_child(process: ModelProcess) -> None:
    child = process._process
    assert child is not None
    assert child.is_alive()
    start = time.perf_counter()
    process.close()
    assert not child.is_alive()
    assert time.perf_counter() - start < 5


def test_close_fails_the_calls_still_waiting(process: ModelProcess) -> None:
    async def closing_mid_call() -> None:
        call = asyncio.ensure_future(process.run("cnn", np.zeros((4000, 28, 28, 1), np.float32), ["probabilities"]))
        await asyncio.sleep(0.1)
        process.close()
        with pytest.raises(ModelProcessLost, match="stopping"):
            await call

    asyncio.run(closing_mid_call())


def test_a_lost_process_is_replaced_at_once_and_is_not_ready_meanwhile(
    process: ModelProcess, mnist_sample: Mnist
) -> None:
    async def scenario() -> None:
        await process.run("cnn", images(mnist_sample, 1), ["probabilities"])  # the loop now watches the pipe
        assert process.ready
        old = process._process
        old.kill()  # type: ignore[union-attr]
        while process._process is old:  # noticed by the event loop, with no call made
            await asyncio.sleep(0.01)
        assert not process.ready  # the new one is opening its sessions
        while not process.ready:
            await asyncio.sleep(0.05)
        values, _ = await process.run("cnn", images(mnist_sample, 2), ["probabilities"])
        assert values["probabilities"].shape == (2, 10)

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_a_lost_process_is_logged_with_its_exit_code(
    process: ModelProcess, mnist_sample: Mnist, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        await process.run("cnn", images(mnist_sample, 1), ["probabilities"])
        old = process._process
        old.kill()  # type: ignore[union-attr]
        old.join()  # type: ignore[union-attr]  # reaped before the loop sees the pipe close: its exit code is known
        while process._process is old:
            await asyncio.sleep(0.01)

    with caplog.at_level(logging.ERROR, logger="app.runtime.process"):
        asyncio.run(asyncio.wait_for(scenario(), 60))
    assert "the model process stopped (exit code -9): starting a new model process" in caplog.messages
