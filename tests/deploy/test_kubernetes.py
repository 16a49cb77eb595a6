"""The Kubernetes manifests validate against the Kubernetes schemas, and probe the service's health routes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT

kubernetes_validate = pytest.importorskip("kubernetes_validate")
MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
KUBERNETES_VERSION = "1.30"


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_manifest_is_valid(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_probes_use_the_health_endpoints() -> None:
    for name in ("deployment.yaml", "deployment-gpu.yaml"):
        container = yaml.safe_load((ROOT / "deploy" / "k8s" / name).read_text())["spec"]["template"]["spec"][
            "containers"
        ][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"


def test_gpu_variant_asks_for_a_gpu() -> None:
    spec = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment-gpu.yaml").read_text())["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
