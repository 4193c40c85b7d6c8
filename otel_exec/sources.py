"""Backend selection: which EventSource (agent.EventSource) the agent reads.

- core: CO-RE programs through libbpf (source_core); needs kernel BTF.
- bcc: BCC compiles bpf/otel_exec_bcc.c at start (otel_exec/bcc/); needs the
  `bcc` Python module (python3-bpfcc) and kernel headers.
- auto (default): core when /sys/kernel/btf/vmlinux exists, else bcc when
  BCC can run, else a NoBtfError naming the packages to install.
Both produce the same ExecEvent/ExitEvent, so everything downstream is
shared (docs/backends.md).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from otel_exec.bcc import toolchain

from otel_exec.core import probes
from otel_exec.config import Config
from otel_exec.errors import BccError, NoBtfError, OtelExecError
from otel_exec.host import privileges

if TYPE_CHECKING:
    from otel_exec.host.identity import HostIdentity

log = logging.getLogger(__name__)


def choose_backend(cfg: Config) -> str:
    """core or bcc, for cfg.backend; raises when neither can run."""
    return backend_and_reason(cfg)[0]


def backend_and_reason(cfg: Config) -> tuple[str, str]:
    """The backend `run` would use for cfg.backend and why (what
    `otel-exec --version` says), without loading anything; raises when
    neither can run."""
    if cfg.backend in ("core", "bcc"):
        if cfg.backend == "bcc":
            problem = toolchain.bcc_problem()
            if problem:
                raise BccError(f"the BCC backend cannot run: {problem}; install: {toolchain.install_hint()}")
        return cfg.backend, f"--backend {cfg.backend}"
    if probes.VMLINUX_BTF.exists():
        return "core", f"BTF at {probes.VMLINUX_BTF}"
    problem = toolchain.bcc_problem()
    if problem is None:
        return "bcc", f"no kernel BTF ({probes.VMLINUX_BTF}); BCC and this kernel's headers are installed"
    raise NoBtfError(
        f"{probes.VMLINUX_BTF} does not exist: this kernel lacks BTF, which the CO-RE backend needs, and the "
        f"BCC backend cannot run either ({problem}); install BCC and this kernel's headers: "
        f"{toolchain.install_hint()}")


def _checked_backend(cfg: Config) -> str:
    """The backend a start loads: first whether this process may load eBPF
    at all (the same error whichever backend), then the choice; raises
    either's error."""
    privileges.check_can_load_bpf()
    return choose_backend(cfg)


def begin_core_load(cfg: Config) -> probes.KernelProbes | None:
    """The CO-RE programs' load begun as soon as the configuration is known,
    before the rest of the start (its imports, the preflight checks) that
    it then overlaps; for start_source. None when the CO-RE backend would
    not run or cannot load: start_source meets the same condition later,
    where the start reports it, after the earlier checks' own errors."""
    try:
        if _checked_backend(cfg) != "core":
            return None
        return probes.KernelProbes(cfg)
    except OtelExecError:
        return None


def start_source(cfg: Config, identity: HostIdentity,
                 loading: probes.KernelProbes | None = None):  # -> Callable[[], agent.EventSource]
    """Begins loading the backend's programs, or takes over the load
    begin_core_load began (`loading`); the function returned waits for them
    and gives the source, loaded and attached, or raises what the load
    raised. The CO-RE programs' load (libbpf's relocations and the verifier's
    work, the largest part of the start-up) goes on on a thread of its own until then, while the
    caller's thread does the rest of the start; BCC's is done first. A load
    begun was begun after the privilege check and the choice of the CO-RE
    backend: only a start without one makes them here."""
    try:
        if loading is not None or _checked_backend(cfg) == "core":
            from otel_exec.core.source import CoreSource

            core = CoreSource(cfg, identity, probes=loading)

            def attached() -> CoreSource:
                core.attach()
                return core

            return attached
    except BaseException:
        if loading is not None:
            loading.close()
        raise
    from otel_exec.bcc.source import BccSource

    if cfg.backend == "auto":
        cfg.check_backend("bcc", f"--backend auto chose it: {probes.VMLINUX_BTF} does not exist")
        log.info("no kernel BTF (%s): using the BCC backend", probes.VMLINUX_BTF)
    source = BccSource(cfg, identity)
    return lambda: source

