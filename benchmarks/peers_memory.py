"""Peak resident memory of a server's whole process tree while it is under load: the peers table's memory column,
measured the same way for the service and for each framework (whose workers and HTTP servers are child processes)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def rss_bytes(pid: int) -> int:
    """One process's resident memory; 0 once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants, summed (pages shared by two processes count twice)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, IndexError, ValueError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # the command may hold spaces and ")"
            children.setdefault(parent, []).append(int(stat.parent.name))
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        total += rss_bytes(current)
        pending.extend(children.get(current, []))
    return total


@contextmanager
def peak_rss(pid: int, every_s: float = 0.5) -> Iterator[list[float]]:
    """Yields a one-item list that holds, once the block ends, the tree's peak resident memory in MB."""
    peak = [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss_bytes(pid) / 2**20)
            stop.wait(every_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join()
