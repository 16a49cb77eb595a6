"""Both sides of the model process run in this process, with no interpreter to start: the child's loop (`_serve`)
in the main thread against a scripted parent, and `ModelProcess` against that same loop in a thread, which it starts,
loses and replaces as it would a process. Milliseconds each, so that mutation testing (docs/mutation.md) can run
them against every mutant; tests/app/runtime/test_process.py runs the real child processes."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from app.cards import read_card
from app.runtime import process as process_module
from app.runtime.messages import Answer, Close, Failed, Open, Opened, Ready, Run, StartFailed
from app.runtime.process import ModelProcess, ModelProcessError, ModelProcessLost, _first_line, _serve
from app.runtime.session import ModelLoadError, open_checked_session
from tests.helpers import MODELS_DIR
from training.data import Mnist

CNN = MODELS_DIR / "cnn" / "model.onnx"
CARD = read_card(CNN.parent)
LIMIT_S = 30  # only ends a hang: every wait below ends in milliseconds when the code works


def images(mnist: Mnist, count: int) -> np.ndarray:
    return (mnist.test.images[:count].astype(np.float32) / 255)[..., np.newaxis]


# The child's loop, in the main thread.


def serve_in_this_process(models: dict[str, Path], talk: Callable[[Connection], list[object]]) -> list[object]:
    """The child's loop (`_serve`) run right here, in the main thread as in the child, with `talk` as the parent in
    another thread: what the child answered. Run in-process so that what it does is seen, not only its answers."""
    parent, child = multiprocessing.Pipe()
    answers: list[object] = []
    parent_side = threading.Thread(target=lambda: answers.extend(talk(parent)))
    sigint = signal.getsignal(signal.SIGINT)
    opens = [Open(key, path, read_card(MODELS_DIR / key)) for key, path in models.items()]
    parent_side.start()
    try:
        _serve(child, opens, ["CPUExecutionProvider"], 1, 1)
    finally:
        signal.signal(signal.SIGINT, sigint)
        child.close()  # should the loop fail, the parent side reads end-of-file instead of waiting
        parent_side.join(LIMIT_S)
    return answers


def test_the_child_answers_calls_in_order_and_one_bad_call_fails_alone(mnist_sample: Mnist) -> None:
    x = images(mnist_sample, 3)

    def talk(parent: Connection) -> list[object]:
        answers = [parent.recv()]  # ready, once the sessions are open
        parent.send(Run("cnn", x, ("probabilities",)))
        parent.send(Run("cnn", np.zeros((1, 27, 27, 1), np.float32), ("probabilities",)))
        parent.send(Run("cnn", x[:1], ("logits", "probabilities")))
        answers += [parent.recv() for _ in range(3)]
        parent.close()  # the child reads end-of-file and returns
        return answers

    began = time.perf_counter()
    ready, first, bad, last = serve_in_this_process({"cnn": CNN}, talk)
    took = time.perf_counter() - began
    assert ready == Ready()
    session = ort.InferenceSession(str(CNN), providers=["CPUExecutionProvider"])
    assert isinstance(first, Answer)
    assert list(first.values) == ["probabilities"]
    np.testing.assert_allclose(
        first.values["probabilities"], session.run(["probabilities"], {"image": x})[0], atol=1e-6
    )
    assert 0 < first.seconds < took  # the seconds ONNX Runtime took, within the whole exchange
    assert isinstance(bad, Failed)
    assert bad.error.startswith(("InvalidArgument: ", "Fail: ", "RuntimeException: "))
    assert "image" in bad.error
    assert "\n" not in bad.error
    assert isinstance(last, Answer)
    assert list(last.values) == ["logits", "probabilities"]  # each value under its own name
    np.testing.assert_allclose(last.values["logits"], session.run(["logits"], {"image": x[:1]})[0], atol=1e-5)


def test_a_child_that_cannot_open_its_models_says_why_and_stops(tmp_path: Path) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not onnx")
    [answer] = serve_in_this_process({"cnn": broken}, lambda parent: [parent.recv()])
    assert isinstance(answer, StartFailed)
    assert str(broken) in answer.error  # ONNX Runtime's own first line, naming the file
    assert "\n" not in answer.error


def test_the_child_ignores_ctrl_c_which_reaches_the_whole_process_group() -> None:
    def talk(parent: Connection) -> list[object]:
        answers = [parent.recv(), signal.getsignal(signal.SIGINT)]
        parent.close()
        return answers

    ready, handler = serve_in_this_process({"cnn": CNN}, talk)
    assert ready == Ready()
    assert handler == signal.SIG_IGN


def test_the_child_opens_every_session_with_the_workers_thread_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[ort.InferenceSession] = []

    def recorded(*args: Any) -> ort.InferenceSession:
        opened.append(open_checked_session(*args))
        return opened[-1]

    monkeypatch.setattr(process_module, "open_checked_session", recorded)

    def talk(parent: Connection) -> list[object]:
        answers = [parent.recv()]
        parent.send(Open("lenet", MODELS_DIR / "lenet" / "model.onnx", read_card(MODELS_DIR / "lenet")))
        answers.append(parent.recv())
        parent.close()
        return answers

    ready, lenet = serve_in_this_process({"cnn": CNN}, talk)
    assert (ready, lenet) == (Ready(), Opened(["CPUExecutionProvider"]))
    # ONNX Runtime's own default is 0: as many threads as the node has cores, whatever the container's share.
    threads = [(o.intra_op_num_threads, o.inter_op_num_threads) for o in (s.get_session_options() for s in opened)]
    assert threads == [(1, 1), (1, 1)]  # the one it started with, and the one it was sent


def test_the_child_drops_a_closed_session_and_ignores_a_close_for_one_it_does_not_hold(mnist_sample: Mnist) -> None:
    def talk(parent: Connection) -> list[object]:
        answers = [parent.recv()]
        parent.send(Close("never-opened"))
        parent.send(Close("cnn"))
        parent.send(Run("cnn", images(mnist_sample, 1), ("probabilities",)))
        answers.append(parent.recv())
        parent.close()
        return answers

    ready, after_close = serve_in_this_process({"cnn": CNN}, talk)
    assert ready == Ready()
    assert after_close == Failed("KeyError: 'cnn'")  # still running, without the session


def test_an_error_is_reported_by_its_first_line_cut_to_300_characters() -> None:
    assert _first_line(ValueError("bad input\n  at node 7")) == "bad input"
    assert _first_line(ValueError("x" * 400)) == "x" * 300
    assert _first_line(ValueError()) == "ValueError"  # no message: its type says what went wrong


# The parent, against the child's loop in a thread.


class _ChildEnd:
    """The child's end of the pipe as `_serve` uses it, passing nothing while its gate is shut: a child busy opening
    its models or computing a call, for as long as a test needs."""

    def __init__(self, connection: Connection, gate: threading.Event) -> None:
        self._connection, self._gate = connection, gate

    def recv(self) -> object:
        self._gate.wait()
        return self._connection.recv()

    def send(self, message: object) -> None:
        self._gate.wait()
        self._connection.send(message)


class ThreadChild:
    """What ModelProcess uses of a multiprocessing Process, its target run in a thread of this process. `kill` shuts
    the pipe under it, so the parent sees what it sees of a killed process: end-of-file, and exit code -9."""

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...], name: str, daemon: bool) -> None:
        self.name, self.daemon = name, daemon
        self.models = [m.key for m in args[1]]  # the sessions it was started with
        self.arguments = args[2:]  # providers and thread counts
        self.gate = threading.Event()
        self.linger = threading.Event()  # set: it ends as its loop returns
        self.linger.set()
        self.exitcode: int | None = None
        # Its own descriptor, as a child process has: the parent closes its copy of the child's end after start().
        self._connection = Connection(os.dup(args[0].fileno()))
        self._thread = threading.Thread(target=self._run, args=(target, args[1:]), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self, target: Callable[..., None], rest: tuple[Any, ...]) -> None:
        try:
            target(_ChildEnd(self._connection, self.gate), *rest)
        except (EOFError, OSError):
            pass  # killed: its pipe was shut under it
        finally:
            self._connection.close()
            self.linger.wait()
            if self.exitcode is None:
                self.exitcode = 0

    def is_alive(self) -> bool:
        return self.exitcode is None and self._thread.is_alive()

    def kill(self) -> None:
        self.linger.set()
        if self.exitcode is None:
            self.exitcode = -signal.SIGKILL
            try:
                with socket.socket(fileno=os.dup(self._connection.fileno())) as end:
                    end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # it had just returned
        self.gate.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


class ThreadChildren:
    """Stands in for the multiprocessing module in app.runtime.process: each child a ThreadChild, kept here."""

    def __init__(self) -> None:
        self.children: list[ThreadChild] = []
        self.methods: list[str] = []
        self.child_ends: list[Connection] = []
        self.hold = False  # new children start with their gate shut
        self.linger = False  # new children stay alive after their loop returns, until their linger is set

    def get_context(self, method: str) -> ThreadChildren:
        self.methods.append(method)
        return self

    def Pipe(self) -> tuple[Connection, Connection]:
        parent, child = multiprocessing.Pipe()
        self.child_ends.append(child)
        return parent, child

    def Process(self, target: Callable[..., None], args: tuple[Any, ...], name: str, daemon: bool) -> ThreadChild:
        child = ThreadChild(target, args, name, daemon)
        if not self.hold:
            child.gate.set()
        if self.linger:
            child.linger.clear()
        self.children.append(child)
        return child

    @property
    def last(self) -> ThreadChild:
        return self.children[-1]


@pytest.fixture
def children(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadChildren]:
    """ModelProcess's children run in threads of this process; each is stopped after the test."""
    children = ThreadChildren()
    monkeypatch.setattr(process_module, "multiprocessing", children)
    # Only the main thread may set a signal handler; test_the_child_ignores_ctrl_c... checks the child's.
    monkeypatch.setattr(process_module, "signal", SimpleNamespace(signal=lambda *_: None, SIGINT=0, SIG_IGN=0))
    yield children
    for child in children.children:
        child.kill()
        child.join(LIMIT_S)


