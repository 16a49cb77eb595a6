"""Metrics of an exported model, measured with onnxruntime alone on the file the service will load."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from app.cards import INPUT_NAME, Metrics
from training.data import Split

BENCH_BATCH = 64


def session_for(path: Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def predict_probabilities(
    session: ort.InferenceSession, images: npt.NDArray[np.uint8], batch: int = 1000
) -> npt.NDArray[np.float32]:
    """(N, 28, 28) uint8 -> (N, 10) probabilities."""
    x = (images.astype(np.float32) / 255.0)[..., np.newaxis]
    parts = [session.run(["probabilities"], {INPUT_NAME: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(parts)


def confusion_matrix(labels: npt.NDArray[np.integer], predicted: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """(10, 10): rows are true digits, columns predictions."""
    matrix = np.zeros((10, 10), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    return matrix


def images_per_second(session: ort.InferenceSession, images: npt.NDArray[np.uint8], seconds: float = 2.0) -> float:
    """Throughput at batch 64 on the given session; repeated until `seconds` have passed."""
    x = (images[:BENCH_BATCH].astype(np.float32) / 255.0)[..., np.newaxis]
    session.run(["probabilities"], {INPUT_NAME: x})  # warm-up
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        session.run(["probabilities"], {INPUT_NAME: x})
        runs += 1
    return runs * len(x) / elapsed


def evaluate(path: Path, test: Split, validation: Split) -> tuple[Metrics, npt.NDArray[np.float32]]:
    """The card's metrics, and the test-set probabilities for the report's figures."""
    session = session_for(path)
    probabilities = predict_probabilities(session, test.images)
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(test.labels, predicted)
    diagonal = np.diag(matrix).astype(np.float64)
    val_predicted = predict_probabilities(session, validation.images).argmax(axis=1)
    metrics = Metrics(
        test_accuracy=round(float((predicted == test.labels).mean()), 5),
        test_images=len(test),
        validation_accuracy=round(float((val_predicted == validation.labels).mean()), 5),
        per_class_precision=_rounded(diagonal / np.maximum(matrix.sum(axis=0), 1)),
        per_class_recall=_rounded(diagonal / np.maximum(matrix.sum(axis=1), 1)),
        confusion_matrix=matrix.tolist(),
        images_per_second_per_core=round(images_per_second(session_for(path, threads=1), test.images), 1),
    )
    return metrics, probabilities


def _rounded(values: npt.NDArray[np.float64]) -> list[float]:
    return [round(float(v), 5) for v in values]
