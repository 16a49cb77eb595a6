"""make bench: the service under load against its ceiling and its peers, on this machine, in one run.

For each model: POST /predict (multipart PNGs of real MNIST test digits) driven by wrk at several concurrencies,
with 1 worker and one per core, with and without dynamic batching; the ceiling's two parts (a bare FastAPI
endpoint under the same load, raw ONNX Runtime images/s at batch 64 with the same threads); and the peers:
MLServer with adaptive batching over V2 JSON, a naive FastAPI + Keras server, and the service's own V2 endpoint.
Prints a table and the target ratios at the highest concurrency, and writes a JSON report.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
SAMPLE = ROOT / "tests" / "data" / "mnist-sample"
BOUNDARY = "mnistbenchboundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"  # the Content-Type of multipart_body's bodies
MLSERVER_VERSION = "1.7.1"
WARM_UP_S = 2  # each measured run follows this much unmeasured load: first requests pay one-off costs


@dataclass
class Run:
    system: str
    model: str
    workers: int
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class Ceiling:
    """L = 1 / (1/bare + 1/raw) for each worker count: HTTP and model costs, simply added."""

    bare_http: dict[int, float]  # req/s of a bare endpoint, by worker count
    raw_onnx_images_per_s: float  # batch 64, every core
    L: dict[int, float] = field(init=False)

    def __post_init__(self) -> None:
        self.L = {w: 1 / (1 / bare + 1 / self.raw_onnx_images_per_s) for w, bare in self.bare_http.items()}


def digits(count: int) -> np.ndarray:
    sys.path.insert(0, str(ROOT))
    from training.data import load_mnist

    return load_mnist(SAMPLE, verify=False, validation_size=100).test.images[:count]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def multipart_body(data: bytes, filename: str = "digit.png") -> bytes:
    """A multipart/form-data body with the image as field `file` (boundary BOUNDARY)."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    )
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def write_bodies(folder: Path, count: int = 32) -> dict[str, list[Path]]:
    """Request bodies: multipart PNG uploads for /predict, V2 JSON for the inference protocol."""
    folder.mkdir(parents=True, exist_ok=True)
    bodies: dict[str, list[Path]] = {"multipart": [], "v2": []}
    for index, image in enumerate(digits(count)):
        multipart = folder / f"{index}.multipart"
        multipart.write_bytes(multipart_body(png(image), f"{index}.png"))
        pixels = np.round(image.astype(np.float32) / 255, 4).ravel().tolist()
        tensor = {"name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": pixels}
        v2 = folder / f"{index}.json"
        v2.write_text(json.dumps({"inputs": [tensor], "outputs": [{"name": "probabilities"}]}))
        bodies["multipart"].append(multipart)
        bodies["v2"].append(v2)
    return bodies


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    """Return once url answers 200; fail early if the server process exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


@contextmanager
def serve(
    command: list[str], ready_url: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, cwd=cwd)
    try:
        wait_ready(ready_url, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def wrk(url: str, files: list[Path], content_type: str, concurrency: int, seconds: int) -> dict[str, float]:
    """wrk's figures for `seconds` of load, after WARM_UP_S of the same load that are not counted."""

    def load(duration_s: int) -> str:
        command = [
            "wrk", "-t", str(min(2, concurrency)), "-c", str(concurrency), "-d", f"{duration_s}s", "--timeout", "10s",
            "-s", str(BENCH / "rotate.lua"), url, "--", content_type, *map(str, files),
        ]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    load(WARM_UP_S)
    output = load(seconds)
    summary = json.loads(re.search(r"^JSON (.*)$", output, re.MULTILINE).group(1))  # type: ignore[union-attr]
    errors = sum(v for k, v in summary.items() if k.startswith("errors_"))
    return {
        "requests_per_s": summary["requests"] / summary["seconds"],
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "errors": errors,
    }


def raw_onnx(
    model: str, *, threads: int, batch: int = 64, seconds: float = 5, provider: str = "CPUExecutionProvider"
) -> float:
    """Images per second of ONNX Runtime alone on this model."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(ROOT / "models" / model / "model.onnx"), options, providers=[provider])
    x = np.repeat(digits(batch), -(-batch // len(digits(batch))), axis=0)[:batch]
    x = (x.astype(np.float32) / 255)[..., None]
    session.run(["probabilities"], {"image": x})
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        session.run(["probabilities"], {"image": x})
        runs += 1
    return runs * batch / elapsed


def mlserver_python(venv: Path) -> Path | None:
    """MLServer in a virtual environment of its own (its pins clash with the service's); None if it cannot install."""
    python = venv / "bin" / "python"
    if not (venv / ".installed").is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"mlserver=={MLSERVER_VERSION}", "onnxruntime"],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            print(f"MLServer could not be installed, skipped: {result.stderr.strip().splitlines()[-1:]}")
            return None
        (venv / ".installed").touch()
    return python