def run(scenario: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario, LIMIT_S))


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)


@pytest.fixture
def process(children: ThreadChildren) -> Iterator[ModelProcess]:
    """A started model process holding cnn under the key "cnn", opened on an event loop of its own."""
    process = ModelProcess(["CPUExecutionProvider"], intra_op_threads=1, inter_op_threads=2)
    process.start()

    async def opened() -> list[str]:
        await process.started()
        return await process.open("cnn", CNN, CARD)

    assert run(opened()) == ["CPUExecutionProvider"]
    yield process
    process.close()


def test_the_child_is_spawned_as_a_daemon_with_the_providers_and_threads(children: ThreadChildren) -> None:
    process = ModelProcess(["CPUExecutionProvider"], intra_op_threads=1, inter_op_threads=2)
    assert not process.ready
    process.start()
    try:
        assert children.methods == ["spawn"]  # a fork would copy the parent's threads' locks
        child = children.last
        assert (child.name, child.daemon) == ("mnist-model", True)  # a daemon ends with the worker
        assert child.arguments == (["CPUExecutionProvider"], 1, 2)
        assert child.models == []
        assert children.child_ends[0].closed  # the parent's copy: end-of-file reaches it when the child ends
        run(process.started())
        assert process.ready
    finally:
        process.close()
    assert not process.ready


