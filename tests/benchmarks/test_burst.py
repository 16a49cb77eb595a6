"""Bursts of the largest images accepted, against the real service with its default settings (issue: 64 concurrent
uploads of a 6000x6000 JPEG once took 16 GB). Scaled to fit CI; `make soak` runs the full 64 of each kind."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from benchmarks.bench import serve
from benchmarks.burst import MAX_PEAK_MB, MAX_SETTLED_GROWTH, burst, large_jpeg, large_png
from tests.conftest import SERVICE, free_port, service_env


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[str, int]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serve(SERVICE, f"{url}/health/ready", service_env(port)) as process:
        yield url, process.pid


@pytest.mark.parametrize(
    ("make", "content_type", "count"),
    [(large_jpeg, "image/jpeg", 24), (large_png, "image/png", 6)],
    ids=["jpeg-6000x6000", "png-40-megapixels"],
)
def test_a_burst_of_large_images_keeps_memory_bounded(
    service: tuple[str, int], make: Callable[[], bytes], content_type: str, count: int
) -> None:
    url, pid = service
    report = burst(url, pid, make(), content_type, count, settle_s=8)
    assert set(report.statuses) <= {"200", "503"}, report
    assert report.statuses.get("200", 0) >= 1, report  # the budget admits at least one image at a time
    assert report.rss_peak_mb < MAX_PEAK_MB, report
    assert report.rss_after_mb <= report.rss_before_mb * (1 + MAX_SETTLED_GROWTH), report
