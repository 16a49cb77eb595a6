"""ONNX Runtime in a child process of each worker, so that the event loop and the model run side by side.

With the model in a thread of the serving process, every call needs the GIL to start and to hand its result back,
and a busy event loop holds it: under load the model thread waits for the loop and the loop for the model, and a
worker serves requests and runs its model by turns (measured: each at half a core, the machine a quarter idle). A
child process shares no GIL: the loop and the model each keep a core busy. Calls go through one pipe and are
answered in order; the event loop reads each answer when the pipe is readable, with no thread of its own.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path

from app.cards import INPUT_NAME
from app.runtime.batcher import Images, Outputs
from app.runtime.session import open_session, session_options, warm_up

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0


class ModelProcessError(Exception):
    """ONNX Runtime failed on a call in the model process."""


class ModelProcessLost(ModelProcessError):
    """The model process stopped, or could not start: its calls fail, and the next call starts a new one."""


class ModelProcess:
    """One child process holding an ONNX Runtime session per model; `run` calls one of them.

    If the process dies (killed, out of memory), the calls it held fail and the next call starts a new one.
    """

    def __init__(
        self, models: dict[str, Path], providers: Sequence[str], intra_op_threads: int, inter_op_threads: int
    ) -> None:
        self._arguments = (dict(models), list(providers), intra_op_threads, inter_op_threads)
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: Connection | None = None
        self._waiting: deque[asyncio.Future[tuple[Outputs, float]]] = deque()
        self._lost = False  # its pipe closed: the process is gone, or on its way out

    def start(self) -> None:
        """Start the child; it opens its sessions while the first calls queue in the pipe."""
        context = multiprocessing.get_context("spawn")  # a fork would copy the parent's threads' locks
        self._connection, child_end = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child_end, *self._arguments), name="mnist-model", daemon=True
        )
        self._process.start()
        child_end.close()
        self._lost = False

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Block until the child has opened and warmed up its sessions; ModelProcessLost if it cannot."""
        assert self._connection is not None
        if not self._connection.poll(timeout_s):
            raise ModelProcessLost(f"the model process did not start within {timeout_s:g} s")
        try:
            status, detail, _ = self._connection.recv()
        except (EOFError, OSError):
            raise ModelProcessLost(f"the model process exited with code {self._exit_code()}") from None
        if status != "ready":
            raise ModelProcessLost(f"the model process could not open the models: {detail}")

    async def run(self, model: str, images: Images, outputs: Sequence[str]) -> tuple[Outputs, float]:
        """The named outputs of one model call, and the seconds ONNX Runtime took."""
        if self._process is None or self._lost or not self._process.is_alive():
            log.error("the model process is not running (exit code %s): starting a new one", self._exit_code())
            self._abandon(ModelProcessLost(f"the model process stopped (exit code {self._exit_code()})"))
            self.start()  # this call waits in the pipe while the new process opens its sessions
        assert self._connection is not None
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.add_reader(self._connection.fileno(), self._read_answers)
            # uvloop makes a watched descriptor non-blocking; recv and send here move whole messages.
            os.set_blocking(self._connection.fileno(), True)
        future: asyncio.Future[tuple[Outputs, float]] = loop.create_future()
        self._waiting.append(future)
        self._connection.send((model, images, tuple(outputs)))
        return await future

    def _read_answers(self) -> None:
        assert self._connection is not None
        try:
            while self._waiting and self._connection.poll():
                status, value, seconds = self._connection.recv()
                if status == "ready":  # a restarted process, before its first answer
                    continue
                if status == "failed":
                    raise ModelProcessLost(f"the model process could not open the models: {value}")
                future = self._waiting.popleft()
                if future.done():  # its caller stopped waiting (timed out): the answer is dropped
                    continue
                if status == "ok":
                    future.set_result((value, seconds))
                else:
                    future.set_exception(ModelProcessError(value))
        except (EOFError, OSError):
            self._lost = True
            self._fail_waiting(ModelProcessLost(f"the model process stopped (exit code {self._exit_code()})"))
        except ModelProcessLost as exc:
            self._lost = True
            self._fail_waiting(exc)
        if not self._waiting:
            asyncio.get_running_loop().remove_reader(self._connection.fileno())

    def _abandon(self, error: ModelProcessLost) -> None:
        """Let go of the current process's pipe; the calls still waiting on it fail."""
        if self._waiting:
            asyncio.get_running_loop().remove_reader(self._connection.fileno())  # type: ignore[union-attr]
            self._fail_waiting(error)
        if self._connection is not None:
            self._connection.close()  # the child, if it still runs, reads end-of-file and returns
            self._connection = None

    def _fail_waiting(self, error: ModelProcessLost) -> None:
        log.error("%s: %d calls failed", error, len(self._waiting))
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def _exit_code(self) -> int | None:
        return None if self._process is None else self._process.exitcode

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the child: it finishes its call in progress, then exits. Calls still waiting fail."""
        self._abandon(ModelProcessLost("the service is stopping"))
        if self._process is not None:
            self._process.join(timeout_s)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process = None


def _serve(
    connection: Connection,
    models: dict[str, Path],
    providers: list[str],
    intra_op_threads: int,
    inter_op_threads: int,
) -> None:
    """The child: open the sessions, then answer calls in order until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent stops us
    try:
        options = session_options(intra_op_threads, inter_op_threads)
        sessions = {name: open_session(path, providers, options) for name, path in models.items()}
        for session in sessions.values():
            warm_up(session)
    except Exception as exc:  # reported to the parent, which serves from threads instead
        connection.send(("failed", str(exc).splitlines()[0], 0.0))
        return
    connection.send(("ready", None, 0.0))
    while True:
        try:
            model, images, outputs = connection.recv()
        except (EOFError, OSError):
            return
        start = time.perf_counter()
        try:
            values = sessions[model].run(list(outputs), {INPUT_NAME: images})
        except Exception as exc:  # one bad call: its caller gets the error, the process goes on
            connection.send(("error", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}", 0.0))
            continue
        connection.send(("ok", dict(zip(outputs, values, strict=True)), time.perf_counter() - start))