def test_calls_are_answered_as_an_in_process_session_would_on_every_event_loop(
    process: ModelProcess, mnist_sample: Mnist
) -> None:
    x = images(mnist_sample, 5)
    expected = ort.InferenceSession(str(CNN), providers=["CPUExecutionProvider"]).run(
        ["probabilities", "conv1"], {"image": x}
    )
    for _ in range(2):  # each asyncio.run is a new event loop: the pipe is watched from the one that calls
        values, seconds = run(process.run("cnn", x, ["probabilities", "conv1"]))
        assert list(values) == ["probabilities", "conv1"]
        np.testing.assert_allclose(values["probabilities"], expected[0], atol=1e-6)
        np.testing.assert_allclose(values["conv1"], expected[1], atol=1e-5)
        assert seconds > 0
    assert process.ready


def test_the_first_call_starts_the_process(children: ThreadChildren, mnist_sample: Mnist) -> None:
    process = ModelProcess(["CPUExecutionProvider"], intra_op_threads=1, inter_op_threads=1)

    async def scenario() -> tuple[list[str], int]:
        providers = await process.open("cnn", CNN, CARD)
        values, _ = await process.run("cnn", images(mnist_sample, 2), ["probabilities"])
        return providers, len(values["probabilities"])

    try:
        assert run(scenario()) == (["CPUExecutionProvider"], 2)
        assert len(children.children) == 1
    finally:
        process.close()


