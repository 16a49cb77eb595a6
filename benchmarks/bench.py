"""make bench: the service under load against its ceiling and its peers, on this machine, in one run.

For each model: POST /predict (multipart PNGs of real MNIST test digits) driven by wrk at several concurrencies,
with 1 worker and one per core, with and without dynamic batching; the ceiling's two parts (a bare FastAPI
endpoint under the same load, raw ONNX Runtime images/s at batch 64 with the same threads); and the peers:
MLServer with adaptive batching over V2 JSON, LitServe and BentoML with their own batching taking the same uploads
as /predict (each framework in its own venv: benchmarks/peers_frameworks.py), a naive FastAPI + Keras server, and
the service's own V2 endpoint. Every run records the peak resident memory of the server's whole process tree.
Prints a table and the target ratios at the highest concurrency, and writes a JSON report.
`--only peers`: the service's /predict at the highest concurrency and the framework peers, nothing else.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from benchmarks.peers_frameworks import PEERS, Peer, peer_env, peer_folder, peer_python
from benchmarks.peers_memory import peak_rss

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
SAMPLE = ROOT / "tests" / "data" / "mnist-sample"
BOUNDARY = "mnistbenchboundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"  # the Content-Type of multipart_body's bodies
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
    peak_rss_mb: float | None = None  # the server's whole process tree, summed RSS, sampled during the load


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
    command: list[str], ready_url: str, env: dict[str, str] | None = None, cwd: Path = ROOT, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """The server, ready (its output in `log` if given); stopped afterwards with every process it started."""
    with log.open("wb") if log else nullcontext() as output:
        environment = {**os.environ, **(env or {})}
        process = subprocess.Popen(
            command, env=environment, cwd=cwd, stdout=output, stderr=output, start_new_session=True
        )
        try:
            wait_ready(ready_url, process)
            yield process
        finally:
            stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server, which stops its own children (the service its model process); after it exits or 30 s,
    SIGKILL to whatever is left in its process group (a framework's workers that outlived it)."""
    process.terminate()
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


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


def service_env(*, workers: int, batching: bool) -> dict[str, str]:
    return {
        "MNIST_WORKERS": str(workers),
        "MNIST_BATCHING": str(batching).lower(),
        "MNIST_LOG_LEVEL": "warning",
    }


def run_service(
    runs: list[Run], args: argparse.Namespace, bodies: dict[str, list[Path]], *, workers: int, batching: bool, port: int
) -> None:
    """/predict at every concurrency (only the highest with --only peers) and, for the default deployment, V2 JSON."""
    base = f"http://127.0.0.1:{port}"
    label = f"service{'' if batching else ' (no batching)'}"
    env = {**service_env(workers=workers, batching=batching), "MNIST_PORT": str(port), "MNIST_GRPC_PORT": str(port + 5)}
    top = max(args.concurrency)
    concurrencies = [top] if args.only == "peers" else args.concurrency
    with serve([sys.executable, "-m", "app"], f"{base}/health/ready", env) as process:
        for model in args.models:
            for concurrency in concurrencies:
                with peak_rss(process.pid) as peak:
                    result = wrk(
                        f"{base}/predict?model={model}", bodies["multipart"], MULTIPART, concurrency, args.seconds
                    )
                runs.append(Run(label, model, workers, concurrency, **result, peak_rss_mb=peak[0]))
                print_run(runs[-1])
            if batching and workers == 1 and args.only != "peers":
                result = wrk(f"{base}/v2/models/{model}/infer", bodies["v2"], "application/json", top, args.seconds)
                runs.append(Run("service V2 JSON", model, workers, top, **result))
                print_run(runs[-1])


