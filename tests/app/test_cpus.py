"""The CPU share comes from faked cgroup files (v2 and v1) and the affinity mask, whichever is smallest."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cpus import CpuShare, cgroup_quota, cpu_share


def cgroup_v2(root: Path, cpu_max: str | None, own: str = "/", parent_max: str | None = None) -> Path:
    """A cgroup v2 mount at root; this process in cgroup `own`, its cpu.max and its parent's. Returns the fake
    /proc/self/cgroup."""
    (root / "cgroup.controllers").parent.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    folder = root / own.strip("/")
    folder.mkdir(parents=True, exist_ok=True)
    if cpu_max is not None:
        (folder / "cpu.max").write_text(cpu_max)
    if parent_max is not None:
        (folder.parent / "cpu.max").write_text(parent_max)
    proc = root.parent / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return proc


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("200000 100000\n", 2.0), ("150000 100000\n", 1.5), ("50000 100000\n", 0.5), ("max 100000\n", None)],
)
def test_cgroup_v2_quota(tmp_path: Path, cpu_max: str, expected: float | None) -> None:
    proc = cgroup_v2(tmp_path / "cgroup", cpu_max)
    assert cgroup_quota(tmp_path / "cgroup", proc) == expected


def test_cgroup_v2_parent_limit_binds_the_child(tmp_path: Path) -> None:
    proc = cgroup_v2(tmp_path / "cgroup", "max 100000\n", own="/kubepods/pod1/api", parent_max="300000 100000\n")
    assert cgroup_quota(tmp_path / "cgroup", proc) == 3.0


def test_cgroup_v2_inside_a_container_reads_the_mount_itself(tmp_path: Path) -> None:
    # A private cgroup namespace: /proc/self/cgroup says "0::/", the mount root is the container's cgroup.
    proc = cgroup_v2(tmp_path / "cgroup", "400000 100000\n")
    assert cgroup_quota(tmp_path / "cgroup", proc) == 4.0


def test_no_cpu_max_means_no_limit(tmp_path: Path) -> None:
    proc = cgroup_v2(tmp_path / "cgroup", None)
    assert cgroup_quota(tmp_path / "cgroup", proc) is None


def cgroup_v1(root: Path, quota: int, period: int = 100000, name: str = "cpu,cpuacct") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (folder / "cpu.cfs_period_us").write_text(f"{period}\n")
    proc = root.parent / "proc-self-cgroup"
    proc.write_text(f"4:memory:/docker/abc\n3:{name}:/docker/abc\n0::/\n")
    return proc


@pytest.mark.parametrize(("quota", "expected"), [(200000, 2.0), (250000, 2.5), (-1, None)])
def test_cgroup_v1_quota(tmp_path: Path, quota: int, expected: float | None) -> None:
    proc = cgroup_v1(tmp_path / "cgroup", quota)
    assert cgroup_quota(tmp_path / "cgroup", proc) == expected


def test_cgroup_v1_with_a_separate_cpu_controller(tmp_path: Path) -> None:
    proc = cgroup_v1(tmp_path / "cgroup", 100000, name="cpu")
    assert cgroup_quota(tmp_path / "cgroup", proc) == 1.0


def test_no_cgroup_files_at_all(tmp_path: Path) -> None:
    assert cgroup_quota(tmp_path / "nothing", tmp_path / "no-proc") is None


@pytest.mark.parametrize(
    ("share", "usable"),
    [
        (CpuShare(cores=64, affinity=64, quota=2.0), 2),  # the quota binds
        (CpuShare(cores=64, affinity=4, quota=None), 4),  # the affinity mask binds
        (CpuShare(cores=64, affinity=3, quota=8.0), 3),
        (CpuShare(cores=64, affinity=64, quota=2.5), 2),  # a fractional quota rounds down
        (CpuShare(cores=64, affinity=64, quota=0.5), 1),  # never below one
        (CpuShare(cores=2, affinity=2, quota=None), 2),
    ],
)
def test_usable_cpus_is_the_smallest_bound(share: CpuShare, usable: int) -> None:
    assert share.usable == usable
    assert share.describe().startswith(f"{usable} usable")


def test_cpu_share_reads_quota_and_affinity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = cgroup_v2(tmp_path / "cgroup", "100000 100000\n")
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2})
    share = cpu_share(tmp_path / "cgroup", proc)
    assert (share.affinity, share.quota, share.usable) == (3, 1.0, 1)
