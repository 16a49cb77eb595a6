"""Compose, nginx, the Dockerfiles and the lock files agree with the service's settings; checked without an engine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from typing import Any

import pytest
import yaml

from app.__main__ import graceful_shutdown_s
from app.settings import Settings
from tests.deploy.ports import grpc_port, http_port
from tests.helpers import ROOT

NGINX = re.sub(r"#.*", "", (ROOT / "deploy" / "nginx" / "nginx.conf").read_text())  # directives, no comments
LOCKS = ("requirements.lock", "requirements-gpu.lock")
MODEL_PROCESS_STOP_S = 5


def compose() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return services


def nginx_value(directive: str) -> str:
    values = re.findall(rf"^\s*{directive}\s+([^;]+);", NGINX, re.MULTILINE)
    assert len(values) == 1, f"{directive}: {values}"
    return values[0].strip()


def seconds(value: str) -> float:
    return float(value.removesuffix("s"))


def test_compose_requires_the_token_key_and_sets_no_default() -> None:
    for name in ("api", "api-gpu", "replica"):
        assert compose()[name]["environment"]["MNIST_TOKEN_KEY"].startswith("${MNIST_TOKEN_KEY:?")


def test_compose_gpu_refuses_to_fall_back_to_cpu() -> None:
    env = compose()["api-gpu"]["environment"]
    assert (env["MNIST_PROVIDER"], env["MNIST_STRICT_PROVIDER"]) == ("cuda", "true")


@pytest.mark.parametrize("name", ["api", "api-gpu", "replica"])
def test_compose_stop_grace_covers_the_drain(name: str) -> None:
    service = compose()[name]
    timeout = float(service["environment"].get("MNIST_REQUEST_TIMEOUT_S", Settings().request_timeout_s))
    drain = graceful_shutdown_s(Settings(request_timeout_s=timeout))
    assert seconds(service["stop_grace_period"]) > drain + MODEL_PROCESS_STOP_S
    assert service["read_only"] is True


def published(service: dict[str, Any]) -> dict[int, int]:
    """Container port -> host port."""
    pairs = (str(p).rsplit(":", 1) for p in service.get("ports", []))
    return {int(container): int(host.rsplit(":", 1)[-1]) for host, container in pairs}


@pytest.mark.parametrize("name", ["api", "api-gpu"])
def test_compose_publishes_http_and_grpc(name: str) -> None:
    assert set(published(compose()[name])) == {http_port(), grpc_port()}
    assert not {"MNIST_PORT", "MNIST_GRPC_PORT"} & set(compose()[name]["environment"])  # the defaults checked above


def test_compose_services_can_run_side_by_side() -> None:
    hosts = [port for name in ("api", "api-gpu", "lb") for port in published(compose()[name]).values()]
    assert len(hosts) == len(set(hosts))


def test_nginx_hides_itself_and_the_replicas() -> None:
    assert nginx_value("server_tokens") == "off"
    assert "$upstream_addr" not in NGINX  # no replica address in any response header


def test_nginx_body_limit_is_the_services() -> None:
    assert int(nginx_value("client_max_body_size")) == Settings().max_upload_bytes
    assert "MNIST_MAX_UPLOAD_BYTES" not in str(compose()["replica"]["environment"])  # nobody moved one side only
    assert '"code":"payload_too_large"' in NGINX  # the service's error code, as JSON


def test_nginx_keeps_idle_connections_shorter_than_the_service() -> None:
    assert seconds(nginx_value("keepalive_timeout")) < Settings().keep_alive_s
    assert "keepalive " not in NGINX  # no pooled idle connections to the replicas (they would pin DNS too)


def test_nginx_waits_longer_than_the_request_timeout() -> None:
    assert seconds(nginx_value("proxy_read_timeout")) > Settings().request_timeout_s


def test_nginx_re_resolves_the_replicas() -> None:
    assert "valid=" in nginx_value("resolver")
    assert re.search(r"proxy_pass\s+http://\$\w+", NGINX)  # a variable: resolved at run time
    assert not re.search(r"^\s*upstream\s", NGINX, re.MULTILINE)  # an upstream block would resolve once, at start-up


def test_nginx_sends_the_forwarded_headers() -> None:
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in NGINX
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in NGINX


def test_nginx_stops_gracefully() -> None:
    assert "STOPSIGNAL SIGQUIT" in (ROOT / "deploy" / "nginx" / "Dockerfile").read_text()
    assert compose()["lb"]["stop_signal"] == "SIGQUIT"


@pytest.mark.parametrize("path", ["Dockerfile", "deploy/nginx/Dockerfile"])
def test_base_images_are_pinned_by_digest(path: str) -> None:
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", (ROOT / path).read_text(), re.MULTILINE)
    assert default is not None
    assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", default.group(1))


def test_the_gpu_base_image_is_pinned_by_digest() -> None:
    assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", compose()["api-gpu"]["build"]["args"]["BASE_IMAGE"])


def test_the_image_installs_the_lock_with_hashes_and_compiles_bytecode() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile
    assert "ARG LOCK=deploy/requirements.lock" in dockerfile
    assert "compileall" in dockerfile
    assert "__pycache__" not in dockerfile  # the bytecode pip compiled stays


def requirement_names(lock: str) -> set[str]:
    return {m.group(1).lower() for m in re.finditer(r"^([A-Za-z0-9_.-]+)==\S+ \\$", lock, re.MULTILINE)}


@pytest.mark.parametrize("name", LOCKS)
def test_locks_pin_every_dependency_with_hashes(name: str) -> None:
    lock = (ROOT / "deploy" / name).read_text()
    blocks = re.split(r"\n(?=[A-Za-z])", lock.split("\n", 2)[2].strip())
    assert blocks
    for block in blocks:
        assert re.match(r"[A-Za-z0-9_.-]+==[^ ]+ \\\n", block), block[:80]
        assert "--hash=sha256:" in block, block[:80]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {re.split(r"[<>=\[ ]", d)[0].lower() for d in project["dependencies"]}
    if name == "requirements-gpu.lock":
        wanted = wanted - {"onnxruntime"} | {"onnxruntime-gpu"}
    assert wanted <= requirement_names(lock)
    assert "onnxruntime" not in requirement_names(lock) or name == "requirements.lock"  # never both


@pytest.mark.skipif(
    not shutil.which("docker-compose"), reason="no docker-compose (../shared/tools/docker-testbed.sh up)"
)
def test_compose_fails_fast_without_a_token_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MNIST_TOKEN_KEY"}
    for profile in ("scale", "gpu"):
        command = ["docker-compose", "--profile", profile, "config", "-q"]
        refused = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0
        assert "set MNIST_TOKEN_KEY" in refused.stderr
        keyed = subprocess.run(command, cwd=ROOT, env={**env, "MNIST_TOKEN_KEY": "k" * 32}, capture_output=True)
        assert keyed.returncode == 0, keyed.stderr
