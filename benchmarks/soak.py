"""make soak: two minutes at 64 concurrent clients mixing valid and invalid requests, against one service.

Every request says which status it expects (in X-Request-ID, echoed by the service); the run reports the
unexpected ones, and the service's resident memory after warm-up and at the end (growth must stay under 10%).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.bench import BENCH, MULTIPART, ROOT, digits, multipart_body, png, serve

MAX_GROWTH = 0.10


def write_cases(folder: Path) -> list[str]:
    """FILE:CONTENT_TYPE:PATH:STATUS arguments for soak.lua: about two valid requests for each invalid one."""
    folder.mkdir(parents=True, exist_ok=True)
    images = digits(8)
    v2 = {
        "inputs": [{"name": "image", "shape": [1, 28, 28, 1], "datatype": "UINT8", "data": images[0].ravel().tolist()}]
    }
    bad_v2 = {"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]}
    cases: list[tuple[str, bytes, str, str, int]] = [
        *((f"valid{i}", multipart_body(png(image)), MULTIPART, "/predict", 200) for i, image in enumerate(images)),
        ("raw", png(images[1]), "image/png", "/predict?model=lenet", 200),
        ("photo", png(255 - np.kron(images[2], np.ones((8, 8), np.uint8))), "image/png", "/predict?model=svm", 200),
        ("v2", json.dumps(v2).encode(), "application/json", "/v2/models/cnn/infer", 200),
        ("activations", multipart_body(png(images[3])), MULTIPART, "/activations?model=lenet&encoding=base64", 200),
        ("text", multipart_body(b"hello"), MULTIPART, "/predict", 415),
        ("blank", multipart_body(png(np.zeros((40, 40), np.uint8))), MULTIPART, "/predict", 422),
        ("empty", multipart_body(b""), MULTIPART, "/predict", 400),
        ("truncated", multipart_body(png(images[4])[:100]), MULTIPART, "/predict", 400),
        ("unknown-model", multipart_body(png(images[5])), MULTIPART, "/predict?model=nope", 404),
        ("bad-v2", json.dumps(bad_v2).encode(), "application/json", "/v2/models/cnn/infer", 400),
        ("wrong-type", b"abc", "text/plain", "/predict", 415),
    ]
    arguments = []
    for name, body, content_type, path, status in cases:
        target = folder / f"{name}.body"
        target.write_bytes(body)
        arguments.append(f"{target}:{content_type}:{path}:{status}")
    return arguments


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn workers), in MB."""
    pids = [pid, *map(int, subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split())]
    total_kb = 0
    for p in pids:
        status = Path(f"/proc/{p}/status").read_text()
        total_kb += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return total_kb / 1024


def run_wrk(url: str, arguments: list[str], seconds: int, concurrency: int) -> dict[str, object]:
    command = ["wrk", "-t", "2", "-c", str(concurrency), "-d", f"{seconds}s", "--timeout", "10s",
               "-s", str(BENCH / "soak.lua"), url, "--", *arguments]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(re.search(r"^JSON (.*)$", output, re.MULTILINE).group(1))  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=120, help="length of the soak")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent connections")
    parser.add_argument("--port", type=int, default=18800, help="local port of the service")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "soak.json", help="JSON report")
    args = parser.parse_args(argv)
    arguments = write_cases(args.out.parent / "soak-bodies")
    url = f"http://127.0.0.1:{args.port}"
    env = {"MNIST_PORT": str(args.port), "MNIST_GRPC_PORT": str(args.port + 1), "MNIST_LOG_LEVEL": "warning"}
    with serve([sys.executable, "-m", "app"], f"{url}/health/ready", env) as process:
        run_wrk(url, arguments, 5, args.concurrency)  # warm-up: allocator pools and caches reach their size
        start = rss_mb(process.pid)
        result = run_wrk(url, arguments, args.seconds, args.concurrency)
        end = rss_mb(process.pid)
    growth = (end - start) / start
    report = {**result, "rss_start_mb": round(start, 1), "rss_end_mb": round(end, 1), "rss_growth": round(growth, 4)}
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    ok = result["unexpected"] == 0 and result["errors_connect"] == 0 and growth < MAX_GROWTH
    print(f"soak: {'PASS' if ok else 'FAIL'} (unexpected statuses {result['unexpected']}, RSS growth {growth:.1%})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
