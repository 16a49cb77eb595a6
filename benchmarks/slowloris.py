"""make slowloris: normal traffic at c=16 with and without 200 slow clients, against one service on 127.0.0.1.

The slow clients trickle one byte a second: half their headers, half their body. Each one the service cuts off
(MNIST_HEADER_TIMEOUT_S, MNIST_BODY_TIMEOUT_S) is replaced at once, so 200 are open for the whole run. Prints
/predict's p99 unloaded and under the slow clients (target: within 2x), and how long the slow ones were held.
Then the same with the model process killed (kill -9) under 64 clients: how long until requests succeed again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.bench import MULTIPART, ROOT, digits, png, serve, write_bodies, wrk

SLOW_HEAD = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nX-Padding: " + b"a" * 200
SLOW_BODY_HEAD = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: 200\r\n\r\n"


async def trickle(port: int, head: bytes, slowly: bytes) -> bytes | None:
    """Send `head`, then `slowly` one byte a second; what the service answered when it closed the connection, b""
    if it reset it, None if it never closed it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        for byte in slowly:
            writer.write(bytes([byte]))
            try:
                return await asyncio.wait_for(reader.read(), 1.0)  # read() returns at the service's close
            except TimeoutError:
                continue
        return None
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def slow_client(port: int, head: bytes, slowly: bytes, held: list[float]) -> None:
    """One slow connection, until the service closes it; the seconds it was held go to `held`."""
    start = time.monotonic()
    try:
        await trickle(port, head, slowly)
    finally:
        held.append(time.monotonic() - start)


async def slowloris(port: int, count: int, stop: threading.Event, held: list[float]) -> None:
    async def keep_one(index: int) -> None:
        while not stop.is_set():
            await (
                slow_client(port, b"", SLOW_HEAD, held)
                if index % 2
                else slow_client(port, SLOW_BODY_HEAD, b"\0" * 200, held)
            )

    await asyncio.gather(*(keep_one(i) for i in range(count)))


def in_thread(port: int, count: int) -> tuple[threading.Event, threading.Thread, list[float]]:
    stop, held = threading.Event(), []
    thread = threading.Thread(target=lambda: asyncio.run(slowloris(port, count, stop, held)))
    thread.start()
    return stop, thread, held


def recovery_after_kill(port: int, server_pid: int, clients: int = 64) -> float:
    """Seconds from kill -9 of the model process until every client has had a 200 again."""
    image = png(digits(1)[0])
    # Started from a thread of the lifespan: a child of that thread's task.
    children = [
        c for task in Path(f"/proc/{server_pid}/task").iterdir() for c in (task / "children").read_text().split()
    ]
    [model] = [int(c) for c in children if b"multiprocessing.spawn" in Path(f"/proc/{c}/cmdline").read_bytes()]
    recovered: dict[int, float] = {}
    killed_at = 0.0
    stop = time.monotonic() + 15

    def client(index: int) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", image, {"Content-Type": "image/png"})
        while time.monotonic() < stop and index not in recovered:
            try:
                with urllib.request.urlopen(request, timeout=20):
                    if killed_at and time.monotonic() > killed_at:
                        recovered[index] = time.monotonic()
            except OSError:
                pass

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    killed_at = time.monotonic()
    os.kill(model, signal.SIGKILL)
    for thread in threads:
        thread.join()
    return max(recovered.values()) - killed_at if len(recovered) == clients else float("inf")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="length of each measured run")
    parser.add_argument("--slow", type=int, default=200, help="slow connections held open")
    parser.add_argument("--port", type=int, default=18900, help="local port of the service")
    args = parser.parse_args(argv)
    bodies = write_bodies(ROOT / "build" / "bench" / "slowloris")["multipart"]
    url = f"http://127.0.0.1:{args.port}/predict"
    env = {"MNIST_PORT": str(args.port), "MNIST_GRPC_PORT": str(args.port + 1), "MNIST_LOG_LEVEL": "warning"}
    with serve([sys.executable, "-m", "app"], f"http://127.0.0.1:{args.port}/health/ready", env) as server:
        unloaded = wrk(url, bodies, MULTIPART, 16, args.seconds)
        stop, thread, held = in_thread(args.port, args.slow)
        time.sleep(2)
        loaded = wrk(url, bodies, MULTIPART, 16, args.seconds)
        stop.set()
        thread.join()
        recovery = recovery_after_kill(args.port, server.pid)
    ratio = loaded["p99_ms"] / unloaded["p99_ms"]
    print(f"c=16 /predict unloaded:        p99 {unloaded['p99_ms']:.1f} ms, {unloaded['requests_per_s']:.0f} req/s")
    print(f"c=16 with {args.slow} slow clients: p99 {loaded['p99_ms']:.1f} ms, {loaded['requests_per_s']:.0f} req/s")
    print(f"p99 ratio: {ratio:.2f} (target <= 2); errors {unloaded['errors'] + loaded['errors']:.0f}")
    print(f"slow connections cut off: {len(held)}, held {statistics.median(held):.1f} s median, {max(held):.1f} s max")
    print(f"kill -9 of the model process under 64 clients: every client served again after {recovery:.2f} s")
    return 0 if ratio <= 2 and recovery <= 2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
