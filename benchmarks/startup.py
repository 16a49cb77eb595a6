"""Start-up time and health-check cost, the figures the deployment's probe budgets rest on.

    flock /tmp/cpu.lock python -m benchmarks.startup [--runs 5]

Start-up: from launching `python -m app` (the bundled models, default settings) to the first 200 from /health/ready,
which needs every model loaded and warmed up. The Kubernetes startupProbe allows 120 s (deploy/k8s/deployment.yaml).
Health check: the CPU time of one `python -m app.healthcheck` against the ready service (it runs every 10 s).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

from benchmarks.bench import ROOT

POLL_S = 0.05


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def seconds_to_ready(port: int) -> float:
    """Launch the service, wait for /health/ready, stop it; the seconds it took to become ready."""
    env = {**os.environ, "MNIST_PORT": str(port), "MNIST_GRPC_PORT": str(port + 1), "MNIST_LOG_LEVEL": "warning"}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "app"], env=env, cwd=ROOT)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited with {process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(POLL_S)
    finally:
        process.terminate()
        process.wait(timeout=60)


def healthcheck_cpu_ms(port: int, runs: int) -> float:
    """Median CPU time (user + system) of one health-check process, in ms."""
    env = {**os.environ, "MNIST_PORT": str(port)}
    samples = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-m", "app.healthcheck"], env=env, cwd=ROOT, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        samples.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="service starts to time")
    args = parser.parse_args()
    times = [seconds_to_ready(free_port()) for _ in range(args.runs)]
    print(f"start-up to ready: median {statistics.median(times):.1f} s, max {max(times):.1f} s over {args.runs} runs")
    port = free_port()
    env = {**os.environ, "MNIST_PORT": str(port), "MNIST_GRPC_PORT": str(port + 1), "MNIST_LOG_LEVEL": "warning"}
    process = subprocess.Popen([sys.executable, "-m", "app"], env=env, cwd=ROOT)
    try:
        while subprocess.run([sys.executable, "-m", "app.healthcheck"], env=env, capture_output=True).returncode:
            time.sleep(0.2)
        print(f"health check: {healthcheck_cpu_ms(port, 10):.0f} ms of CPU per run (median of 10)")
    finally:
        process.terminate()
        process.wait(timeout=60)


if __name__ == "__main__":
    main()
