"""The selection filters as user space applies them to the processes found
running at start (otel_exec.policy.selection), with the kernel's meaning;
and the /proc facts the agent feeds it (host.procfs)."""
from __future__ import annotations

import os
from pathlib import Path

from otel_exec.host import procfs
from otel_exec.policy.selection import Selection


def test_no_filter_reports_every_process() -> None:
    assert Selection().reports("sshd", 0, "/usr/sbin/sshd")
    assert Selection().reports("kworker/0:1", None, "")


def test_comm_includes_only_the_names_given_and_exclude_comm_drops_its_own() -> None:
    only = Selection(comm=["sleep", "bash"])
    assert only.reports("sleep", 1000, "/usr/bin/sleep")
    assert not only.reports("sshd", 0, "/usr/sbin/sshd")
    assert not only.reports("slee", 1000, "/usr/bin/sleep")  # the whole name, not a prefix
    never = Selection(exclude_comm=["cron"])
    assert not never.reports("cron", 0, "/usr/sbin/cron")
    assert never.reports("sshd", 0, "/usr/sbin/sshd")
    both = Selection(comm=["cron", "sshd"], exclude_comm=["cron"])
    assert both.reports("sshd", 0, "/usr/sbin/sshd") and not both.reports("cron", 0, "/usr/sbin/cron")


def test_uid_is_the_real_uid_and_an_unread_one_matches_nothing() -> None:
    sel = Selection(uid=[1000])
    assert sel.needs_uid and sel.reports("sh", 1000, "/bin/sh")
    assert not sel.reports("sh", 0, "/bin/sh")
    assert not sel.reports("sh", -1, "/bin/sh")  # procevents' value for an id not read
    assert not sel.reports("sh", None, "/bin/sh")
    assert not Selection().needs_uid


def test_path_prefix_is_a_string_prefix_of_the_executable_path() -> None:
    sel = Selection(path_prefix=["/usr/bin/py", "/opt/"])
    assert sel.reports("python3", 0, "/usr/bin/python3")
    assert sel.reports("app", 0, "/opt/app/bin/app")
    assert not sel.reports("sh", 0, "/bin/sh")
    assert not sel.reports("kthreadd", 0, "")  # a kernel thread has no executable


def test_container_only_reports_another_pid_namespace_and_not_an_unread_one() -> None:
    sel = Selection(host_pid_ns=4026531836)
    assert sel.needs_pid_ns and not Selection().needs_pid_ns
    assert sel.reports("sh", 0, "/bin/sh", pid_ns=4026532500)
    assert not sel.reports("sh", 0, "/bin/sh", pid_ns=4026531836)
    assert not sel.reports("sh", 0, "/bin/sh", pid_ns=None)


def test_cgroup_matches_the_cgroup_and_below_never_a_sibling_sharing_its_prefix() -> None:
    sel = Selection(cgroups=["/system.slice/ssh.service"])
    assert sel.needs_cgroup and not Selection().needs_cgroup
    assert sel.reports("sshd", 0, "/usr/sbin/sshd", cgroup_path="/system.slice/ssh.service")
    assert sel.reports("sshd", 0, "/usr/sbin/sshd", cgroup_path="/system.slice/ssh.service/session-1.scope")
    assert not sel.reports("x", 0, "/x", cgroup_path="/system.slice/ssh.services")
    assert not sel.reports("x", 0, "/x", cgroup_path="/system.slice")
    assert not sel.reports("x", 0, "/x", cgroup_path=None)
    root = Selection(cgroups=["/"])
    assert root.reports("x", 0, "/x", cgroup_path="/") and root.reports("x", 0, "/x", cgroup_path="/a/b")


def test_every_filter_given_must_pass() -> None:
    sel = Selection(comm=["sleep"], uid=[1000], path_prefix=["/usr/"], cgroups=["/user.slice"])
    facts = dict(comm="sleep", uid=1000, pathname="/usr/bin/sleep", cgroup_path="/user.slice/user-1000.slice")
    assert sel.reports(**facts)  # type: ignore[arg-type]
    for field, other in (("comm", "bash"), ("uid", 0), ("pathname", "/bin/sleep"), ("cgroup_path", "/init.scope")):
        assert not sel.reports(**{**facts, field: other})  # type: ignore[arg-type]


def test_procfs_reads_the_pid_namespace_and_cgroup_path_of_a_process(tmp_path: Path) -> None:
    assert procfs.pid_ns() == os.stat("/proc/self/ns/pid").st_ino == procfs.pid_ns(os.getpid())
    own = [line for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::")]
    assert procfs.cgroup_path(os.getpid()) == (own[0][3:] if own else None)
    fake = tmp_path / "42"
    fake.mkdir()
    (fake / "cgroup").write_bytes(b"1:name=systemd:/old\n0::/system.slice/a b.service\n")
    assert procfs.cgroup_path(42, str(tmp_path)) == "/system.slice/a b.service"
    (fake / "cgroup").write_bytes(b"1:cpu:/v1-only\n")
    assert procfs.cgroup_path(42, str(tmp_path)) is None
    assert procfs.cgroup_path(43, str(tmp_path)) is None
