"""LitServe serving the ONNX model with its own dynamic batching: `python peers_litserve.py PORT`, in LitServe's venv.

benchmarks.peers_frameworks copies this file and peers_digit.py into a folder and runs it with LitServe's own
virtual environment; PEER_MODEL_PATH names the ONNX file, PEER_WORKERS the inference workers.

The setup LitServe's documentation recommends for a CPU model (LitServer's docstring and "Batching" page):
- accelerator "cpu", `workers_per_device` = the cores (2 here), each worker an ONNX Runtime session with one
  intra-op thread, so the workers do not fight over the cores;
- `fast_queue=True` (ZeroMQ between the HTTP servers and the workers, "for >100 RPS");
- `num_api_servers` left at its default, one HTTP server process per inference worker;
- batching in the LitAPI: `max_batch_size` 64 (the service's and MLServer's), `batch_timeout` 2 ms (MLServer's
  `max_batch_time`): a batch closes when full or 2 ms after its first request.
decode_request runs in the inference worker: it decodes the upload and prepares the 28x28 input there.
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation and must see the Request class
# itself, not the string "Request", to hand it the parsed form rather than the request object.
import os
import sys
from typing import Any

import litserve as ls
import numpy as np
import peers_digit
from fastapi import Request

MAX_BATCH_SIZE = 64
BATCH_TIMEOUT_S = 0.002


class DigitAPI(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        self.session = peers_digit.open_session()

    def decode_request(self, request: Request) -> np.ndarray:
        upload = request["file"]  # a multipart form: LitServe hands decode_request the parsed form
        return peers_digit.upload_pixels(upload.file.read())

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)  # (N, 28, 28, 1)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return peers_digit.probabilities(self.session, images)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, row: np.ndarray) -> dict[str, Any]:
        return peers_digit.answer(row)


def main(port: int) -> None:
    api = DigitAPI(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S, api_path="/predict")
    workers = int(os.environ.get("PEER_WORKERS", str(os.cpu_count() or 1)))
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=workers, fast_queue=True)
    server.run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main(int(sys.argv[1]))