def mlserver_folder(folder: Path, model: str, port: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(BENCH / "mlserver" / "runtime.py", folder / "runtime.py")
    # parallel_workers=0: inference in the server process (1.7.1's worker processes fail to start on Python 3.11).
    settings = {
        "http_port": port,
        "grpc_port": port + 1,
        "metrics_port": port + 2,
        "debug": False,
        "parallel_workers": 0,
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": model,
        "implementation": "runtime.OnnxDigits",
        "max_batch_size": 64,
        "max_batch_time": 0.002,
        "parameters": {"uri": str(ROOT / "models" / model / "model.onnx")},
    }
    (folder / "model-settings.json").write_text(json.dumps(model_settings))
    return folder


def service_env(*, workers: int, batching: bool) -> dict[str, str]:
    return {
        "MNIST_WORKERS": str(workers),
        "MNIST_BATCHING": str(batching).lower(),
        "MNIST_LOG_LEVEL": "warning",
    }


def run_service(
    runs: list[Run], args: argparse.Namespace, bodies: dict[str, list[Path]], *, workers: int, batching: bool, port: int
) -> None:
    base = f"http://127.0.0.1:{port}"
    label = f"service{'' if batching else ' (no batching)'}"
    env = {**service_env(workers=workers, batching=batching), "MNIST_PORT": str(port), "MNIST_GRPC_PORT": str(port + 5)}
    with serve([sys.executable, "-m", "app"], f"{base}/health/ready", env):
        for model in args.models:
            for concurrency in args.concurrency:
                result = wrk(
                    f"{base}/predict?model={model}",
                    bodies["multipart"],
                    MULTIPART,
                    concurrency,
                    args.seconds,
                )
                runs.append(Run(label, model, workers, concurrency, **result))
                print_run(runs[-1])
            if batching and workers == 1:
                top = max(args.concurrency)
                result = wrk(f"{base}/v2/models/{model}/infer", bodies["v2"], "application/json", top, args.seconds)
                runs.append(Run("service V2 JSON", model, workers, top, **result))
                print_run(runs[-1])


def drive_peer(
    kind: str,
    port: int,
    bodies: dict[str, list[Path]],
    concurrency: int,
    seconds: int,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> dict[str, float]:
    """wrk's figures for one of benchmarks.peers, fed the same multipart uploads as the service."""
    command = [sys.executable, "-m", "benchmarks.peers", kind, str(port), str(workers)]
    with serve(command, f"http://127.0.0.1:{port}/docs", env):
        return wrk(f"http://127.0.0.1:{port}/predict", bodies["multipart"], MULTIPART, concurrency, seconds)


def print_run(run: Run) -> None:
    print(
        f"{run.system:<24}{run.model:<8}{run.workers:>3}w c={run.concurrency:<4}"
        f"{run.requests_per_s:>9.0f} req/s  p50 {run.p50_ms:>7.2f} ms  p99 {run.p99_ms:>8.2f} ms  errors {run.errors}",
        flush=True,
    )


def find(runs: list[Run], system: str, model: str, concurrency: int, workers: int = 1) -> Run | None:
    return next(
        (r for r in runs if (r.system, r.model, r.concurrency, r.workers) == (system, model, concurrency, workers)),
        None,
    )


def ratios(
    runs: list[Run], ceilings: dict[str, Ceiling], concurrency: int, workers: int = 1
) -> dict[str, dict[str, object]]:
    """The targets, per model, at the given concurrency, for the service as deployed by default (one worker), against
    the ceiling measured with the same worker count; the other worker counts' ratios are reported beside it."""
    report: dict[str, dict[str, object]] = {}
    for model, ceiling in ceilings.items():
        service = {r.workers: r for r in runs if (r.system, r.model, r.concurrency) == ("service", model, concurrency)}
        deployed, limit = service[workers], ceiling.L[workers]
        mlserver = find(runs, "mlserver (V2 JSON)", model, concurrency)
        keras = find(runs, "naive keras", model, concurrency)
        entry: dict[str, object] = {
            "workers": deployed.workers,
            "requests_per_s": round(deployed.requests_per_s),
            "ceiling_L": round(limit),
            "vs_L": round(deployed.requests_per_s / limit, 3),
            "vs_L_by_workers": {w: round(r.requests_per_s / ceiling.L[w], 3) for w, r in sorted(service.items())},
            "p99_over_p50": round(deployed.p99_ms / deployed.p50_ms, 2),
            "errors": deployed.errors,
        }
        if mlserver:
            entry["vs_mlserver"] = round(deployed.requests_per_s / mlserver.requests_per_s, 2)
        if keras:
            entry["vs_naive_keras"] = round(deployed.requests_per_s / keras.requests_per_s, 2)
        entry["targets"] = {
            ">= 0.7 L": entry["vs_L"] >= 0.7,  # type: ignore[operator]
            ">= 2x MLServer": entry.get("vs_mlserver", 0) >= 2,  # type: ignore[operator]
            ">= 5x naive Keras": entry.get("vs_naive_keras", 0) >= 5,  # type: ignore[operator]
            "p99 <= 3x p50": entry["p99_over_p50"] <= 3,  # type: ignore[operator]
            "zero errors": deployed.errors == 0,
        }
        report[model] = entry
    return report


def gpu_throughput(models: list[str]) -> dict[str, dict[int, float]] | None:
    """Images/s on the CUDA execution provider at batch 1, 64 and 1024, where onnxruntime has one."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    return {
        model: {batch: round(raw_onnx(model, threads=0, batch=batch, seconds=3, provider="CUDAExecutionProvider"))
                for batch in (1, 64, 1024)}
        for model in models
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cnn", "lenet"], help="models to load-test")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 16, 64], help="wrk connections")
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--port", type=int, default=18700, help="first local port to use")
    parser.add_argument("--skip-peers", action="store_true", help="only the service and its ceiling")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "report.json", help="JSON report")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk is not installed: `apt-get install wrk` (Debian) and run again", file=sys.stderr)
        return 2
    work = args.out.parent
    bodies = write_bodies(work / "bodies")
    cores = os.cpu_count() or 1
    runs: list[Run] = []
    top = max(args.concurrency)

    print(f"{'system':<24}{'model':<8}workers/concurrency    throughput and latency")
    for workers in sorted({1, cores}):
        run_service(runs, args, bodies, workers=workers, batching=True, port=args.port)
    run_service(runs, args, bodies, workers=1, batching=False, port=args.port)

    # The HTTP part of the ceiling, on the same server settings as each service run: the same worker counts.
    bare: dict[int, float] = {}
    for workers in sorted({1, cores}):
        result = drive_peer("bare", args.port + 10, bodies, top, args.seconds, workers=workers)
        runs.append(Run("bare endpoint", "-", workers, top, **result))
        print_run(runs[-1])
        bare[workers] = runs[-1].requests_per_s
    threads = cores  # the service's default: ONNX Runtime may use every core
    ceilings: dict[str, Ceiling] = {}
    for model in args.models:
        raw = raw_onnx(model, threads=threads)
        ceilings[model] = Ceiling(bare, raw)
        for workers, limit in ceilings[model].L.items():
            print(
                f"ceiling {model}, {workers} worker(s): bare {bare[workers]:.0f} req/s, raw ONNX Runtime {raw:.0f} "
                f"images/s (batch 64, {threads} threads), L = {limit:.0f}"
            )

    if not args.skip_peers:
        for model in args.models:
            result = drive_peer("keras", args.port + 20, bodies, top, args.seconds, env={"BENCH_MODEL": model})
            runs.append(Run("naive keras", model, 1, top, **result))
            print_run(runs[-1])
        python = mlserver_python(work / "venv-mlserver")
        for model in args.models if python else []:
            port = args.port + 30
            folder = mlserver_folder(work / f"mlserver-{model}", model, port)
            mlserver = [str(python), "-m", "mlserver.cli.main", "start", str(folder)]
            with serve(mlserver, f"http://127.0.0.1:{port}/v2/models/{model}/ready", cwd=folder):
                result = wrk(
                    f"http://127.0.0.1:{port}/v2/models/{model}/infer",
                    bodies["v2"],
                    "application/json",
                    top,
                    args.seconds,
                )
                runs.append(Run("mlserver (V2 JSON)", model, 1, top, **result))
                print_run(runs[-1])

    targets = ratios(runs, ceilings, top)
    gpu = gpu_throughput(args.models)
    print(f"\ntargets at concurrency {top}:")
    for model, entry in targets.items():
        checks = ", ".join(f"{name}: {'PASS' if ok else 'FAIL'}" for name, ok in entry["targets"].items())  # type: ignore[union-attr]
        shown = {k: v for k, v in entry.items() if k != "targets"}
        print(f"  {model}: {shown}\n    {checks}")
    if gpu:
        print(f"GPU (CUDA execution provider) images/s by batch size: {gpu}")
    report = {"runs": [asdict(r) for r in runs], "ceilings": {m: asdict(c) for m, c in ceilings.items()}}
    args.out.write_text(json.dumps({**report, "targets": targets, "gpu": gpu}, indent=1))
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
