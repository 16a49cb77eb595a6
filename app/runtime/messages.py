"""What the worker and its model process say to each other over their pipe: one NamedTuple per kind of message.

The worker sends Open, Run and Close; the process answers each Open and Run, in the order they came, with Opened,
Answer or Failed (Close has no answer). Ready or StartFailed comes once, when a new process has opened the sessions
it was started with. NamedTuples, not dataclasses: they pickle as small as bare tuples (Run and Answer are on every
request's path).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from app.cards import ModelCard

Images = npt.NDArray[np.float32]
Outputs = dict[str, npt.NDArray[np.float32]]


class Open(NamedTuple):
    """Open the model file under this key, check its graph against the card, warm it up."""

    key: str
    path: Path
    card: ModelCard


class Run(NamedTuple):
    """Call the session opened under `key` on these images."""

    key: str
    images: Images
    outputs: tuple[str, ...]


class Close(NamedTuple):
    """Drop the session opened under `key` (its calls sent before this one have been answered)."""

    key: str


class Ready(NamedTuple):
    """A new process has opened the sessions it was started with."""


class StartFailed(NamedTuple):
    """A new process could not open the sessions it was started with."""

    error: str


class Opened(NamedTuple):
    """The answer to Open: the session serves, on these providers."""

    providers: list[str]


class Answer(NamedTuple):
    """The answer to Run: the outputs, and the seconds ONNX Runtime took."""

    values: Outputs
    seconds: float


class Failed(NamedTuple):
    """The answer to an Open or Run that failed; the process goes on."""

    error: str


Request = Open | Run | Close
Reply = Ready | StartFailed | Opened | Answer | Failed
