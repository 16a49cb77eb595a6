"""The CPUs this process may really use: the container's CPU quota and the affinity mask, not the node's cores.

os.cpu_count() is the node's: on a 64-core node a pod limited to 2 CPUs would give ONNX Runtime 64 threads, which the
quota then throttles (p99 suffers first). Linux states the limit in the cgroup's cpu.max (v2) or
cpu.cfs_quota_us / cpu.cfs_period_us (v1), and the cores the scheduler may use in the affinity mask (cpusets,
`taskset`, `docker --cpuset-cpus`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class CpuShare:
    """What bounds this process's CPU: the node's cores, the affinity mask, the cgroup quota (None: no limit)."""

    cores: int
    affinity: int
    quota: float | None

    @property
    def usable(self) -> int:
        """Whole CPUs to plan threads for: the smallest bound, rounded down (a thread beyond a fractional quota is
        throttled), at least one."""
        bounds = [self.cores, self.affinity] + ([] if self.quota is None else [math.floor(self.quota)])
        return max(1, min(bounds))

    def describe(self) -> str:
        quota = "none" if self.quota is None else f"{self.quota:g} CPUs"
        return f"{self.usable} usable (node cores {self.cores}, affinity {self.affinity}, cgroup quota {quota})"


def _v2_quota(folder: Path) -> float | None:
    """cpu.max holds `QUOTA PERIOD` in microseconds, or `max PERIOD` when unlimited."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(folder: Path) -> float | None:
    """cpu.cfs_quota_us is -1 when unlimited."""
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def _own_cgroups(proc_cgroup: Path) -> dict[str, str]:
    """Controller list -> this process's cgroup path, from /proc/self/cgroup (`0::/path` is cgroup v2)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return {}
    return {
        controllers: path for _, controllers, path in (line.split(":", 2) for line in lines if line.count(":") >= 2)
    }


def _with_ancestors(mount: Path, path: str) -> list[Path]:
    """The cgroup's folder and every parent up to the mount: a parent's limit binds the child too. Inside a container
    the mount is the container's own cgroup, and the host path in /proc/self/cgroup does not exist under it."""
    parts = [p for p in path.split("/") if p]
    folders = [mount.joinpath(*parts[:n]) for n in range(len(parts), 0, -1)]
    return [f for f in folders if f.is_dir()] + [mount]


def cgroup_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The tightest CPU quota, in CPUs, on this process's cgroup and its parents (v2, else v1); None: unlimited."""
    cgroups = _own_cgroups(proc_cgroup)
    if (root / "cgroup.controllers").exists():  # cgroup v2: one unified hierarchy
        folders, read = _with_ancestors(root, cgroups.get("", "/")), _v2_quota
    else:
        cpu = next((c for c in cgroups if "cpu" in c.split(",")), "cpu")
        mount = next((root / name for name in (cpu, "cpu", "cpu,cpuacct") if (root / name).is_dir()), root / "cpu")
        folders, read = _with_ancestors(mount, cgroups.get(cpu, "/")), _v1_quota
    quotas = [q for q in map(read, folders) if q is not None]
    return min(quotas, default=None)


def affinity() -> int:
    """CPUs the scheduler may run this process on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_share(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> CpuShare:
    """This process's CPU bounds, read now."""
    return CpuShare(cores=os.cpu_count() or 1, affinity=affinity(), quota=cgroup_quota(root, proc_cgroup))
