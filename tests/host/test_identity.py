"""Host identity, clock conversion and exec ids (otel_exec.host.identity)."""
import os
import re
import time

import pytest

from otel_exec.host.identity import HostIdentity, kernel_dev_to_user


@pytest.fixture(scope="module")
def ident():
    return HostIdentity.current()


def proc_start_ticks(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rfind(b")") + 2:].split()[19])


def exec_id_from_proc(ident, pid):
    st = os.stat(f"/proc/{pid}/exe")
    return ident.exec_id(pid, proc_start_ticks(pid), st.st_dev, st.st_ino)


def test_current(ident):
    assert ident.machine_id
    with open("/proc/sys/kernel/random/boot_id") as f:
        assert ident.boot_id == f.read().strip()
    assert ident.clk_tck == os.sysconf("SC_CLK_TCK")
    assert HostIdentity.current().machine_id == ident.machine_id


def test_boot_ns_to_epoch_ns(ident):
    boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert abs(ident.boot_ns_to_epoch_ns(boot) - time.time_ns()) < 50_000_000


def test_ticks_arithmetic(ident):
    ns_per_tick = 10**9 // ident.clk_tck
    for ticks in (0, 1, 12345, 2**40):
        assert ident.ticks_from_boot_ns(ticks * ns_per_tick) == ticks
        assert ident.ticks_from_boot_ns(ticks * ns_per_tick + ns_per_tick - 1) == ticks
    # This process started before now, in the same units.
    now = ident.ticks_from_boot_ns(time.clock_gettime_ns(time.CLOCK_BOOTTIME))
    assert 0 < proc_start_ticks(os.getpid()) <= now


def test_exec_id_of_current_process(ident):
    first = exec_id_from_proc(ident, os.getpid())
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert exec_id_from_proc(HostIdentity.current(), os.getpid()) == first


def test_exec_id_depends_on_every_input(ident):
    base = (100, 2000, os.makedev(8, 1), 42)
    ids = {ident.exec_id(*base)}
    for i in range(4):
        changed = list(base)
        changed[i] += 1
        ids.add(ident.exec_id(*changed))
    other_host = HostIdentity("other", ident.boot_id, ident.clk_tck, 0)
    other_boot = HostIdentity(ident.machine_id, "other", ident.clk_tck, 0)
    ids |= {other_host.exec_id(*base), other_boot.exec_id(*base)}
    assert len(ids) == 7
    # The clock offset is not part of the id.
    assert HostIdentity(ident.machine_id, ident.boot_id, ident.clk_tck, 5).exec_id(*base) == \
        ident.exec_id(*base)


def test_kernel_thread_exec_id(ident):
    assert re.fullmatch(r"[0-9a-f]{32}", ident.exec_id(2, 0, 0, 0))


@pytest.mark.parametrize("major,minor", [(8, 1), (259, 3), (0, 45), (253, 0), (4095, (1 << 20) - 1)])
def test_kernel_dev_to_user(major, minor):
    user = kernel_dev_to_user(major << 20 | minor)
    assert (os.major(user), os.minor(user)) == (major, minor)


def test_kernel_dev_of_root_fs():
    dev = os.stat("/").st_dev
    assert kernel_dev_to_user(os.major(dev) << 20 | os.minor(dev)) == dev
