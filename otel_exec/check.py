"""`otel-exec check`: every prerequisite of `run` as configured, each with
pass, warn or fail and the fix, using the code that `run` itself uses for
each (privileges, BTF, tracefs, the CO-RE load, BCC, the spool directory,
the OTLP transport). `run` calls preflight() before it attaches and prints
every failing check at once."""
from __future__ import annotations

import ctypes
import os
import shutil
import time
from typing import Callable, Iterator, TextIO

from otel_exec import __version__
from otel_exec.bcc import toolchain
from otel_exec.config import Config
from otel_exec.core import libbpf, probes
from otel_exec.errors import OtelExecError, TracefsError
from otel_exec.host import privileges, tracefs
from otel_exec.export.otlp import protowire as w
from otel_exec.export.otlp.encode import export_request
from otel_exec.export.otlp.transport import OtlpOptions, Outcome, configured, make_transport, transport_settings
from otel_exec.export.spool import SpoolDirectory
from otel_exec.host.identity import HostIdentity
from otel_exec.sources import backend_and_reason

PASS, WARN, FAIL = "pass", "warn", "fail"
# BTF type names that tell what the kernel offers: the ring buffer (5.8+),
# tp_btf programs on the exec and exit tracepoints, sched_prepare_exec (6.10+).
_RINGBUF = b"BPF_FUNC_ringbuf_reserve"
_TP_BTF = {b"btf_trace_sched_process_exec", b"btf_trace_sched_process_exit"}
_PREPARE_EXEC = probes.OPTIONAL_PROGRAMS["handle_prepare_exec"]
TIME_ERROR = 5  # adjtimex(): the clock is not synchronised


# A plain class, not a dataclass: this module is on the start-up path
# (docs/architecture.md, Rules).
class Result:
    def __init__(self, name: str, status: str, detail: str, fix: str = "", exit_code: int = 1) -> None:
        self.name = name
        self.status = status  # PASS, WARN or FAIL
        self.detail = detail
        self.fix = fix
        self.exit_code = exit_code  # the code `run` exits with for this failure (otel_exec.errors)

    def line(self) -> str:
        return f"{self.status.upper():4} {self.name}: {self.detail}" + (f"\n       fix: {self.fix}" if self.fix else "")


def _failed(name: str, e: OtelExecError, fix: str) -> Result:
    return Result(name, FAIL, str(e).splitlines()[0], fix, e.exit_code)


def check_privileges() -> Result:
    try:
        privileges.check_can_load_bpf()
    except OtelExecError as e:
        return _failed("privileges", e, "run as root (sudo) or grant CAP_BPF, CAP_PERFMON (and CAP_SYS_RESOURCE)")
    return Result("privileges", PASS, f"euid {os.geteuid()}, CAP_BPF/CAP_PERFMON or CAP_SYS_ADMIN held")


def check_btf(cfg: Config) -> Iterator[Result]:
    """Kernel BTF, and what it says the kernel offers."""
    try:
        present = probes.btf_names_present({_RINGBUF, _PREPARE_EXEC, probes.DIRECT_READS_KFUNC, *_TP_BTF})
    except OtelExecError as e:
        if cfg.backend == "bcc":
            yield Result("btf", WARN, f"{e}; --backend bcc does not need it")
        elif cfg.backend == "auto" and toolchain.bcc_problem() is None:
            yield Result("btf", WARN, f"{e}; --backend auto uses BCC", "a kernel with BTF runs the CO-RE backend")
        else:
            yield _failed("btf", e, "use a kernel built with CONFIG_DEBUG_INFO_BTF=y, or --backend bcc "
                                    f"({toolchain.install_hint()})")
        return
    yield Result("btf", PASS, f"{probes.VMLINUX_BTF} readable")
    missing = sorted(n.decode() for n in {_RINGBUF, *_TP_BTF} - present)
    if missing:
        yield Result("ring buffer and tp_btf", FAIL, f"the kernel's BTF lacks {', '.join(missing)}",
                     "the CO-RE backend needs Linux 5.8 or later (or --backend bcc)", 6)
    else:
        yield Result("ring buffer and tp_btf", PASS, "BPF ring buffer and tp_btf exec/exit tracepoints offered")
    if _PREPARE_EXEC in present:
        yield Result("sched_prepare_exec", PASS, "offered: the command name before exec is recorded")
    else:
        yield Result("sched_prepare_exec", WARN, "not offered (Linux < 6.10): prev_comm stays empty",
                     "Linux 6.10 or later records the command name before exec")


