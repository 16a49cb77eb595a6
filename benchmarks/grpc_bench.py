"""Part of make bench: V2 inference over gRPC against V2 REST with binary tensors, on one running service.

Both are driven by the same native load generator, h2load (nghttp2), so neither protocol's client costs Python on
the two cores the service needs: REST over HTTP/1.1 with one request in flight per connection (as wrk drives
/predict), gRPC over HTTP/2 with the same 64 connections of one stream each, and as gRPC clients usually run: one
connection carrying all 64 streams. Every request is the same: one MNIST test digit, UINT8 [1, 28, 28, 1], raw bytes,
asking for `probabilities`, raw bytes back. h2load sees HTTP statuses only; a gRPC call's own status comes in its
trailers, so the gRPC calls that did not end OK are read from the service's /metrics afterwards.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from app.protos import grpc_predict_v2_pb2 as pb
from benchmarks.bench import ROOT, digits, serve
from benchmarks.peers_memory import peak_rss

WARM_UP_S = 2
MODEL = "cnn"


@dataclass
class Result:
    protocol: str
    connections: int
    streams: int
    requests_per_s: float
    mean_ms: float
    errors: int
    peak_rss_mb: float = 0.0  # the service's whole process tree, during this run


def grpc_body(pixels: bytes) -> bytes:
    """A ModelInfer call as it goes on the wire: gRPC's 5-byte frame (uncompressed, length) and the message."""
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="image", datatype="UINT8", shape=[1, 28, 28, 1])
    request.outputs.add(name="probabilities")
    request.raw_input_contents.append(pixels)
    message = request.SerializeToString()
    return struct.pack(">BI", 0, len(message)) + message


def rest_body(pixels: bytes) -> tuple[bytes, int]:
    """A V2 REST request with the binary tensor data extension, and the length of its JSON header."""
    tensor = {"name": "image", "shape": [1, 28, 28, 1], "datatype": "UINT8", "parameters": {"binary_data_size": 784}}
    outputs = [{"name": "probabilities", "parameters": {"binary_data": True}}]
    head = json.dumps({"inputs": [tensor], "outputs": outputs}).encode()
    return head + pixels, len(head)


def h2load(
    url: str, body: Path, headers: list[str], *, connections: int, streams: int, seconds: int, http1: bool
) -> dict[str, float]:
    """h2load's throughput, mean latency and failures for `seconds` of load after WARM_UP_S."""
    command = [
        "h2load", "-t", "1", "-c", str(connections), "-m", str(streams), "-D", str(seconds),
        f"--warm-up-time={WARM_UP_S}", "-d", str(body), *[f"-H{h}" for h in headers], url,
    ]  # fmt: skip
    if http1:
        command.insert(1, "--h1")
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output)
    done = re.search(
        r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", output
    )
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", output)
    if not (rate and done and mean):
        raise RuntimeError(f"cannot read h2load's output:\n{output}")
    return {
        "requests_per_s": float(rate.group(1)),
        "mean_ms": milliseconds(mean.group(1)),
        "errors": int(done.group(2)) + int(done.group(3)),
    }


UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def milliseconds(value: str) -> float:
    """h2load's duration ("850.12us", "12.5ms", "1.2s") in ms."""
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * UNITS_MS[unit]


def grpc_failures(metrics_url: str) -> int:
    """ModelInfer calls the service ended with a status other than OK (from its own counter). CANCELLED is left out:
    those are the calls in flight when h2load stops, which it resets (the REST requests it drops then are not
    counted either)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    pattern = r'mnist_grpc_requests_total\{code="(\w+)",method="ModelInfer"\} ([\d.e+]+)'
    return int(sum(float(count) for code, count in re.findall(pattern, text) if code not in ("OK", "CANCELLED")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="length of each measured run")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--port", type=int, default=18760, help="HTTP port; gRPC uses the next one")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "grpc.json", help="JSON report")
    args = parser.parse_args(argv)
    if not shutil.which("h2load"):
        print("h2load is not installed: `apt-get install nghttp2-client` (Debian) and run again", file=sys.stderr)
        return 2
    pixels = digits(1)[0].tobytes()
    work = Path(tempfile.mkdtemp(prefix="grpc-bench-"))
    (work / "grpc.bin").write_bytes(grpc_body(pixels))
    rest, head_length = rest_body(pixels)
    (work / "rest.bin").write_bytes(rest)
    http, grpc_port, c = f"http://127.0.0.1:{args.port}", args.port + 1, args.concurrency
    env = {"MNIST_PORT": str(args.port), "MNIST_GRPC_PORT": str(grpc_port), "MNIST_LOG_LEVEL": "warning"}
    rest_headers = ["Content-Type: application/octet-stream", f"Inference-Header-Content-Length: {head_length}"]
    grpc_headers = ["content-type: application/grpc", "te: trailers"]
    grpc_url = f"http://127.0.0.1:{grpc_port}/inference.GRPCInferenceService/ModelInfer"
    results = []
    with serve([sys.executable, "-m", "app"], f"{http}/health/ready", env) as service:
        for protocol, url, body, headers, connections, streams in (
            ("V2 REST binary", f"{http}/v2/models/{MODEL}/infer", "rest.bin", rest_headers, c, 1),
            ("V2 gRPC", grpc_url, "grpc.bin", grpc_headers, c, 1),
            ("V2 gRPC", grpc_url, "grpc.bin", grpc_headers, 1, c),
        ):
            before = grpc_failures(f"{http}/metrics")
            http1 = protocol == "V2 REST binary"
            with peak_rss(service.pid) as peak:
                figures = h2load(
                    url,
                    work / body,
                    headers,
                    connections=connections,
                    streams=streams,
                    seconds=args.seconds,
                    http1=http1,
                )
            if not http1:
                figures["errors"] += grpc_failures(f"{http}/metrics") - before
            results.append(Result(protocol, connections, streams, **figures, peak_rss_mb=round(peak[0], 1)))
            r = results[-1]
            print(
                f"{r.protocol:<16}{r.connections:>3} connections x {r.streams:<3} streams"
                f"{r.requests_per_s:>9.0f} req/s  mean {r.mean_ms:>6.2f} ms  errors {r.errors}"
                f"  peak RSS {r.peak_rss_mb:.0f} MB",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(r) for r in results], indent=1))
    best_grpc = max(r.requests_per_s for r in results if r.protocol == "V2 gRPC")
    print(f"gRPC / V2 REST binary at {c} in flight: {best_grpc / results[0].requests_per_s:.2f}; report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