def test_a_failing_call_fails_alone(process: ModelProcess, mnist_sample: Mnist) -> None:
    async def calls() -> list[object]:
        bad = np.zeros((1, 27, 27, 1), np.float32)  # not the graph's input shape
        return await asyncio.gather(
            process.run("cnn", bad, ["probabilities"]),
            process.run("cnn", images(mnist_sample, 2), ["probabilities"]),
            return_exceptions=True,
        )

    failed, answered = run(calls())
    assert isinstance(failed, ModelProcessError)
    assert not isinstance(failed, ModelProcessLost)
    assert "image" in str(failed)
    assert answered[0]["probabilities"].shape == (2, 10)  # type: ignore[index]
    assert process.ready


def test_a_model_the_child_cannot_open_is_a_load_error_and_is_not_opened_again(
    process: ModelProcess, children: ThreadChildren, tmp_path: Path
) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not onnx")

    async def scenario() -> None:
        with pytest.raises(ModelLoadError) as refused:
            await process.open("broken", broken, CARD)
        assert str(refused.value).startswith(f"{broken}: ")  # as an in-process load says it: the file, then why
        assert process.ready  # the process goes on
        children.last.kill()
        await until(lambda: len(children.children) == 2 and process.ready)

    run(scenario())
    assert children.last.models == ["cnn"]