def run_peer(
    runs: list[Run], args: argparse.Namespace, bodies: dict[str, list[Path]], peer: Peer, *, python: Path, model: str
) -> None:
    """One framework serving one model under the highest concurrency, with the bodies of its protocol."""
    port, top = args.port + 30, max(args.concurrency)
    folder = peer_folder(args.out.parent / f"{peer.name}-{model}", peer, model, port)
    base = f"http://127.0.0.1:{port}"
    content_type = MULTIPART if peer.body == "multipart" else "application/json"
    command = peer.start(python, port)
    env = peer_env(model, peer.workers)
    log = folder / "server.log"  # its own output, apart from the table
    with serve(command, base + peer.ready_path, env, folder, log) as process, peak_rss(process.pid) as peak:
        result = wrk(base + peer.infer_path(model), bodies[peer.body], content_type, top, args.seconds)
    runs.append(Run(peer.label, model, peer.workers, top, **result, peak_rss_mb=peak[0]))
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
    memory = f"  peak RSS {run.peak_rss_mb:.0f} MB" if run.peak_rss_mb else ""
    print(
        f"{run.system:<28}{run.model:<8}{run.workers:>3}w c={run.concurrency:<4}"
        f"{run.requests_per_s:>9.0f} req/s  p50 {run.p50_ms:>7.2f} ms  p99 {run.p99_ms:>8.2f} ms  errors {run.errors}"
        f"{memory}",
        flush=True,
    )


def find(runs: list[Run], system: str, model: str, concurrency: int, workers: int = 1) -> Run | None:
    return next(
        (r for r in runs if (r.system, r.model, r.concurrency, r.workers) == (system, model, concurrency, workers)),
        None,
    )


def median_runs(runs: list[Run]) -> list[Run]:
    """One run per system, model, workers and concurrency: the median of each figure over its repetitions (the most
    errors and the highest memory peak), in the order they were first measured."""
    groups: dict[tuple[str, str, int, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.system, run.model, run.workers, run.concurrency), []).append(run)
    medians = []
    for (system, model, workers, concurrency), group in groups.items():
        peaks = [r.peak_rss_mb for r in group if r.peak_rss_mb is not None]
        medians.append(
            Run(
                system, model, workers, concurrency,
                requests_per_s=statistics.median(r.requests_per_s for r in group),
                p50_ms=statistics.median(r.p50_ms for r in group),
                p99_ms=statistics.median(r.p99_ms for r in group),
                errors=max(r.errors for r in group),
                peak_rss_mb=max(peaks) if peaks else None,
            )
        )  # fmt: skip
    return medians


def ratios(
    runs: list[Run], ceilings: dict[str, Ceiling], concurrency: int, workers: int = 1
) -> dict[str, dict[str, object]]:
    """The targets, per model, at the given concurrency, for the service as deployed by default (one worker), against
    the ceiling measured with the same worker count; the other worker counts' ratios are reported beside it."""
    report: dict[str, dict[str, object]] = {}
    for model, ceiling in ceilings.items():
        service = {r.workers: r for r in runs if (r.system, r.model, r.concurrency) == ("service", model, concurrency)}
        deployed, limit = service[workers], ceiling.L[workers]
        mlserver = find(runs, PEERS["mlserver"].label, model, concurrency)
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


def peer_targets(runs: list[Run], concurrency: int) -> dict[str, dict[str, object]]:
    """Per model: the service's /predict (one worker) against the fastest framework peer at the given concurrency."""
    labels = {peer.label for peer in PEERS.values()}
    report: dict[str, dict[str, object]] = {}
    for model in dict.fromkeys(r.model for r in runs if r.system in labels):
        service = find(runs, "service", model, concurrency)
        peers = [r for r in runs if r.system in labels and (r.model, r.concurrency) == (model, concurrency)]
        if service is None or not peers:
            continue
        best = max(peers, key=lambda r: r.requests_per_s)
        ratio = round(service.requests_per_s / best.requests_per_s, 2)
        report[model] = {
            "service_requests_per_s": round(service.requests_per_s),
            "best_peer": best.system,
            "best_peer_requests_per_s": round(best.requests_per_s),
            "vs_best_peer": ratio,
            ">= 1.5x the best peer": ratio >= 1.5,
        }
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


def measure_service_and_ceilings(
    runs: list[Run], args: argparse.Namespace, bodies: dict[str, list[Path]]
) -> dict[str, Ceiling]:
    """The service with 1 worker and one per core, with and without batching; the ceilings of each model."""
    cores, top = os.cpu_count() or 1, max(args.concurrency)
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
    return ceilings


