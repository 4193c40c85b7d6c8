"""The BCC backend's prerequisites (BCC and this kernel's headers), installed
on first use, and the ``bcc_env`` fixture: the environment an agent run with
``--backend bcc`` needs."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from otel_exec.bcc import toolchain
from tests.helpers.agent_run import kernel_available


def _apt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", *args], capture_output=True, text=True,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdin=subprocess.DEVNULL)


def _apt_install(packages: list[str]) -> None:
    cmd = ["install", "-y", "-q", "--no-install-recommends", *packages]
    if _apt(*cmd).returncode != 0:
        _apt("update")
        done = _apt(*cmd)
        if done.returncode != 0:
            raise RuntimeError(f"apt-get install {' '.join(packages)} failed:\n{done.stdout[-2000:]}"
                               f"{done.stderr[-2000:]}")


def _apt_has(package: str) -> bool:
    out = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True).stdout
    m = re.search(r"Candidate:\s*(\S+)", out)
    return bool(m) and m.group(1) != "(none)"


def ensure_bcc() -> dict[str, str]:
    """Install BCC and kernel headers if missing; the environment the BCC
    agent needs (BCC_KERNEL_SOURCE unless the kernel's own headers are
    installed). Idempotent: installs nothing the second time."""
    if shutil.which("apt-get") is None:
        raise RuntimeError("no apt-get: install bpfcc-tools python3-bpfcc and kernel headers by hand")
    installed = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status} ", *toolchain.PACKAGES],
                               capture_output=True, text=True).stdout.split()
    if installed != ["installed"] * len(toolchain.PACKAGES):
        _apt_install(list(toolchain.PACKAGES))
    env = dict(os.environ)
    env.pop(toolchain.KERNEL_SOURCE_ENV, None)
    if toolchain.headers_problem(env) is None:
        return env  # the running kernel's own headers
    if not toolchain.installed_headers():
        own = toolchain.headers_package()
        if _apt_has(own):
            _apt_install([own])
        else:
            arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
            # Debian's meta package for the distribution kernel, else Ubuntu's.
            meta = next((p for p in (f"linux-headers-{arch}", "linux-headers-generic") if _apt_has(p)), None)
            if meta is None:
                _apt("update")
                meta = next((p for p in (f"linux-headers-{arch}", "linux-headers-generic") if _apt_has(p)), None)
            if meta is None:
                raise RuntimeError(f"no kernel headers package for {arch} in apt")
            _apt_install([meta])
    env[toolchain.KERNEL_SOURCE_ENV] = str(toolchain.prepare_headers())
    assert toolchain.headers_problem(env) is None
    return env


@pytest.fixture(scope="module")
def bcc_env() -> dict[str, str]:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    return ensure_bcc()
