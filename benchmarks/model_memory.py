"""Resident memory of one worker and of its model process, after start-up and 200 /predict calls on each model.

    flock /tmp/cpu.lock python -m benchmarks.model_memory [--root CHECKOUT] [--model-process true|false]

--root serves another checkout of the service (for a before/after figure: the same bundled models). With the model
process, the worker should hold no ONNX Runtime session: its own resident memory is then that of the service less
the models.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from benchmarks.bench import ROOT, digits, png, serve
from benchmarks.startup import free_port

MODELS = ("svm", "softmax", "lenet", "cnn")


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def model_processes(pid: int) -> list[int]:
    """The worker's multiprocessing children (its model process), not its resource tracker."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(c) for c in found if b"multiprocessing.spawn" in Path(f"/proc/{c}/cmdline").read_bytes()]


def exercise(port: int, calls: int) -> None:
    images = [png(d) for d in digits(32)]
    for model in MODELS:
        for i in range(calls):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/predict?model={model}", images[i % 32], {"Content-Type": "image/png"}
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose app/ to serve (default: this one)")
    parser.add_argument("--model-process", default="true", choices=["true", "false"], help="MNIST_MODEL_PROCESS")
    parser.add_argument("--calls", type=int, default=200, help="/predict calls per model before measuring")
    args = parser.parse_args()
    port = free_port()
    env = {
        "MNIST_PORT": str(port),
        "MNIST_LOG_LEVEL": "warning",
        "MNIST_MODEL_PROCESS": args.model_process,
        "MNIST_MODELS_DIR": str(ROOT / "models"),
    }
    command = [sys.executable, "-m", "app"]
    with serve(command, f"http://127.0.0.1:{port}/health/ready", env, cwd=args.root.resolve()) as server:
        exercise(port, args.calls)
        time.sleep(1.0)
        worker = rss_mb(server.pid)
        children = [rss_mb(c) for c in model_processes(server.pid)]
    child = f", model process {children[0]:.0f} MB" if children else ", no model process"
    print(f"{args.root.resolve()}: worker {worker:.0f} MB{child}, total {worker + sum(children):.0f} MB")


if __name__ == "__main__":
    main()
