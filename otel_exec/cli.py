"""Command line: `otel-exec run`, exit codes from otel_exec.errors."""
from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys
import threading
import time
from types import TracebackType
from typing import Sequence, TextIO

from otel_exec.config import (BACKENDS, CONFIG_ENV, DEFAULT_CONFIG_FILE, ENV_CAPTURE_MODES, FIELD_GROUPS, FORMATS,
                              SPAN_ATTRIBUTE_SETS, RECORD_ATTRIBUTE_SETS, Config, csv, log_level, parse_layered, signal_exporters)
from otel_exec.errors import OtelExecError, UsageError
from otel_exec.export.spool import FULL_ACTIONS
from otel_exec.health import DEFAULT_MAX_AGE_S, DEFAULT_READY_FILE, unhealthy
from otel_exec.option_texts import DOC, HELP

log = logging.getLogger(__name__)

RUN_EXAMPLES = """examples:
  otel-exec run                                        the terminal view: every exec and exit here
  otel-exec run --tree --comm bash --comm sh           shells, indented under whoever started them
  otel-exec run --format jsonl --output /var/log/execs.jsonl
  otel-exec run --endpoint http://127.0.0.1:4317       OTLP/gRPC to a collector, through the spool
  otel-exec check --endpoint http://127.0.0.1:4317     what run needs: pass/warn/fail and the fix

Every option can also be set by an OTEL_EXEC_<OPTION> variable or a key of the configuration
file; a flag wins over the variable, the variable over the file. The options' longer
explanations: docs/configuration.md.
"""


def _option(group: argparse._ActionsContainer, *flags: str, **kw: object) -> argparse.Action:
    """group.add_argument with the option's texts from option_texts: the
    --help line and the longer meaning of docs/configuration.md."""
    action = group.add_argument(*flags, help=HELP[flags[-1]], **kw)  # type: ignore[arg-type]
    action.doc = DOC.get(flags[-1])  # type: ignore[attr-defined]
    return action


