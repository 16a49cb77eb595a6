"""The KServe InferenceService (deploy/kserve/) runs the same image with the same settings as the Kubernetes
Deployment, as a custom container that KServe knows speaks V2, with both ports and V2 health probes. Checked
statically: its pod fields against the Kubernetes schemas, its KServe fields against what KServe's controller reads.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.deploy.ports import grpc_port, http_port
from tests.deploy.test_kubernetes import KUBERNETES_VERSION, env_of, matches, pod, restricted_violations
from tests.helpers import ROOT

kubernetes_validate = pytest.importorskip("kubernetes_validate")
ISVC = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
# spec.predictor is a PodSpec inlined with KServe's ComponentExtensionSpec; these keys are KServe's own.
KSERVE_COMPONENT_KEYS = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency", "timeout",
    "canaryTrafficPercent", "logger", "batcher", "labels", "annotations", "deploymentStrategy", "autoScaling",
}  # fmt: skip


def isvc() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(ISVC.read_text())
    return document


def predictor() -> dict[str, Any]:
    spec: dict[str, Any] = isvc()["spec"]["predictor"]
    return spec


def container() -> dict[str, Any]:
    (only,) = predictor()["containers"]
    return dict(only)


def is_grpc_port_for_kserve(port: dict[str, Any]) -> bool:
    """KServe's raw-deployment service reconciler: a port whose name holds grpc or h2c gets appProtocol h2c."""
    return "grpc" in port["name"] or "h2c" in port["name"]


def test_it_is_an_inference_service() -> None:
    assert (isvc()["apiVersion"], isvc()["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")


def test_it_is_a_custom_container_speaking_v2() -> None:
    assert "model" not in predictor()  # no built-in runtime: the image is the server
    assert container()["name"] == "kserve-container"
    assert env_of(container())["PROTOCOL"] == "v2"  # how KServe learns a custom container's protocol
    assert "protocolVersion" not in predictor()  # a field of the built-in runtimes only
    assert "storageUri" not in predictor()  # the models are in the image


def test_the_pod_fields_are_a_valid_restricted_pod() -> None:
    spec = {k: v for k, v in predictor().items() if k not in KSERVE_COMPONENT_KEYS}
    pod_document = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mnist-serve"}, "spec": spec}
    kubernetes_validate.validate(pod_document, KUBERNETES_VERSION, strict=True)
    assert restricted_violations(spec) == []


def test_it_runs_the_deployments_image_with_its_settings() -> None:
    cpu = pod("deployment.yaml")
    ours, theirs = container(), cpu["containers"][0]
    assert ours["image"] == theirs["image"]
    assert ours["imagePullPolicy"] == theirs["imagePullPolicy"]
    assert {k: v for k, v in env_of(ours).items() if k != "PROTOCOL"} == env_of(theirs)
    for key in ("resources", "lifecycle", "securityContext", "volumeMounts"):
        assert ours[key] == theirs[key], key
    for key in ("automountServiceAccountToken", "enableServiceLinks", "terminationGracePeriodSeconds"):
        assert predictor()[key] == cpu[key], key
    assert predictor()["securityContext"] == cpu["securityContext"]
    assert predictor()["volumes"] == cpu["volumes"]


def test_it_scales_as_the_hpa_does() -> None:
    (hpa,) = [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "hpa.yaml").read_text()) if d]
    target = hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]
    assert (predictor()["minReplicas"], predictor()["maxReplicas"]) == (hpa["spec"]["minReplicas"], 10)
    assert (predictor()["scaleMetric"], predictor()["scaleTarget"]) == ("cpu", target)


def test_it_exposes_http_first_and_grpc_on_the_settings_ports() -> None:
    first, second = container()["ports"]
    assert (first["name"], first["containerPort"]) == ("http1", http_port())  # the predictor Service's port 80
    assert (second["name"], second["containerPort"]) == ("grpc", grpc_port())
    assert not is_grpc_port_for_kserve(first)
    assert is_grpc_port_for_kserve(second)
    # Two ports need raw deployment mode: Knative (serverless mode) accepts one port per container.
    assert isvc()["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"


def test_the_probes_ask_the_v2_health_endpoints_over_http() -> None:
    probes = {name: container()[name]["httpGet"] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"] == {"path": "/v2/health/ready", "port": "http1"}
    assert probes["startupProbe"] == {"path": "/v2/health/ready", "port": "http1"}
    assert probes["livenessProbe"] == {"path": "/v2/health/live", "port": "http1"}
    theirs = pod("deployment.yaml")["containers"][0]
    for name in probes:  # the same timing as the Deployment's, whose budgets the README explains
        timing = {k: v for k, v in container()[name].items() if k != "httpGet"}
        assert timing == {k: v for k, v in theirs[name].items() if k != "httpGet"}, name


def test_the_probe_paths_answer_on_the_service(client: TestClient) -> None:
    for path in ("/v2/health/ready", "/v2/health/live"):
        response = client.get(path)
        assert response.status_code == 200, path


def test_the_plain_service_does_not_select_its_pods() -> None:
    service = next(d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "service.yaml").read_text()) if d)
    assert not matches(service["spec"]["selector"], isvc()["metadata"]["labels"])
