"""A burst of the largest images the service accepts, against one running service: peak memory, statuses, and the
latency of ordinary /predict calls meanwhile. `make soak` runs it after its mixed load; the test suite runs it scaled.

Memory is the resident set of the whole service (the server, its workers and their model processes), sampled
every 20 ms while the burst runs, and again `settle_s` after it.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.bench import digits, png, serve
from benchmarks.soak import rss_mb

SAMPLE_INTERVAL_S = 0.02


def large_jpeg(side: int = 6000) -> bytes:
    """A photo-like digit filling a side x side JPEG: ~600 KB at 6000 px, 36 M pixels once decoded."""
    page = Image.new("L", (side, side), 235)
    ImageDraw.Draw(page).line([(side // 3, side // 4), (2 * side // 3, side // 4), (side // 2, 3 * side // 4)],
                              fill=30, width=side // 25)  # fmt: skip
    noise = np.random.default_rng(0).integers(-2, 3, (side, side), dtype=np.int16)
    textured = Image.fromarray(np.clip(np.asarray(page, np.int16) + noise, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    textured.convert("RGB").save(buffer, "JPEG", quality=60)
    return buffer.getvalue()


def large_png(side: int = 6324) -> bytes:
    """A side x side RGB PNG of a digit: 40 M pixels (the default limit) in a few hundred KB."""
    page = Image.new("RGB", (side, side), (240, 240, 240))
    ImageDraw.Draw(page).ellipse([side // 3, side // 4, 2 * side // 3, 3 * side // 4], outline=(20, 20, 90),
                                 width=side // 25)  # fmt: skip
    buffer = io.BytesIO()
    page.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


@dataclass
class BurstReport:
    images: int
    image_kb: float
    statuses: dict[str, int]
    rss_before_mb: float
    rss_peak_mb: float
    rss_after_mb: float
    burst_s: float
    probe_p50_ms: float
    probe_max_ms: float
    probes: int


def _post(url: str, body: bytes, content_type: str, timeout_s: float = 60) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.read()
        return int(error.code)


def burst(
    base_url: str,
    pid: int,
    body: bytes,
    content_type: str,
    count: int,
    *,
    settle_s: float = 10.0,
    path: str = "/predict",
) -> BurstReport:
    """`count` concurrent uploads of `body` to `path` (/predict, /read) while a probe sends one small digit at a time
    to /predict."""
    small = png(digits(1)[0])
    peak, done = rss_mb(pid), threading.Event()
    probe_ms: list[float] = []

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb(pid))
            time.sleep(SAMPLE_INTERVAL_S)

    def probe() -> None:
        while not done.is_set():
            start = time.perf_counter()
            if _post(f"{base_url}/predict", small, "image/png") == 200:
                probe_ms.append((time.perf_counter() - start) * 1000)
            time.sleep(0.05)

    before = rss_mb(pid)
    watchers = [threading.Thread(target=sample), threading.Thread(target=probe)]
    for watcher in watchers:
        watcher.start()
    start = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        statuses = Counter(pool.map(lambda _: _post(f"{base_url}{path}", body, content_type), range(count)))
    burst_s = time.perf_counter() - start
    done.set()
    for watcher in watchers:
        watcher.join()
    time.sleep(settle_s)
    return BurstReport(
        images=count,
        image_kb=round(len(body) / 1024, 1),
        statuses={str(k): v for k, v in sorted(statuses.items())},
        rss_before_mb=round(before, 1),
        rss_peak_mb=round(peak, 1),
        rss_after_mb=round(rss_mb(pid), 1),
        burst_s=round(burst_s, 2),
        probe_p50_ms=round(statistics.median(probe_ms), 1) if probe_ms else float("nan"),
        probe_max_ms=round(max(probe_ms), 1) if probe_ms else float("nan"),
        probes=len(probe_ms),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=64, help="concurrent uploads")
    parser.add_argument("--port", type=int, default=18810, help="local port of the service")
    parser.add_argument("--path", default="/predict", help="endpoint the uploads go to (/predict or /read)")
    parser.add_argument("--out", type=Path, default=Path("build/bench/burst.json"), help="JSON report")
    args = parser.parse_args(argv)
    url = f"http://127.0.0.1:{args.port}"
    env = {"MNIST_PORT": str(args.port), "MNIST_GRPC_PORT": str(args.port + 1), "MNIST_LOG_LEVEL": "warning"}
    reports = {}
    with serve([sys.executable, "-m", "app"], f"{url}/health/ready", env) as process:
        for name, body, content_type in (
            ("jpeg-6000", large_jpeg(), "image/jpeg"),
            ("png-40mp", large_png(), "image/png"),
        ):
            reports[name] = asdict(burst(url, process.pid, body, content_type, args.count, path=args.path))
            print(name, json.dumps(reports[name]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(reports, indent=1))
    return verdict(reports)


MAX_PEAK_MB = 1000.0
MAX_SETTLED_GROWTH = 0.20


def verdict(reports: dict[str, dict]) -> int:
    """0 when every burst kept the targets: peak under 1 GB, only 200 and 503, RSS back within 20% after it."""
    failures = []
    for name, report in reports.items():
        if report["rss_peak_mb"] >= MAX_PEAK_MB:
            failures.append(f"{name}: peak {report['rss_peak_mb']} MB")
        if set(report["statuses"]) - {"200", "503"}:
            failures.append(f"{name}: statuses {report['statuses']}")
        if report["rss_after_mb"] > report["rss_before_mb"] * (1 + MAX_SETTLED_GROWTH):
            failures.append(f"{name}: {report['rss_before_mb']} -> {report['rss_after_mb']} MB after the burst")
    print(f"burst: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
