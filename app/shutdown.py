"""Readiness turns false the moment the process is asked to stop, before uvicorn starts draining its connections."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_stop_signal(mark_draining: Callable[[], None]) -> bool:
    """Chain mark_draining in front of the current SIGTERM/SIGINT handlers (uvicorn's, once it serves); False where
    signals cannot be handled (not the main thread, e.g. under a test client)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in STOP_SIGNALS:
        previous = signal.getsignal(sig)

        def handler(number: int, frame: FrameType | None, previous: object = previous) -> None:
            mark_draining()
            if callable(previous):
                previous(number, frame)
            else:  # the default action (or none): put it back and let it happen
                signal.signal(number, previous or signal.SIG_DFL)
                signal.raise_signal(number)

        signal.signal(sig, handler)
    return True
