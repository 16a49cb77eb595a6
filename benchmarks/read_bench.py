"""Throughput of POST /read: a 4-digit number (PNG, dark ink on white, 2x the MNIST scale) at 16 connections.

    python -m benchmarks.read_bench            # part of `make bench`; needs wrk

Prints requests/s and latency percentiles from wrk, the same load generator as benchmarks.bench, and the peak
resident memory of the whole service (every process it started) during the load.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.bench import MULTIPART, digits, multipart_body, png, serve, wrk
from benchmarks.peers_memory import peak_rss
from tests.conftest import free_port


def number_png(images: np.ndarray) -> bytes:
    """The digits side by side in 40-px cells, enlarged twice, dark ink on white."""
    row = np.zeros((40, 40 * len(images)), np.uint8)
    for k, image in enumerate(images):
        row[6:34, k * 40 + 6 : k * 40 + 34] = image
    enlarged = Image.fromarray(255 - row).resize((row.shape[1] * 2, 80), Image.Resampling.BILINEAR)
    return png(np.asarray(enlarged))


def write_numbers(folder: Path, count: int = 16, length: int = 4) -> list[Path]:
    images = digits(count * length)
    paths = []
    for index in range(count):
        path = folder / f"{index}.multipart"
        path.write_bytes(multipart_body(number_png(images[index * length : (index + 1) * length]), "number.png"))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16, help="wrk connections")
    parser.add_argument("--seconds", type=int, default=10, help="length of the measured run")
    parser.add_argument("--model", default="cnn", help="model to read with")
    args = parser.parse_args(argv)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"MNIST_PORT": str(port), "MNIST_GRPC_PORT": str(port + 1), "MNIST_LOG_LEVEL": "warning"}
    with tempfile.TemporaryDirectory() as folder:
        bodies = write_numbers(Path(folder))
        with (
            serve([sys.executable, "-m", "app"], f"{base}/health/ready", env) as service,
            peak_rss(service.pid) as peak,
        ):
            result = wrk(f"{base}/read?model={args.model}", bodies, MULTIPART, args.concurrency, args.seconds)
    report = {
        "route": "/read",
        "digits": 4,
        "concurrency": args.concurrency,
        **result,
        "peak_rss_mb": round(peak[0], 1),
    }
    print(json.dumps(report, indent=2))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
