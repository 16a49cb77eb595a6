"""ONNX Runtime in a child process of each worker, so that the event loop and the model run side by side.

With the model in a thread of the serving process, every call needs the GIL to start and to hand its result back,
and a busy event loop holds it: under load the model thread waits for the loop and the loop for the model, and a
worker serves requests and runs its model by turns (measured: each at half a core, the machine a quarter idle). A
child process shares no GIL: the loop and the model each keep a core busy. Requests (app.runtime.messages) go
through one pipe and are answered in order; the event loop reads each answer when the pipe is readable, with no
thread of its own. The worker itself opens no session: the child opens, checks and warms up each model it is sent.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path

import onnxruntime as ort

from app.cards import ModelCard
from app.runtime.executor import run_session
from app.runtime.messages import (
    Answer,
    Close,
    Failed,
    Images,
    Open,
    Opened,
    Outputs,
    Ready,
    Reply,
    Request,
    Run,
    StartFailed,
)
from app.runtime.session import ModelLoadError, open_checked_session, session_options

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0


class ModelProcessError(Exception):
    """ONNX Runtime failed on a call in the model process."""


class ModelProcessLost(ModelProcessError):
    """The model process stopped, or could not start: its calls fail, and a new one starts."""


class ModelProcess:
    """One child process holding the ONNX Runtime sessions it was sent (an Executor).

    If the process dies (killed, out of memory), the calls it held fail at once and a new process starts as soon as
    the event loop notices (its pipe closes), opening the sessions the old one held; calls made meanwhile wait for it
    to be ready. `ready` is false while it is down or starting, for the readiness probe.
    """

    def __init__(self, providers: Sequence[str], intra_op_threads: int, inter_op_threads: int) -> None:
        self._arguments = (list(providers), intra_op_threads, inter_op_threads)
        self._open: dict[str, Open] = {}  # the sessions the process holds: a new process opens them again
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: Connection | None = None
        self._waiting: deque[asyncio.Future[Reply]] = deque()
        self._starting: list[asyncio.Future[None]] = []  # calls waiting for a new process to open its sessions
        self._ready = False  # the current process has opened its sessions
        self._lost = False  # its pipe closed: the process is gone, or on its way out
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that watches the pipe

    @property
    def ready(self) -> bool:
        """The process runs and has opened its sessions."""
        return self._ready and not self._lost and self._process is not None and self._process.is_alive()

    def start(self) -> None:
        """Start the child; it opens the sessions this process held, then says Ready."""
        context = multiprocessing.get_context("spawn")  # a fork would copy the parent's threads' locks
        self._connection, child_end = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(child_end, list(self._open.values()), *self._arguments),
            name="mnist-model",
            daemon=True,
        )
        self._process.start()
        child_end.close()
        self._lost, self._ready = False, False

    async def started(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until the child is ready; ModelProcessLost if it cannot start."""
        self._watch()
        if not self._ready:
            await self._wait_started(timeout_s)

    async def open(self, key: str, path: Path, card: ModelCard) -> list[str]:
        """The child opens the file, checks it against the card and warms it up; ModelLoadError if it cannot."""
        request = Open(key, path, card)
        try:
            reply = await self._request(request)
        except ModelProcessError as exc:
            raise ModelLoadError(str(exc)) from exc
        assert isinstance(reply, Opened)
        self._open[key] = request
        return reply.providers

    async def run(self, key: str, images: Images, outputs: Sequence[str]) -> tuple[Outputs, float]:
        """The named outputs of one model call, and the seconds ONNX Runtime took."""
        reply = await self._request(Run(key, images, tuple(outputs)))
        assert isinstance(reply, Answer)
        return reply.values, reply.seconds

    async def close_model(self, key: str) -> None:
        """The child drops the session once the calls sent before have been answered; a new process won't open it."""
        if self._open.pop(key, None) is not None and self._connection is not None and not self._lost:
            self._connection.send(Close(key))

    async def _request(self, request: Request) -> Reply:
        if self._process is None or self._lost or not self._process.is_alive():
            self._replace(ModelProcessLost(f"the model process stopped (exit code {self._exit_code()})"))
        self._watch()
        if not self._ready:
            # Sent now, a large call would block the event loop on the pipe until the new process reads it.
            await self._wait_started(START_TIMEOUT_S)
        assert self._connection is not None
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._connection.send(request)
        return await future

    async def _wait_started(self, timeout_s: float) -> None:
        starting = asyncio.get_running_loop().create_future()
        self._starting.append(starting)
        try:
            await asyncio.wait_for(starting, timeout_s)
        except TimeoutError:
            raise ModelProcessLost(f"the model process did not start within {timeout_s:g} s") from None

    def _watch(self) -> None:
        """Read the pipe from this event loop whenever it is readable: answers, and the process's end, as they come."""
        loop = asyncio.get_running_loop()
        if self._loop is loop or self._connection is None:
            return
        self._unwatch()
        loop.add_reader(self._connection.fileno(), self._read_answers)
        # uvloop makes a watched descriptor non-blocking; recv and send here move whole messages.
        os.set_blocking(self._connection.fileno(), True)
        self._loop = loop

    def _unwatch(self) -> None:
        if self._loop is not None and not self._loop.is_closed() and self._connection is not None:
            self._loop.remove_reader(self._connection.fileno())
        self._loop = None

    def _read_answers(self) -> None:
        assert self._connection is not None
        try:
            while self._connection.poll():
                self._settle(self._connection.recv())
        except (EOFError, OSError):
            self._lost_now(ModelProcessLost(f"the model process stopped (exit code {self._exit_code()})"))
        except ModelProcessLost as exc:
            self._lost_now(exc)

    def _settle(self, reply: Reply) -> None:
        if isinstance(reply, Ready):  # a new process has opened its sessions: the calls waiting for it go
            self._ready = True
            _settle_all(self._starting)
            return
        if isinstance(reply, StartFailed):
            raise ModelProcessLost(f"the model process could not open the models: {reply.error}")
        future = self._waiting.popleft()
        if future.done():  # its caller stopped waiting (timed out): the answer is dropped
            return
        if isinstance(reply, Failed):
            future.set_exception(ModelProcessError(reply.error))
        else:
            future.set_result(reply)

    def _lost_now(self, error: ModelProcessLost) -> None:
        """The process is gone: its calls fail now, and a new one starts at once, unless this one never started."""
        self._lost = True
        if not self._ready:  # it could not open the models: the next call tries again, not a loop of restarts
            self._abandon(error)
            return
        self._replace(error)
        self._watch()

    def _replace(self, error: ModelProcessLost) -> None:
        log.error("%s: starting a new model process", error)
        self._abandon(error)
        self.start()

    def _abandon(self, error: ModelProcessLost) -> None:
        """Let go of the current process's pipe; the calls still waiting on it fail."""
        self._unwatch()
        self._fail_waiting(error)
        if self._connection is not None:
            self._connection.close()  # the child, if it still runs, reads end-of-file and returns
            self._connection = None

    def _fail_waiting(self, error: ModelProcessLost) -> None:
        if self._waiting or self._starting:
            log.error("%s: %d calls failed", error, len(self._waiting) + len(self._starting))
        _settle_all(self._starting, error)
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def _exit_code(self) -> int | None:
        return None if self._process is None else self._process.exitcode

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the child: it finishes its call in progress, then exits. Calls still waiting fail."""
        self._abandon(ModelProcessLost("the service is stopping"))
        self._open.clear()
        if self._process is not None:
            self._process.join(timeout_s)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process = None


def _settle_all(futures: list[asyncio.Future[None]], error: Exception | None = None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
    futures.clear()


def _first_line(exc: Exception) -> str:
    return f"{str(exc).splitlines()[0][:300]}" if str(exc) else type(exc).__name__


def _serve(
    connection: Connection, models: list[Open], providers: list[str], intra_op_threads: int, inter_op_threads: int
) -> None:
    """The child: open the sessions it starts with, then answer requests in order until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent stops us
    options = session_options(intra_op_threads, inter_op_threads)
    try:
        sessions = {m.key: open_checked_session(m.path, providers, options, m.card) for m in models}
    except Exception as exc:  # reported to the parent, whose calls fail until a later one starts a process again
        connection.send(StartFailed(_first_line(exc)))
        return
    connection.send(Ready())
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        if isinstance(request, Close):
            sessions.pop(request.key, None)
            continue
        connection.send(_answer(request, sessions, providers, options))


def _answer(
    request: Run | Open, sessions: dict[str, ort.InferenceSession], providers: list[str], options: ort.SessionOptions
) -> Reply:
    """One request's answer; a failure is answered to its caller, and the process goes on."""
    try:
        if isinstance(request, Run):
            return Answer(*run_session(sessions[request.key], request.images, request.outputs))
        # Opened here, the session keeps the other models waiting while it loads and warms up (measured in README).
        session = open_checked_session(request.path, providers, options, request.card)
    except Exception as exc:
        return Failed(f"{type(exc).__name__}: {_first_line(exc)}" if isinstance(request, Run) else _first_line(exc))
    sessions[request.key] = session
    return Opened(session.get_providers())