def check_core_load(cfg: Config) -> Result:
    """A real load and attach of the CO-RE object, then detach."""
    try:
        loaded = probes.KernelProbes(cfg)
        loaded.attach()
    except OtelExecError as e:
        return _failed("co-re load", e, "see the verifier/libbpf message; docs/backends.md")
    try:
        loaded.detach()
    finally:
        loaded.close()
    return Result("co-re load", PASS, "object loaded, attached and detached")


def check_tracefs(cfg: Config) -> Result:
    """Without mounting anything: mounted, or an empty directory run would mount."""
    needed = cfg.backend == "bcc"
    for path in (tracefs.TRACEFS, tracefs.DEBUGFS_TRACING):
        if tracefs.usable(path):
            return Result("tracefs", PASS, f"mounted at {path}")
    try:
        empty = not os.listdir(tracefs.TRACEFS)
    except OSError:
        empty = False
    if empty:
        return Result("tracefs", PASS if not needed else WARN,
                      f"not mounted; {tracefs.TRACEFS} is empty and `run` mounts it when BCC needs it",
                      "" if not needed else f"`{tracefs.MOUNT_COMMAND}`")
    why = f"not mounted and {tracefs.TRACEFS} cannot be mounted on"
    if needed:
        return Result("tracefs", FAIL, why, f"`{tracefs.MOUNT_COMMAND}`", TracefsError.exit_code)
    return Result("tracefs", WARN, why + " (only the BCC backend needs it)", f"`{tracefs.MOUNT_COMMAND}`")


def check_bcc(cfg: Config) -> Result:
    problem = toolchain.bcc_problem()
    if problem is None:
        return Result("bcc fallback", PASS, "the bcc module and this kernel's headers are installed")
    if cfg.backend == "bcc":
        return Result("bcc fallback", FAIL, problem, toolchain.install_hint(), 7)
    return Result("bcc fallback", WARN, f"unavailable: {problem}", toolchain.install_hint())


def _uses_otlp(cfg: Config) -> bool:
    return "otlp" in cfg.exporters or (not cfg.exporters and configured(_otlp_options(cfg)))


def _otlp_options(cfg: Config) -> OtlpOptions:
    return OtlpOptions(cfg.endpoint, cfg.protocol, cfg.headers, cfg.span_env)


def check_spool(cfg: Config) -> Result:
    """The directory as the agent opens it (owner, mode), and its free space."""
    if not cfg.spool_dir:
        return Result("spool", WARN, "--no-spool: records wait in memory only", "drop --no-spool to survive outages")
    try:
        user = privileges.resolve_user(cfg.user) if cfg.user else None
        directory = SpoolDirectory(cfg.spool_dir, user, cfg.spool_allow_group_read)
    except OtelExecError as e:
        return _failed("spool", e, f"chown root:root {cfg.spool_dir} && chmod 0700 {cfg.spool_dir}, "
                                   "or another --spool-dir")
    try:
        st = os.fstat(directory.fd)
        free = shutil.disk_usage(f"/proc/self/fd/{directory.fd}").free
    finally:
        directory.close()
    detail = f"{cfg.spool_dir}: uid {st.st_uid}, mode {st.st_mode & 0o7777:04o}, {free >> 20} MiB free"
    if free < cfg.spool_max_bytes:
        return Result("spool", WARN, detail + f" (less than --spool-max-bytes {cfg.spool_max_bytes >> 20} MiB)",
                      "free space or lower --spool-max-bytes")
    return Result("spool", PASS, detail)


