"""BentoML serving the ONNX model with its adaptive batching: `bentoml serve peers_bentoml:Digits`, in BentoML's venv.

benchmarks.peers_frameworks copies this file and peers_digit.py into a folder and serves it with BentoML's own
virtual environment; PEER_MODEL_PATH names the ONNX file, PEER_WORKERS the worker processes.

The setup BentoML's documentation recommends for a CPU model ("Workers", "Adaptive batching", "Configurations"):
- `workers` = the cores (2 here; the docs' "cpu_count"), each a process with its own HTTP server, adaptive batching
  dispatcher and ONNX Runtime session with one intra-op thread, so the workers do not fight over the cores;
- `@bentoml.api(batchable=True)` on a function of a list of images: the dispatcher gathers concurrent requests into
  one call, up to `max_batch_size` 64 (the service's and MLServer's); `max_latency_ms` is BentoML's latency budget,
  past which it refuses requests with 503, set at 1 s (its 60 s default would hide an overload; much less refuses
  requests under c=64 on 2 cores).
The upload is a multipart field `file`, as for the service's /predict; BentoML decodes it into a PIL image.
"""

from __future__ import annotations

import os

import bentoml
import numpy as np
import peers_digit
from PIL.Image import Image

MAX_BATCH_SIZE = 64
MAX_LATENCY_MS = 1000


@bentoml.service(
    workers=int(os.environ.get("PEER_WORKERS", str(os.cpu_count() or 1))),
    resources={"cpu": str(os.cpu_count() or 1)},
    traffic={"timeout": 30},
    logging={"access": {"enabled": False}},  # a log line per request costs CPU; the service's bench runs log none
)
class Digits:
    def __init__(self) -> None:
        self.session = peers_digit.open_session()

    @bentoml.api(route="/predict", batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, file: list[Image]) -> list[dict[str, object]]:
        images = np.stack([peers_digit.image_pixels(image) for image in file])  # (N, 28, 28, 1)
        return [peers_digit.answer(row) for row in peers_digit.probabilities(self.session, images)]
