"""The work every framework peer does per image, shared so that LitServe and BentoML do exactly the same.

It is what the service's /predict does for an upload that already is an MNIST digit (the benchmark's uploads: 28x28
grey PNGs of MNIST test digits, which the service uses as they are): decode the PNG, grey, resize to 28x28, scale to
[0, 1], run the ONNX model for its calibrated probabilities, answer the digit and the ten probabilities as JSON.
Imports only what the peers' own virtual environments install (numpy, Pillow, onnxruntime): no `app`, no FastAPI.
"""

from __future__ import annotations

import io
import os

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from PIL import Image

MODEL_PATH_ENV = "PEER_MODEL_PATH"  # the ONNX file, set by benchmarks.peers_frameworks
THREADS_ENV = "PEER_INTRA_OP_THREADS"
SIDE = 28


def open_session(path: str | None = None, threads: int | None = None) -> ort.InferenceSession:
    """The model named by PEER_MODEL_PATH, on the CPU, with PEER_INTRA_OP_THREADS threads per call (default 1)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads is not None else int(os.environ.get(THREADS_ENV, "1"))
    options.inter_op_num_threads = 1
    model = path or os.environ[MODEL_PATH_ENV]
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def image_pixels(image: Image.Image) -> npt.NDArray[np.float32]:
    """(28, 28, 1) in [0, 1]: the model's input for one image."""
    grey = image.convert("L")
    if grey.size != (SIDE, SIDE):
        grey = grey.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    return (np.asarray(grey, dtype=np.float32) / 255.0)[..., np.newaxis]


def upload_pixels(data: bytes) -> npt.NDArray[np.float32]:
    """The model's input for one uploaded image file."""
    with Image.open(io.BytesIO(data)) as image:
        return image_pixels(image)


def probabilities(session: ort.InferenceSession, images: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(N, 10) calibrated probabilities for (N, 28, 28, 1) images, in one ONNX Runtime call."""
    result: npt.NDArray[np.float32] = session.run(["probabilities"], {"image": images})[0]
    return result


def answer(row: npt.NDArray[np.float32]) -> dict[str, object]:
    """The JSON body for one image, the fields of the service's answer that this work computes."""
    return {"digit": int(np.argmax(row)), "probabilities": [round(float(p), 6) for p in row]}