class _VersionAction(argparse.Action):
    """--version: check.version_lines for the default settings (--backend auto)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        from otel_exec.check import version_lines

        for line in version_lines(Config()):
            print(line)
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-exec", description="Trace every exec on this machine.")
    parser.add_argument("--version", action=_VersionAction, nargs=0,
                        help="print the version, the backend run would use and why, and the kernel's features")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="attach to the kernel and report every exec",
                         description="Attach to the kernel and report every exec (and exit) on this machine.",
                         epilog=RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    capture = run.add_argument_group("capture")
    filters = run.add_argument_group("filters", "in the kernel, repeatable; sampling (--sample-rate, --keep-*) "
                                                "comes after them")
    privacy = run.add_argument_group("privacy")
    export = run.add_argument_group("export")
    reliability = run.add_argument_group("reliability")
    diagnostics = run.add_argument_group("diagnostics")
    _option(run, "--config", metavar="PATH")
    _option(export, "--exporter", default=[], type=csv)
    _option(export, "--endpoint")
    _option(export, "--protocol", choices=("grpc", "http/protobuf"))
    _option(export, "--header", action="append", default=[], metavar="KEY=VALUE")
    _option(reliability, "--spool-dir", default=Config.spool_dir, metavar="DIR")
    _option(reliability, "--spool-max-bytes", type=int, default=Config.spool_max_bytes, metavar="BYTES")
    _option(reliability, "--spool-full-action", choices=FULL_ACTIONS, default=Config.spool_full_action)
    _option(reliability, "--spool-allow-group-read", action="store_true")
    _option(reliability, "--no-spool", action="store_true")
    _option(diagnostics, "--stats-interval", type=float, metavar="SECONDS")
    _option(privacy, "--user", metavar="USER")
    _option(privacy, "--span-env", action="store_true")
    _option(export, "--span-attributes", choices=SPAN_ATTRIBUTE_SETS, default=Config.span_attributes)
    _option(export, "--format", choices=FORMATS)
    _option(export, "--no-exit-records", action="store_true")
    _option(export, "--record-max-attributes", type=int, default=Config.record_max_attributes, metavar="N")
    _option(export, "--record-max-bytes", type=int, default=Config.record_max_bytes, metavar="BYTES")
    _option(export, "--env-attributes", type=int, default=Config.env_attributes, metavar="N")
    _option(export, "--record-attributes", choices=RECORD_ATTRIBUTE_SETS, default=Config.record_attributes)
    _option(export, "--body-max-bytes", type=int, default=Config.body_max_bytes, metavar="BYTES")
    _option(export, "--tree", action="store_true")
    _option(export, "--color", choices=("auto", "always", "never"), default=Config.color)
    _option(diagnostics, "--verbose", action="store_true")
    _option(export, "--output", metavar="FILE")
    _option(capture, "--duration", type=float, metavar="SECONDS")
    _option(diagnostics, "--ready-file", metavar="PATH")
    _option(privacy, "--env-capture", choices=ENV_CAPTURE_MODES, default="redacted")
    _option(privacy, "--redact-pattern", action="append", default=[], metavar="REGEX")
    _option(privacy, "--redact-allow", action="append", default=[], metavar="REGEX")
    _option(privacy, "--trust-traceparent", default=Config.trust_traceparent, metavar="any|none|root|UID[,UID...]")
    _option(privacy, "--traceparent-env", default=Config.traceparent_env, metavar="NAME")
    _option(privacy, "--tracestate-env", default=Config.tracestate_env, metavar="NAME")
    _option(privacy, "--env-allow", action="append", default=[], metavar="KEY")
    _option(filters, "--comm", action="append", default=[])
    _option(filters, "--exclude-comm", action="append", default=[])
    _option(filters, "--path-prefix", action="append", default=[], metavar="PREFIX")
    _option(filters, "--uid", action="append", default=[], type=int)
    _option(filters, "--container-only", action="store_true")
    _option(filters, "--cgroup", action="append", default=[], metavar="PATH")
    _option(filters, "--sample-rate", type=int, default=Config.sample_rate, metavar="N")
    _option(filters, "--keep-comm", action="append", default=[], metavar="NAME")
    _option(filters, "--keep-uid", action="append", default=[], type=int, metavar="UID")
    _option(filters, "--keep-path-prefix", action="append", default=[], metavar="PREFIX")
    _option(capture, "--no-field", action="append", default=[], type=csv, metavar="FIELD[,FIELD]")
    _option(capture, "--argv-max-bytes", type=int, default=Config.argv_max_bytes, metavar="BYTES")
    _option(capture, "--env-max-bytes", type=int, default=Config.env_max_bytes, metavar="BYTES")
    _option(capture, "--ringbuf-bytes", type=int, default=Config.ringbuf_bytes, metavar="BYTES")
    _option(capture, "--poll-interval", type=float, default=Config.poll_interval, metavar="SECONDS")
    _option(capture, "--process-table-size", type=int, default=Config.process_table_size, metavar="ENTRIES")
    _option(capture, "--backend", choices=BACKENDS, default=Config.backend)
    _option(capture, "--no-executable-identity", action="store_true")
    _option(capture, "--no-executable-sha256", action="store_true")
    _option(capture, "--executable-sha256-max-bytes", type=int, default=Config.executable_sha256_max_bytes,
            metavar="BYTES")
    _option(capture, "--executable-cache-entries", type=int, default=Config.executable_cache_entries, metavar="N")
    _option(capture, "--executable-wait-ms", type=float, default=Config.executable_wait_ms, metavar="MS")
    _add_check_parser(sub)
    install = sub.add_parser("install-systemd", help="install the systemd unit and, if there is none, "
                             f"{DEFAULT_CONFIG_FILE}")
    install.add_argument("--root", default="/", metavar="DIR", help="install under DIR instead of / (default /)")
    health = sub.add_parser("health", help="exit 0 when the running agent is healthy: its --ready-file exists "
                                           "and its loop keeps it fresh; else 1 and the reason")
    health.add_argument("--ready-file", metavar="PATH",
                        help="the agent's --ready-file (default: as `run` would take it from OTEL_EXEC_READY_FILE "
                             f"or the configuration file, else {DEFAULT_READY_FILE})")
    health.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE_S, metavar="SECONDS",
                        help="unhealthy when the file was last refreshed longer ago (default %(default)g)")
    return parser


def _add_check_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    check = sub.add_parser("check", help="report every prerequisite of `run` (pass/warn/fail and the fix); "
                                         "exit 0 only when run would start as configured")
    check.add_argument("--exporter", default=[], type=csv, help="as for run")
    check.add_argument("--endpoint", help="as for run: the OTLP check exports one test record there")
    check.add_argument("--protocol", choices=("grpc", "http/protobuf"), help="as for run")
    check.add_argument("--header", action="append", default=[], metavar="KEY=VALUE", help="as for run")
    check.add_argument("--spool-dir", default=Config.spool_dir, metavar="DIR", help="as for run")
    check.add_argument("--no-spool", action="store_true", help="as for run")
    check.add_argument("--spool-max-bytes", type=int, default=Config.spool_max_bytes, help="as for run")
    check.add_argument("--spool-allow-group-read", action="store_true", help="as for run")
    check.add_argument("--user", metavar="USER", help="as for run")
    check.add_argument("--backend", choices=BACKENDS, default=Config.backend, help="as for run")


def _headers(raw: list[str]) -> dict[str, str]:
    headers = {}
    for h in raw:
        key, sep, value = h.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--header {h!r} must be KEY=VALUE")
        # gRPC metadata keys must be lower case (HTTP headers do not care).
        headers[key.strip().lower()] = value.strip()
    return headers


def check_config_from_args(args: argparse.Namespace) -> Config:
    cfg = Config(exporters=tuple(args.exporter), endpoint=args.endpoint, protocol=args.protocol,
                 headers=_headers(args.header), spool_dir=None if args.no_spool else args.spool_dir,
                 spool_max_bytes=args.spool_max_bytes, spool_allow_group_read=args.spool_allow_group_read,
                 user=args.user, backend=args.backend)
    cfg.validate()
    return cfg


def config_from_args(args: argparse.Namespace) -> Config:
    cfg = Config(
        exporters=tuple(args.exporter),
        endpoint=args.endpoint,
        protocol=args.protocol,
        headers=_headers(args.header),
        span_env=args.span_env,
        span_attributes=args.span_attributes,
        exit_records=not args.no_exit_records,
        record_max_attributes=args.record_max_attributes,
        record_max_bytes=args.record_max_bytes,
        env_attributes=args.env_attributes,
        record_attributes=args.record_attributes,
        body_max_bytes=args.body_max_bytes,
        spool_dir=None if args.no_spool else args.spool_dir,
        spool_max_bytes=args.spool_max_bytes,
        spool_full_action=args.spool_full_action,
        spool_allow_group_read=args.spool_allow_group_read,
        user=args.user,
        stats_interval=args.stats_interval,
        format=args.format,
        tree=args.tree,
        color=args.color,
        verbose=args.verbose,
        output=args.output,
        duration=args.duration,
        ready_file=args.ready_file,
        env_capture=args.env_capture,
        redact_patterns=args.redact_pattern,
        redact_allow=args.redact_allow,
        trust_traceparent=args.trust_traceparent,
        traceparent_env=args.traceparent_env,
        tracestate_env=args.tracestate_env,
        env_allow=args.env_allow,
        comm=args.comm,
        exclude_comm=args.exclude_comm,
        path_prefix=args.path_prefix,
        uid=args.uid,
        container_only=args.container_only,
        cgroup=args.cgroup,
        sample_rate=args.sample_rate,
        keep_comm=args.keep_comm,
        keep_uid=args.keep_uid,
        keep_path_prefix=args.keep_path_prefix,
        no_field=[name for names in args.no_field for name in names],
        argv_max_bytes=args.argv_max_bytes,
        env_max_bytes=args.env_max_bytes,
        ringbuf_bytes=args.ringbuf_bytes,
        poll_interval=args.poll_interval,
        process_table_size=args.process_table_size,
        backend=args.backend,
        executable_identity=not args.no_executable_identity,
        executable_sha256=not args.no_executable_sha256,
        executable_sha256_max_bytes=args.executable_sha256_max_bytes,
        executable_cache_entries=args.executable_cache_entries,
        executable_wait_ms=args.executable_wait_ms,
    )
    cfg.validate()
    return cfg


def run(cfg: Config, stderr: TextIO) -> int:
    from otel_exec.sources import begin_core_load

    # The programs' load (the verifier's work) begins first, on a thread of
    # its own, and goes on while this one makes the rest (the imports, the
    # preflight checks, the sinks), until Agent.start attaches them. What
    # stops the start before begin_attach takes the load over is reported
    # as without it, the load dropped unused.
    loading = begin_core_load(cfg)
    taken = False
    try:
        from otel_exec.agent import Agent, Sink, install_signal_handlers
        from otel_exec.check import preflight
        from otel_exec.host.identity import HostIdentity
        from otel_exec.export.otlp.shape import RecordLimits
        from otel_exec.export.otlp.transport import OtlpOptions, configured

        identity = HostIdentity.current()
        opts = OtlpOptions(cfg.endpoint, cfg.protocol, cfg.headers, cfg.span_env, cfg.exit_records,
                           span_attributes=cfg.span_attributes)
        exporters = signal_exporters(cfg.exporters or (("otlp",) if configured(opts) else ("console",)), os.environ)
        limits = RecordLimits.from_env(os.environ, max_attributes=cfg.record_max_attributes,
                                       max_bytes=cfg.record_max_bytes, env_attributes=cfg.env_attributes,
                                       body_max_bytes=cfg.body_max_bytes,
                                       repeat_derived=cfg.record_attributes == "full")
        opts.signals = tuple(s for s in ("logs", "traces") if "otlp" in exporters[s])
        if not (exporters["logs"] or exporters["traces"]):
            raise UsageError("neither exec records nor spans are exported (OTEL_SDK_DISABLED=true, or "
                             "OTEL_LOGS_EXPORTER and OTEL_TRACES_EXPORTER say none): nothing to do")
        sinks: list[Sink] = []
        out: TextIO | None = None
        agent = Agent(cfg, sinks, identity)
        failed = preflight(cfg)
        if failed:
            # Every failing prerequisite at once, not one per start.
            for result in failed:
                log.error("%s", result.detail + (f"; fix: {result.fix}" if result.fix else ""))
            return failed[0].exit_code
        taken = True  # start_source closes it if it fails
        agent.begin_attach(loading)
    finally:
        if loading is not None and not taken:
            loading.close()
    # The sinks and the telemetry are made now, as root (a root-only TLS key
    # or spool directory), and start their threads only after the privilege
    # drop (Agent.start).
    trust = [agent.user.pw_uid] if agent.user else []
    try:
        from otel_exec.export.otlp.resource import resource_attributes
        from otel_exec.export.otlp.sink import OtlpSink
        from otel_exec.export.spool import Spool
        from otel_exec.export.summary import log_summary
        from otel_exec.export.telemetry import Telemetry

        if opts.signals:
            spool = Spool(cfg.spool_dir, cfg.spool_max_bytes, agent.user,
                          allow_group_read=cfg.spool_allow_group_read, full_action=cfg.spool_full_action,
                          boot_id=identity.boot_id) if cfg.spool_dir else None
            sinks.append(OtlpSink(opts, identity, spool, limits))
        if "console" in exporters["logs"]:
            # Imported only for a console: its modules (json) would stay resident for nothing.
            from otel_exec.export.console import ConsoleSink, colour_wanted, open_output

            out = open_output(cfg.output, trust) if cfg.output else sys.stdout
            if out is sys.stdout:
                # UTF-8 whatever the locale: event text is never unencodable.
                sys.stdout.reconfigure(encoding="utf-8", errors="backslashreplace")  # type: ignore[union-attr]
            sinks.append(ConsoleSink(out, cfg.format or ("pretty" if out.isatty() else "jsonl"), cfg.not_collected(),
                                     colour=colour_wanted(out, cfg.color), tree=cfg.tree,
                                     seeded_exits=not cfg.filtered()))
        telemetry = Telemetry(agent.report, opts if "otlp" in exporters["metrics"] else None, cfg.stats_interval,
                              resource_attributes(identity),
                              console=stderr if "console" in exporters["metrics"] else None)
    except BaseException:
        try:
            # The load's error, if it failed, is the one to report, as when
            # the load came before all this.
            agent.attach()
        finally:
            agent.close()
        raise
    trim_heap = HeapTrimmer()

    def tick() -> None:
        telemetry.tick()
        trim_heap()

    agent.tick = tick
    install_signal_handlers(agent)
    started = time.monotonic()
    try:
        agent.start(also_start=[telemetry.start])
        agent.run()
    finally:
        agent.shutdown(cfg.shutdown_grace)
        report = agent.report()
        telemetry.close()
        agent.close()
        if out is not None and out is not sys.stdout:
            out.close()
    # The full counter set for scripts and logs, last; a person at a
    # terminal reads the summary unless --verbose.
    log_summary(report, time.monotonic() - started, every_counter=cfg.verbose or not stderr.isatty())
    return 0


def health(ready_file: str, max_age_s: float) -> int:
    if max_age_s <= 0:
        raise UsageError("--max-age must be a positive number of seconds")
    reason = unhealthy(ready_file, max_age_s)
    if reason:
        log.error("unhealthy: %s", reason)
        return 1
    print(f"healthy: {ready_file} is fresh", file=sys.stdout)
    return 0


M_ARENA_MAX = -8


def _few_malloc_arenas() -> None:
    """glibc gives each thread that allocates (the exporters', gRPC's) an
    arena of its own; their fragments made RSS creep over a long storm,
    two arenas keep it flat (BENCHMARKS.md). (A fixed mmap threshold, to
    hand each batch's buffers back to the kernel, cost page faults on
    every exec for no lower peak.)"""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 2)
    except OSError:  # not glibc: nothing to tune
        pass


class HeapTrimmer:
    """Every few seconds, malloc_trim(0): glibc hands the free pages inside
    its heaps back to the kernel. A storm's batches leave free holes
    between longer-lived allocations that glibc otherwise keeps: in a
    long soak RSS climbed step by step (BENCHMARKS.md). A trim is cheap
    next to the interval."""

    INTERVAL_S = 5.0

    def __init__(self) -> None:
        try:
            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to trim
            self._trim = None
        self._next = 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if self._trim is not None and now >= self._next:
            self._next = now + self.INTERVAL_S
            self._trim(0)


class PrefixedFormatter(logging.Formatter):
    """`otel-exec: LEVEL: MESSAGE` on every line, a traceback's too; a
    library's lines (the OTel SDK, gRPC's Python side) name their logger:
    `otel-exec: LEVEL: LOGGER: MESSAGE`."""

    def format(self, record: logging.LogRecord) -> str:
        level = "error" if record.levelno >= logging.ERROR else record.levelname.lower()
        source = "" if record.name.partition(".")[0] == "otel_exec" else f"{record.name}: "
        return "\n".join(f"otel-exec: {level}: {source}{line}" for line in super().format(record).splitlines())


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to sys.stderr as it is when a line is logged (a test's
    capture, or the real one)."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def _configure_logging() -> None:
    """The one way onto stderr: the agent's lines and its libraries', with
    the prefix and a level, at OTEL_LOG_LEVEL. The stop summary's losses
    show at any level (export/summary.py); Python warnings and uncaught
    exceptions of any thread come the same way."""
    level, warning = log_level(os.environ)
    root = logging.getLogger()
    if not any(isinstance(h, StderrHandler) for h in root.handlers):  # once: tests call main() again
        handler = StderrHandler()
        handler.setFormatter(PrefixedFormatter())
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("otel_exec.export.summary").setLevel(min(level, logging.WARNING))
    logging.captureWarnings(True)
    sys.excepthook = _log_exception
    threading.excepthook = _log_thread_exception
    if warning:
        log.warning("%s", warning)


def _log_exception(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    log.error("uncaught exception", exc_info=(exc_type, exc, tb))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is not SystemExit:
        log.error("uncaught exception in thread %s", args.thread.name if args.thread else "?",
                  exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    _few_malloc_arenas()
    _configure_logging()
    parser = build_parser()
    try:
        args = parse_layered(parser, argv, os.environ)
        if args.command == "check":
            from otel_exec.check import run_checks

            return run_checks(check_config_from_args(args), sys.stdout)
        if args.command == "health":
            return health(args.ready_file or parse_layered(parser, ["run"], os.environ).ready_file
                          or DEFAULT_READY_FILE, args.max_age)
        if args.command == "install-systemd":
            from otel_exec.install import install_systemd

            return install_systemd(args.root, sys.stdout)
        return run(config_from_args(args), sys.stderr)
    except SystemExit as e:  # argparse: usage errors exit 2, --help exits 0
        return int(e.code or 0)
    except OtelExecError as e:
        log.error("%s", e)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
