"""The benchmark's targets compare each service run with the ceiling measured on the same server settings."""

from __future__ import annotations

import pytest

from benchmarks.bench import Ceiling, Run, ratios
from benchmarks.peers_frameworks import PEERS


def test_the_service_is_judged_against_the_ceiling_of_its_own_worker_count() -> None:
    ceiling = Ceiling(bare_http={1: 10_000.0, 2: 15_000.0}, raw_onnx_images_per_s=7_500.0)
    assert pytest.approx({1: 1 / (1 / 10_000 + 1 / 7_500), 2: 5_000.0}) == ceiling.L
    runs = [
        Run("service", "cnn", 1, 64, 3_600.0, 18.0, 60.0, 0),
        Run("service", "cnn", 2, 64, 3_500.0, 30.0, 40.0, 0),
        Run(PEERS["mlserver"].label, "cnn", 1, 64, 1_000.0, 60.0, 90.0, 0),
        Run("naive keras", "cnn", 1, 64, 20.0, 3_000.0, 4_000.0, 0),
    ]
    entry = ratios(runs, {"cnn": ceiling}, 64)["cnn"]  # the default deployment: one worker
    assert (entry["workers"], entry["ceiling_L"], entry["vs_L"]) == (1, 4_286, 0.84)
    assert entry["vs_L_by_workers"] == {1: 0.84, 2: 0.7}
    assert entry["targets"] == {
        ">= 0.7 L": True,
        ">= 2x MLServer": True,
        ">= 5x naive Keras": True,
        "p99 <= 3x p50": False,  # 60 ms against 18 ms
        "zero errors": True,
    }
    assert ratios(runs, {"cnn": ceiling}, 64, workers=2)["cnn"]["vs_L"] == 0.7
