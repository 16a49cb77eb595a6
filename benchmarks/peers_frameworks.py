"""The serving frameworks the service is measured against, each in a virtual environment of its own.

Their pins clash with the service's (and with each other's), so make bench creates one venv per framework under
build/bench on first use (pip only; reinstalled when the pinned packages change) and runs the framework's server with
that venv's Python. LitServe and BentoML serve the same ONNX file as the service and take the same request as its
/predict (a multipart upload, field `file`, of a PNG), doing the same work per image (benchmarks/peers_digit.py);
MLServer takes V2 JSON tensors (its own protocol; benchmarks/mlserver/runtime.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MLSERVER_VERSION = "1.7.1"
LITSERVE_VERSION = "0.2.19"
BENTOML_VERSION = "1.4.40"
BENTOML_SERVE = ("serve", "peers_bentoml:Digits", "--host", "127.0.0.1", "--port")
PEER_CORES = 2  # the development machine's: each framework gets one worker per core, as its docs advise


@dataclass(frozen=True)
class Peer:
    """A framework: what its venv installs, the files its server runs from, and how to start it."""

    name: str  # the venv's and the folder's name
    label: str  # the benchmark table's
    packages: tuple[str, ...]
    files: tuple[str, ...]  # copied from benchmarks/ into the server's folder
    ready_path: str  # answers 200 once the model is loaded
    infer_path: Callable[[str], str]  # by model name
    body: str  # the kind of request body: "multipart" (as /predict) or "v2" (V2 JSON)
    start: Callable[[Path, int], list[str]]  # the command, from the venv's python and the port
    workers: int  # processes running the model


PEERS: dict[str, Peer] = {
    "mlserver": Peer(
        name="mlserver",
        label=f"mlserver {MLSERVER_VERSION} (V2 JSON)",
        packages=(f"mlserver=={MLSERVER_VERSION}", "onnxruntime"),
        files=("mlserver/runtime.py",),
        ready_path="/v2/health/ready",
        infer_path=lambda model: f"/v2/models/{model}/infer",
        body="v2",
        start=lambda python, port: [str(python), "-m", "mlserver.cli.main", "start", "."],
        workers=1,
    ),
    "litserve": Peer(
        name="litserve",
        label=f"litserve {LITSERVE_VERSION}",
        # python-multipart: LitServe parses a form only with it, and does not depend on it.
        packages=(f"litserve=={LITSERVE_VERSION}", "onnxruntime", "pillow", "python-multipart"),
        files=("peers_digit.py", "peers_litserve.py"),
        ready_path="/health",
        infer_path=lambda model: "/predict",
        body="multipart",
        start=lambda python, port: [str(python), "peers_litserve.py", str(port)],
        workers=PEER_CORES,
    ),
    "bentoml": Peer(
        name="bentoml",
        label=f"bentoml {BENTOML_VERSION}",
        packages=(f"bentoml=={BENTOML_VERSION}", "onnxruntime", "pillow"),
        files=("peers_digit.py", "peers_bentoml.py"),
        ready_path="/readyz",
        infer_path=lambda model: "/predict",
        body="multipart",
        start=lambda python, port: [str(python), "-m", "bentoml", *BENTOML_SERVE, str(port)],
        workers=PEER_CORES,
    ),
}


def peer_python(venv: Path, packages: tuple[str, ...]) -> Path | None:
    """The Python of a venv holding exactly `packages`, created (or redone when they changed); None if pip fails."""
    venv = venv.absolute()  # the servers run from their own folders
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = "\n".join(packages)
    if stamp.is_file() and stamp.read_text() == wanted:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    command = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"{venv.name} could not be installed, skipped: {result.stderr.strip().splitlines()[-1:]}")
        return None
    stamp.write_text(wanted)
    return python


def model_path(model: str) -> Path:
    return ROOT / "models" / model / "model.onnx"


def peer_env(model: str, workers: int = PEER_CORES) -> dict[str, str]:
    """What the LitServe and BentoML servers read: the model, one worker per core, one ONNX Runtime thread each."""
    return {
        "PEER_MODEL_PATH": str(model_path(model)),
        "PEER_WORKERS": str(workers),
        "PEER_INTRA_OP_THREADS": "1",
        "BENTOML_DO_NOT_TRACK": "True",  # no usage report over the network
        "BENTOML_HOME": str(BENCH.parent / "build" / "bench" / "bentoml-home"),
    }


def mlserver_settings(folder: Path, model: str, port: int) -> None:
    # parallel_workers=0: inference in the server process (1.7.1's worker processes fail to start on Python 3.11).
    settings = {"http_port": port, "grpc_port": port + 1, "metrics_port": port + 2, "debug": False}
    (folder / "settings.json").write_text(json.dumps({**settings, "parallel_workers": 0}))
    model_settings = {
        "name": model,
        "implementation": "runtime.OnnxDigits",
        "max_batch_size": 64,
        "max_batch_time": 0.002,
        "parameters": {"uri": str(model_path(model))},
    }
    (folder / "model-settings.json").write_text(json.dumps(model_settings))


def peer_folder(folder: Path, peer: Peer, model: str, port: int) -> Path:
    """The folder the peer's server runs in: its service files (and MLServer's settings for this model and port)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in peer.files:
        shutil.copy(BENCH / name, folder / Path(name).name)
    if peer.name == "mlserver":
        mlserver_settings(folder, model, port)
    return folder
