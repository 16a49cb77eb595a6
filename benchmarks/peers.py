"""The servers the service is measured against, each started by bench.py as `python -m benchmarks.peers KIND`.

- bare:  FastAPI endpoint that ignores its body and returns a constant; the HTTP part of the ceiling. An optional
         third argument is the number of uvicorn workers, as for the service.
- keras: the naive design: FastAPI + UploadFile, PIL, and the Keras model called once per request.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, UploadFile


def bare_app() -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    async def predict() -> dict[str, int]:
        return {"digit": 0}

    return app


def keras_app() -> FastAPI:
    """Loads build/checkpoints/<model>.keras when training left one; otherwise the same architecture untrained
    (the same compute per request, so the same throughput: that is all the benchmark reads from it)."""
    import keras
    from PIL import Image

    from training.cnn import build_cnn, build_lenet

    name = os.environ.get("BENCH_MODEL", "cnn")
    checkpoint = Path("build/checkpoints") / f"{name}.keras"
    model = (
        keras.models.load_model(checkpoint)
        if checkpoint.is_file()
        else (build_lenet() if name == "lenet" else build_cnn())
    )
    app = FastAPI()

    @app.post("/predict")
    def predict(file: Annotated[UploadFile, File()]) -> dict[str, object]:
        image = Image.open(io.BytesIO(file.file.read())).convert("L").resize((28, 28))
        x = (np.asarray(image, dtype=np.float32) / 255.0)[None, ..., None]
        logits = model.predict(x, verbose=0)[0]
        return {"digit": int(np.argmax(logits)), "checkpoint": checkpoint.is_file()}

    return app


if __name__ == "__main__":
    import uvicorn

    kind, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1
    uvicorn.run(
        f"benchmarks.peers:{kind}_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )
