"""Latency of each explanation method at batch 1 (one image), per model: `python -m benchmarks.explain_bench`.

Times app.explain.explain on ONNX Runtime sessions opened as the service opens them (app.runtime.session), with
one intra-op thread (what the service gives a 2-core worker's models beside its event loop) and with two.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from app.cards import read_card
from app.explain import Options, explain, offered_methods, predicted_digits, session_forward
from app.runtime.session import CPU, open_session, session_options
from benchmarks.explain_eval import read_test_digits

MODELS = ["cnn", "lenet", "softmax", "svm"]


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/mnist"), help="MNIST IDX files")
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="models and cards")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per figure")
    args = parser.parse_args()
    image = read_test_digits(args.data_dir, 1)[0]
    print(f"{'model':<9}{'method':<22}{'settings':<18}{'1 thread':>10}{'2 threads':>11}")
    for name in MODELS:
        folder = args.models_dir / name
        card = read_card(folder)
        assert card.explain is not None
        timings = {}
        for threads in (1, 2):
            options = session_options(threads, 1)
            model = open_session(folder / card.file, [CPU], options)
            explainer = open_session(folder / card.explain.file, [CPU], options)
            for method in offered_methods(card, explainer):
                call = partial(
                    explain,
                    card=card,
                    forward=session_forward(model),
                    explainer=explainer,
                    image=image,
                    method=method,
                    target=predicted_digits(session_forward(model), image[np.newaxis])[0],
                    options=Options(),
                )
                timings[method, threads] = median_ms(call, args.repeats)
        for method in offered_methods(card, explainer):
            shown = {"integrated_gradients": "steps 32", "occlusion": "patch 4 stride 2"}.get(method, "")
            print(f"{name:<9}{method:<22}{shown:<18}{timings[method, 1]:>8.1f} ms{timings[method, 2]:>8.1f} ms")


if __name__ == "__main__":
    main()