def test_an_answer_whose_caller_stopped_waiting_is_dropped_quietly(
    process: ModelProcess, children: ThreadChildren, mnist_sample: Mnist, caplog: pytest.LogCaptureFixture
) -> None:
    child = children.last

    async def scenario() -> int:
        child.gate.clear()  # the child is busy
        abandoned = asyncio.ensure_future(process.run("cnn", images(mnist_sample, 1), ["probabilities"]))
        await asyncio.sleep(0)  # sent; its caller then stops waiting
        abandoned.cancel()
        kept = asyncio.ensure_future(process.run("cnn", images(mnist_sample, 3), ["probabilities"]))
        await asyncio.sleep(0)
        child.gate.set()
        values, _ = await kept
        return len(values["probabilities"])

    with caplog.at_level(logging.DEBUG):
        assert run(scenario()) == 3  # its own answer, not the dropped one
    assert [r.message for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert process.ready


def test_a_killed_child_fails_its_calls_and_is_replaced_at_once_with_its_models(
    process: ModelProcess, children: ThreadChildren, mnist_sample: Mnist, caplog: pytest.LogCaptureFixture
) -> None:
    old = children.last

    async def scenario() -> int:
        old.gate.clear()  # busy with the calls below when it is killed
        calls = [asyncio.ensure_future(process.run("cnn", images(mnist_sample, n), ["probabilities"])) for n in (1, 2)]
        await asyncio.sleep(0)
        old.kill()
        for call in calls:
            with pytest.raises(ModelProcessLost, match=r"the model process stopped \(exit code -9\)"):
                await call
        assert len(children.children) == 2  # replaced with no call made
        assert not process.ready  # the new one is opening its sessions
        await until(lambda: process.ready)
        values, _ = await process.run("cnn", images(mnist_sample, 4), ["probabilities"])
        return len(values["probabilities"])

    with caplog.at_level(logging.ERROR, logger="app.runtime.process"):
        assert run(scenario()) == 4
    assert children.last.models == ["cnn"]
    assert caplog.messages == [
        "the model process stopped (exit code -9): starting a new model process",
        "the model process stopped (exit code -9): 2 calls failed",
    ]


def test_a_call_after_the_child_died_unseen_starts_another(
    process: ModelProcess, children: ThreadChildren, mnist_sample: Mnist, caplog: pytest.LogCaptureFixture
) -> None:
    children.last.kill()  # no event loop runs: nobody reads the pipe
    children.last.join(LIMIT_S)
    with caplog.at_level(logging.ERROR, logger="app.runtime.process"):
        values, _ = run(process.run("cnn", images(mnist_sample, 2), ["probabilities"]))
    assert caplog.messages == ["the model process stopped (exit code -9): starting a new model process"]
    assert values["probabilities"].shape == (2, 10)
    assert len(children.children) == 2


def test_a_replacement_that_cannot_open_the_models_fails_its_calls_and_the_next_call_tries_again(
    children: ThreadChildren, mnist_sample: Mnist, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = tmp_path / "model.onnx"
    shutil.copyfile(CNN, model)
    process = ModelProcess(["CPUExecutionProvider"], intra_op_threads=1, inter_op_threads=1)
    process.start()

    async def scenario() -> None:
        await process.started()
        await process.open("cnn", model, CARD)
        model.write_bytes(b"not onnx")  # the model file is gone bad since
        children.hold = True  # the replacement says nothing until the call below waits for it
        children.last.kill()
        await until(lambda: len(children.children) == 2)
        call = asyncio.ensure_future(process.run("cnn", images(mnist_sample, 1), ["probabilities"]))
        await asyncio.sleep(0)
        children.last.gate.set()
        with pytest.raises(
            ModelProcessLost, match=f"the model process could not open the models: .*{re.escape(str(model))}"
        ):
            await call
        assert len(children.children) == 2  # no new process until a call asks for one (a restart would be made
        # in the same step that failed the call)
        assert not process.ready
        children.hold = False
        with pytest.raises(ModelProcessLost, match="could not open the models"):
            await process.run("cnn", images(mnist_sample, 1), ["probabilities"])
        assert len(children.children) == 3
        shutil.copyfile(CNN, model)
        values, _ = await process.run("cnn", images(mnist_sample, 2), ["probabilities"])
        assert values["probabilities"].shape == (2, 10)
        assert len(children.children) == 4

    try:
        with caplog.at_level(logging.ERROR, logger="app.runtime.process"):
            run(scenario())
    finally:
        process.close()
    assert any(m.endswith(": 1 calls failed") and "could not open the models" in m for m in caplog.messages)


def test_started_gives_up_on_a_child_that_does_not_start_in_time(children: ThreadChildren) -> None:
    children.hold = True
    process = ModelProcess(["CPUExecutionProvider"], intra_op_threads=1, inter_op_threads=1)
    process.start()
    try:
        with pytest.raises(ModelProcessLost, match=r"^the model process did not start within 0.05 s$"):
            run(process.started(timeout_s=0.05))
        assert not process.ready
        children.last.gate.set()
        run(process.started())
        assert process.ready
    finally:
        process.close()


def test_a_closed_model_is_dropped_by_the_child_and_not_opened_again(
    process: ModelProcess, children: ThreadChildren, mnist_sample: Mnist
) -> None:
    async def scenario() -> None:
        await process.open("cnn#2", CNN, CARD)
        await process.close_model("cnn")
        await process.close_model("never-opened")  # nothing to drop: nothing sent
        with pytest.raises(ModelProcessError, match="KeyError: 'cnn'"):
            await process.run("cnn", images(mnist_sample, 1), ["probabilities"])
        values, _ = await process.run("cnn#2", images(mnist_sample, 1), ["probabilities"])
        assert values["probabilities"].shape == (1, 10)
        children.last.kill()
        await until(lambda: len(children.children) == 2 and process.ready)

    run(scenario())
    assert children.last.models == ["cnn#2"]


def test_close_ends_an_idle_child_and_fails_nothing(process: ModelProcess, children: ThreadChildren) -> None:
    child = children.last
    process.close()
    assert child.exitcode == 0  # it read end-of-file and returned: not killed
    assert not process.ready
    assert process._process is None
    run(process.close_model("cnn"))  # a reload dropping a model as the service stops: nothing left to tell


def test_close_fails_the_calls_still_waiting_and_kills_a_child_that_does_not_end(
    process: ModelProcess, children: ThreadChildren, mnist_sample: Mnist
) -> None:
    child = children.last

    async def scenario() -> None:
        child.gate.clear()  # busy: it will not read end-of-file in time
        call = asyncio.ensure_future(process.run("cnn", images(mnist_sample, 1), ["probabilities"]))
        await asyncio.sleep(0)
        process.close(timeout_s=0.05)
        with pytest.raises(ModelProcessLost, match=r"^the service is stopping$"):
            await call

    run(scenario())
    assert child.exitcode == -signal.SIGKILL
    assert not child.is_alive()
    assert process._process is None


def test_a_call_waiting_for_a_process_that_does_not_start_fails_in_time(
    children: ThreadChildren, monkeypatch: pytest.MonkeyPatch, mnist_sample: Mnist
) -> None:
    monkeypatch.setattr(process_module, "START_TIMEOUT_S", 0.05)
    children.hold = True
    process = ModelProcess(["CPUExecutionProvider"], intra_op_threads=1, inter_op_threads=1)
    process.start()
    try:
        with pytest.raises(ModelProcessLost, match=r"^the model process did not start within 0.05 s$"):
            run(process.run("cnn", images(mnist_sample, 1), ["probabilities"]))
    finally:
        children.last.gate.set()
        process.close()


def failed_start(children: ThreadChildren, process: ModelProcess, model: Path) -> None:
    """`process` holding `model` as "cnn", then its process killed and the replacement unable to open the file."""

    async def scenario() -> None:
        await process.open("cnn", model, CARD)
        model.write_bytes(b"not onnx")
        children.last.kill()
        await until(lambda: len(children.children) == 2 and process._connection is None)  # StartFailed read

    run(scenario())
    assert not process.ready


def test_a_call_while_a_failed_child_is_still_exiting_starts_another(
    children: ThreadChildren, mnist_sample: Mnist, tmp_path: Path
) -> None:
    model = tmp_path / "model.onnx"
    shutil.copyfile(CNN, model)
    process = ModelProcess(["CPUExecutionProvider"], intra_op_threads=1, inter_op_threads=1)
    try:
        children.linger = True  # each child stays alive a while after its loop returns, as a process exiting does
        failed_start(children, process, model)
        assert children.last.is_alive()
        shutil.copyfile(CNN, model)
        values, _ = run(process.run("cnn", images(mnist_sample, 1), ["probabilities"]))
        assert values["probabilities"].shape == (1, 10)
        assert len(children.children) == 3
    finally:
        for child in children.children:
            child.linger.set()
        process.close()


def test_a_model_closed_while_its_process_could_not_start_is_not_opened_by_the_next(
    children: ThreadChildren, tmp_path: Path
) -> None:
    model = tmp_path / "model.onnx"
    shutil.copyfile(CNN, model)
    process = ModelProcess(["CPUExecutionProvider"], intra_op_threads=1, inter_op_threads=1)
    try:
        failed_start(children, process, model)
        run(process.close_model("cnn"))  # no process to tell
        assert run(process.open("lenet", MODELS_DIR / "lenet" / "model.onnx", read_card(MODELS_DIR / "lenet"))) == [
            "CPUExecutionProvider"
        ]
        assert children.last.models == []
    finally:
        process.close()