def check_otlp(cfg: Config) -> Result:
    """A real export of one test log record over the configured protocol,
    TLS and headers; the collector's answer is reported."""
    opts = _otlp_options(cfg)
    try:
        settings = transport_settings("logs", opts)
        transport = make_transport("logs", opts)
    except OtelExecError as e:
        return _failed("otlp", e, "fix the endpoint, protocol, header or TLS setting named")
    record = w.len_field(2, w.fixed64_field(1, time.time_ns()) + w.varint_field(2, 9)
                         + w.len_field(5, w.any_string("otel-exec check: test record")))
    where = f"{settings.protocol} {settings.target}"
    transport.start()
    try:
        answer = transport.send(export_request(w.repeated(1, []), [record]))
    finally:
        transport.shutdown()
    said = " ".join(filter(None, (answer.reason, answer.message)))
    if answer.outcome is Outcome.SENT and not answer.rejected:
        return Result("otlp", PASS, f"{where}: the collector accepted a test record{': ' + said if said else ''}")
    return Result("otlp", FAIL, f"{where}: {answer.outcome.value}: {said or 'no answer'}",
                  "check the collector is up and the endpoint, TLS CA and headers match it")


def check_clock_and_identity() -> Iterator[Result]:
    identity = HostIdentity.current()
    state = ctypes.CDLL("libc.so.6", use_errno=True).adjtimex(ctypes.create_string_buffer(512))
    if state == TIME_ERROR:
        yield Result("clock", WARN, "the system clock is not synchronised: exec times may be off",
                     "run an NTP client (chrony, systemd-timesyncd)")
    else:
        yield Result("clock", PASS, time.strftime("synchronised, %Y-%m-%d %H:%M:%S %Z"))
    if identity.boot_id:
        yield Result("host identity", PASS, f"machine id {identity.machine_id}, boot id {identity.boot_id}")
    else:
        yield Result("host identity", WARN, f"machine id {identity.machine_id}; no boot id: exec ids are weaker "
                                            "across reboots", "mount /proc")


def version_lines(cfg: Config) -> Iterator[str]:
    """`otel-exec --version`: the version, the backend `run` would use and
    why, and what the kernel offers, from the probes `check` makes; nothing
    is loaded into the kernel, so it runs as any user."""
    yield f"otel-exec {__version__}"
    try:
        backend, reason = backend_and_reason(cfg)
        yield f"backend: {backend} ({reason})"
    except OtelExecError as e:
        yield f"backend: none ({e})"
    for result in check_btf(cfg):
        yield f"{result.name}: {result.detail}"
    try:
        yield f"libbpf: {libbpf.version()} (the system's libbpf.so.1)"
    except OtelExecError as e:
        yield f"libbpf: missing: {e}"
    try:
        yield f"co-re object: {probes.object_path()}"
    except OtelExecError as e:
        yield f"co-re object: {e}"


def all_checks(cfg: Config) -> list[Callable[[], Iterator[Result] | Result]]:
    """What `check` runs, in order."""
    checks: list[Callable[[], Iterator[Result] | Result]] = [check_privileges, lambda: check_btf(cfg)]
    if cfg.backend != "bcc":
        checks.append(lambda: check_core_load(cfg))
    checks += [lambda: check_tracefs(cfg), lambda: check_bcc(cfg)]
    if _uses_otlp(cfg):
        checks += [lambda: check_spool(cfg), lambda: check_otlp(cfg)]
    checks.append(check_clock_and_identity)
    return checks


def preflight(cfg: Config) -> list[Result]:
    """The checks `run` makes before it attaches: no load, no export."""
    checks: list[Callable[[], Iterator[Result] | Result]] = [check_privileges, lambda: check_btf(cfg)]
    if cfg.backend == "bcc":
        checks += [lambda: check_tracefs(cfg), lambda: check_bcc(cfg)]
    if _uses_otlp(cfg):
        checks.append(lambda: check_spool(cfg))
    return [r for r in _results(checks) if r.status == FAIL]


def _results(checks: list[Callable[[], Iterator[Result] | Result]]) -> Iterator[Result]:
    for check in checks:
        got = check()
        yield from ([got] if isinstance(got, Result) else got)


def run_checks(cfg: Config, out: TextIO) -> int:
    """Prints every result; 0 only when nothing failed, else the exit code
    `run` would give for the first failure."""
    failed: list[Result] = []
    for result in _results(all_checks(cfg)):
        print(result.line(), file=out, flush=True)
        if result.status == FAIL:
            failed.append(result)
    print(f"{len(failed)} check(s) failed" if failed else "all checks passed: `otel-exec run` can start as "
          "configured", file=out)
    return failed[0].exit_code if failed else 0
