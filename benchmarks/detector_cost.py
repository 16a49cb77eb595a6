"""What the not-a-digit score costs: ONNX Runtime time per call with and without `digit_score`, one thread.

python -m benchmarks.detector_cost          # run it alone on the machine (flock /tmp/cpu.lock on a shared one)
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort

from tests.helpers import MODELS_DIR

SECONDS = 2.0


def microseconds_per_call(session: ort.InferenceSession, outputs: list[str], batch: int) -> float:
    images = np.random.default_rng(0).random((batch, 28, 28, 1), dtype=np.float32)
    session.run(outputs, {"image": images})  # warm-up
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < SECONDS:
        session.run(outputs, {"image": images})
        calls += 1
    return elapsed / calls * 1e6


def main() -> None:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    print(f"{'model':<9}{'batch':>6}{'probabilities':>16}{'+ digit_score':>16}{'extra':>8}")
    for name in ("svm", "softmax", "lenet", "cnn"):
        session = ort.InferenceSession(str(MODELS_DIR / name / "model.onnx"), options, ["CPUExecutionProvider"])
        for batch in (1, 64):
            plain = microseconds_per_call(session, ["probabilities"], batch)
            scored = microseconds_per_call(session, ["probabilities", "digit_score"], batch)
            print(f"{name:<9}{batch:>6}{plain:>14.0f}us{scored:>14.0f}us{scored / plain - 1:>8.1%}")


if __name__ == "__main__":
    main()
