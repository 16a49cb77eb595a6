"""The Kubernetes manifests validate against the Kubernetes schemas, meet Pod Security "restricted", and keep the
promises the README makes: separate CPU and GPU selectors, an HPA-owned replica count, grace periods that cover the
drain, probes that never kill a busy pod, pinned images, keys only from a Secret."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.__main__ import graceful_shutdown_s
from app.runtime.process import ModelProcess
from app.settings import PLACEHOLDER_KEYS, Settings
from tests.deploy.ports import grpc_port, http_port
from tests.helpers import ROOT

kubernetes_validate = pytest.importorskip("kubernetes_validate")
K8S = ROOT / "deploy" / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
KUBERNETES_VERSION = "1.30"
DEPLOYMENTS = ("deployment.yaml", "deployment-gpu.yaml")
# Pod Security Standards, "restricted" (https://kubernetes.io/docs/concepts/security/pod-security-standards/).
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip


def documents() -> list[dict[str, Any]]:
    return [d for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


def deployment(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return document


def pod(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = deployment(name)["spec"]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_manifest_is_valid(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """Every control of the "restricted" Pod Security profile (and "baseline", which it includes) this pod breaks."""
    found = [f"{key}: true" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)]
    found += [
        f"volume {v['name']}" for v in spec.get("volumes", []) if not set(v) - {"name"} <= RESTRICTED_VOLUME_TYPES
    ]
    pod_context = spec.get("securityContext", {})
    found += [f"sysctl {s['name']}" for s in pod_context.get("sysctls", []) if s["name"] not in SAFE_SYSCTLS]
    if pod_context.get("runAsUser") == 0:
        found.append("pod runAsUser 0")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        context = c.get("securityContext", {})
        name = c["name"]
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation not false")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []) or set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities not dropped")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot not true")
        if context.get("runAsUser") == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile {seccomp}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            found.append(f"{name}: hostPort")
        if context.get("procMount", "Default") != "Default":
            found.append(f"{name}: procMount")
        selinux_type = context.get("seLinuxOptions", {}).get("type", "")
        if selinux_type not in ("", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"):
            found.append(f"{name}: seLinuxOptions.type")
        if context.get("appArmorProfile", {}).get("type", "RuntimeDefault") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: appArmorProfile")
    return found


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_pods_meet_pod_security_restricted(name: str) -> None:
    assert restricted_violations(pod(name)) == []


def test_the_restricted_check_finds_what_it_should() -> None:
    spec = pod("deployment.yaml")
    container = spec["containers"][0]
    broken = {
        **spec,
        "hostNetwork": True,
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "securityContext": {},
        "containers": [{**container, "securityContext": {"privileged": True}, "ports": [{"hostPort": 80}]}],
    }
    assert len(restricted_violations(broken)) == 8


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_pods_are_hardened_beyond_the_profile(name: str) -> None:
    spec = pod(name)
    container = spec["containers"][0]
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False  # a Service named mnist would set MNIST_PORT=tcp://...
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"])
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["runAsGroup"] != 0
    assert spec["topologySpreadConstraints"]


def test_cpu_and_gpu_deployments_select_only_their_own_pods() -> None:
    cpu, gpu = (deployment(name) for name in DEPLOYMENTS)
    for this, other in ((cpu, gpu), (gpu, cpu)):
        selector = this["spec"]["selector"]["matchLabels"]
        assert matches(selector, this["spec"]["template"]["metadata"]["labels"])
        assert not matches(selector, other["spec"]["template"]["metadata"]["labels"])


def test_the_hpa_owns_the_replica_count_of_the_cpu_deployment_only() -> None:
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    target = next(d for d in of_kind("Deployment") if d["metadata"]["name"] == hpa["spec"]["scaleTargetRef"]["name"])
    assert "replicas" not in target["spec"]  # an apply would otherwise reset the HPA's count
    assert target["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "inference-cpu"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert hpa["spec"]["minReplicas"] >= 2


def test_every_deployment_has_a_disruption_budget() -> None:
    budgets = [b["spec"]["selector"]["matchLabels"] for b in of_kind("PodDisruptionBudget")]
    for d in of_kind("Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert sum(matches(b, labels) for b in budgets) == 1, d["metadata"]["name"]


def test_the_service_reaches_both_variants() -> None:
    (service,) = of_kind("Service")
    for d in of_kind("Deployment"):
        assert matches(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_pods_expose_http_and_grpc_on_the_settings_ports(name: str) -> None:
    container = pod(name)["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": http_port(), "grpc": grpc_port()}
    env = env_of(container)
    assert "MNIST_PORT" not in env  # the defaults the ports are checked against
    assert "MNIST_GRPC_PORT" not in env


def test_the_service_routes_grpc_as_grpc() -> None:
    (service,) = of_kind("Service")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["grpc"] == {"name": "grpc", "port": grpc_port(), "targetPort": "grpc", "appProtocol": "grpc"}
    assert ports["http"]["targetPort"] == "http"


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_the_grace_period_covers_prestop_drain_and_model_process(name: str) -> None:
    spec = pod(name)
    container = spec["containers"][0]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    timeout = env_of(container).get("MNIST_REQUEST_TIMEOUT_S", Settings().request_timeout_s)
    drain = graceful_shutdown_s(Settings(request_timeout_s=float(timeout)))
    model_process_stop = inspect.signature(ModelProcess.close).parameters["timeout_s"].default
    assert spec["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain + model_process_stop


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_probes_never_kill_a_busy_pod(name: str) -> None:
    container = pod(name)["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/ready"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"  # never the gRPC port
    live = container["livenessProbe"]
    assert live["httpGet"]["path"] == "/health/live"  # answers from the event loop, whatever the model is doing
    assert live["timeoutSeconds"] >= 5
    assert live["periodSeconds"] * live["failureThreshold"] >= 60
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60  # README: 2.2 s measured, wide margin


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_images_are_pinned_to_a_registry_and_a_version(name: str) -> None:
    container = pod(name)["containers"][0]
    registry, _, rest = container["image"].partition("/")
    repository, _, tag = rest.rpartition(":")
    assert "." in registry  # a registry host, not Docker Hub by default
    assert repository
    assert tag not in ("", "latest")
    assert container["imagePullPolicy"] in ("IfNotPresent", "Always")


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_keys_come_from_a_secret(name: str) -> None:
    env = env_of(pod(name)["containers"][0])
    for key in ("MNIST_TOKEN_KEY", "MNIST_API_KEY"):
        assert env[key]["secretKeyRef"]["name"] == "mnist-serve"
    plain = {v.strip().lower() for v in env.values() if isinstance(v, str)}
    assert not plain & PLACEHOLDER_KEYS
    assert not of_kind("Secret")  # created with random keys (README), never committed


def test_gpu_variant_asks_for_a_gpu_and_refuses_to_fall_back() -> None:
    container = pod("deployment-gpu.yaml")["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = env_of(container)
    assert (env["MNIST_PROVIDER"], env["MNIST_STRICT_PROVIDER"]) == ("cuda", "true")


def test_cpu_limit_is_the_request() -> None:
    # The cgroup quota the service sizes its threads by; a burstable CPU limit would leave throttled threads.
    resources = pod("deployment.yaml")["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"]
