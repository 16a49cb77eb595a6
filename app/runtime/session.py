"""ONNX Runtime sessions: provider choice (reported, never silently changed), threads, checks, warm-up."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from app.cards import INPUT_NAME, CompanionFile, ModelCard

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
Provider = Literal["auto", "cpu", "cuda"]


class ModelLoadError(Exception):
    """A model file is missing, corrupt, or does not match its card."""


def requested_providers(choice: Provider, *, strict: bool = False) -> list[str]:
    """The providers to ask ONNX Runtime for; `cuda` without CUDA falls back to CPU (warned), or fails if strict."""
    available = ort.get_available_providers()
    if choice == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if choice == "cuda":
        if strict:
            raise ModelLoadError(
                f"MNIST_PROVIDER=cuda with MNIST_STRICT_PROVIDER, but onnxruntime offers only {available}"
            )
        log.warning("MNIST_PROVIDER=cuda but onnxruntime offers only %s: falling back to CPU", available)
    return [CPU]


def session_options(intra_op_threads: int, inter_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle ONNX Runtime threads would otherwise spin, taking the cores that decode and answer requests.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def open_session(path: Path, providers: Sequence[str], options: ort.SessionOptions) -> ort.InferenceSession:
    """A session on the file; reads back the providers ONNX Runtime really uses and warns on a fallback."""
    try:
        session = ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own unexported exception types
        raise ModelLoadError(f"{path}: {str(exc).splitlines()[0][:300]}") from exc
    actual = session.get_providers()
    if CUDA in providers and CUDA not in actual:
        log.warning("%s: CUDA was requested but onnxruntime fell back to %s", path.name, actual)
    return session


def open_companion(
    folder: Path, companion: CompanionFile, outputs: set[str], providers: Sequence[str], options: ort.SessionOptions
) -> ort.InferenceSession:
    """A session on a file beside a model (explain.onnx, pair.onnx, line.onnx) whose checksum matches its card's and
    whose graph has the outputs the service reads."""
    path = folder / companion.file
    if hashlib.sha256(path.read_bytes()).hexdigest() != companion.file_sha256:
        raise ModelLoadError(f"{path} does not match the checksum in its card")
    session = open_session(path, providers, options)
    missing = outputs - {o.name for o in session.get_outputs()}
    if missing:
        raise ModelLoadError(f"{path} lacks the outputs {', '.join(sorted(missing))}")
    return session


def optional_companion(
    folder: Path,
    companion: CompanionFile | None,
    outputs: set[str],
    providers: Sequence[str],
    options: ort.SessionOptions,
    warm_up: Callable[[ort.InferenceSession], object],
    without: str,
) -> ort.InferenceSession | None:
    """open_companion's session, warmed up by one call; None when the card names no such file or it cannot be used,
    logged as `without` (what the model does without it) and the reason: the model still serves."""
    if companion is None:
        return None
    try:
        session = open_companion(folder, companion, outputs, providers, options)
        warm_up(session)
    except (OSError, ModelLoadError) as exc:
        log.error("%s: %s", without, str(exc).splitlines()[0])
        return None
    return session


def check_signature(session: ort.InferenceSession, card: ModelCard) -> None:
    """The graph must have the card's input and outputs: the service trusts the card for everything else."""
    inputs = {i.name: i for i in session.get_inputs()}
    if INPUT_NAME not in inputs or inputs[INPUT_NAME].type != "tensor(float)":
        raise ModelLoadError(f"{card.name}: the graph has no float input {INPUT_NAME!r}")
    graph_outputs = {o.name for o in session.get_outputs()}
    missing = {o.name for o in card.outputs} - graph_outputs
    if missing:
        raise ModelLoadError(f"{card.name}: the graph lacks the outputs {sorted(missing)} listed in its card")


def warm_up(session: ort.InferenceSession, batch_sizes: Sequence[int] = (1, 8)) -> None:
    """Run the graph once per batch size so the first request pays no allocation cost."""
    for size in batch_sizes:
        session.run(None, {INPUT_NAME: np.zeros((size, 28, 28, 1), dtype=np.float32)})


def open_checked_session(
    path: Path, providers: Sequence[str], options: ort.SessionOptions, card: ModelCard
) -> ort.InferenceSession:
    """A session on the file whose graph matches its card, warmed up: what a model must pass before it serves."""
    session = open_session(path, providers, options)
    check_signature(session, card)
    warm_up(session)
    return session