def measure_peers(runs: list[Run], args: argparse.Namespace, bodies: dict[str, list[Path]]) -> None:
    """The naive Keras server (not with --only peers) and each framework, in its own venv, on every model."""
    if args.only != "peers":
        for model in args.models:
            top = max(args.concurrency)
            result = drive_peer("keras", args.port + 20, bodies, top, args.seconds, env={"BENCH_MODEL": model})
            runs.append(Run("naive keras", model, 1, top, **result))
            print_run(runs[-1])
    for name in args.peers:
        peer = PEERS[name]
        python = peer_python(args.out.parent / f"venv-{peer.name}", peer.packages)
        for model in args.models if python else []:
            run_peer(runs, args, bodies, peer, python=python, model=model)  # type: ignore[arg-type]


def print_targets(targets: dict[str, dict[str, object]], peers: dict[str, dict[str, object]], top: int) -> None:
    print(f"\ntargets at concurrency {top}:")
    for model, entry in targets.items():
        checks = ", ".join(f"{name}: {'PASS' if ok else 'FAIL'}" for name, ok in entry["targets"].items())  # type: ignore[union-attr]
        shown = {k: v for k, v in entry.items() if k != "targets"}
        print(f"  {model}: {shown}\n    {checks}")
    for model, entry in peers.items():
        verdict = "PASS" if entry[">= 1.5x the best peer"] else "FAIL"
        shown = {k: v for k, v in entry.items() if not k.startswith(">=")}
        print(f"  {model} against the framework peers: {shown}\n    >= 1.5x the best peer: {verdict}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cnn", "lenet"], help="models to load-test")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 16, 64], help="wrk connections")
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--port", type=int, default=18700, help="first local port to use")
    parser.add_argument("--skip-peers", action="store_true", help="only the service and its ceiling")
    parser.add_argument(
        "--only", choices=["all", "peers"], default="all",
        help="peers: only /predict (one worker) at the highest concurrency and the framework peers",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="with --only peers: measure every system this many times, in turn, and judge on each one's median "
        "(the load of a shared machine varies between runs)",
    )  # fmt: skip
    parser.add_argument("--peers", nargs="+", choices=list(PEERS), default=list(PEERS), help="framework peers to run")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "report.json", help="JSON report")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The servers run in sessions of their own (serve): on SIGTERM (`timeout`, a CI stop) unwind, so that each one's
    # `finally` stops it, instead of dying at once and leaving them running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if not shutil.which("wrk"):
        print("wrk is not installed: `apt-get install wrk` (Debian) and run again", file=sys.stderr)
        return 2
    bodies = write_bodies(args.out.parent / "bodies")
    runs: list[Run] = []
    top = max(args.concurrency)

    print(f"{'system':<28}{'model':<8}workers/concurrency    throughput, latency and peak memory")
    ceilings: dict[str, Ceiling] = {}
    for round_ in range(args.rounds if args.only == "peers" else 1):
        if args.rounds > 1:
            print(f"round {round_ + 1} of {args.rounds}", flush=True)
        if args.only == "peers":
            run_service(runs, args, bodies, workers=1, batching=True, port=args.port)
        else:
            ceilings = measure_service_and_ceilings(runs, args, bodies)
        if not args.skip_peers:
            measure_peers(runs, args, bodies)
    medians = median_runs(runs)
    if args.rounds > 1:
        print("\nmedians of the rounds:")
        for run in medians:
            print_run(run)

    targets = ratios(medians, ceilings, top)
    peers = peer_targets(medians, top)
    gpu = gpu_throughput(args.models) if args.only != "peers" else None
    print_targets(targets, peers, top)
    if gpu:
        print(f"GPU (CUDA execution provider) images/s by batch size: {gpu}")
    report = {
        "runs": [asdict(r) for r in runs],
        "medians": [asdict(r) for r in medians],
        "ceilings": {m: asdict(c) for m, c in ceilings.items()},
    }
    args.out.write_text(json.dumps({**report, "targets": targets, "peer_targets": peers, "gpu": gpu}, indent=1))
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
