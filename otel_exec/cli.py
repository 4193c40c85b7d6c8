"""Command line: `otel-exec run`, exit codes from otel_exec.errors."""
from __future__ import annotations

import argparse
import ctypes
import sys
import time
from typing import Sequence, TextIO

from otel_exec import __version__
from otel_exec.config import BACKENDS, ENV_CAPTURE_MODES, FIELD_GROUPS, FORMATS, Config
from otel_exec.errors import OtelExecError, UsageError
from otel_exec.export.spool import FULL_ACTIONS


def _csv(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-exec", description="Trace every exec on this machine.")
    parser.add_argument("--version", action="version", version=f"otel-exec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="attach to the kernel and report every exec")
    run.add_argument("--exporter", default=[], type=_csv,
                     help="otlp, console or both (otlp,console); default: otlp when an endpoint is "
                          "configured (--endpoint or OTEL_EXPORTER_OTLP_*ENDPOINT), else console")
    run.add_argument("--endpoint", help="OTLP endpoint URL, e.g. http://127.0.0.1:4317 (overrides "
                                        "OTEL_EXPORTER_OTLP_ENDPOINT)")
    run.add_argument("--protocol", choices=("grpc", "http/protobuf"),
                     help="OTLP protocol (overrides OTEL_EXPORTER_OTLP_PROTOCOL; default grpc)")
    run.add_argument("--header", action="append", default=[], metavar="KEY=VALUE",
                     help="header sent with every OTLP request (repeatable; overrides OTEL_EXPORTER_OTLP_HEADERS)")
    run.add_argument("--spool-dir", default=Config.spool_dir, metavar="DIR",
                     help="OTLP records are written here first and sent from here, so none is lost to a "
                          "collector outage or an agent crash (default %(default)s)")
    run.add_argument("--spool-max-bytes", type=int, default=Config.spool_max_bytes,
                     help="when the spool is larger, its oldest records are dropped and counted (default 1 GiB)")
    run.add_argument("--spool-full-action", choices=FULL_ACTIONS, default=Config.spool_full_action,
                     help="when the disk takes no write and the memory window is full too, drop the oldest "
                          "or the newest records, counted (default %(default)s)")
    run.add_argument("--spool-allow-group-read", action="store_true",
                     help="keep the group's read access to an existing spool directory (0750); otherwise "
                          "read access of group and others is removed (write access is refused)")
    run.add_argument("--no-spool", action="store_true",
                     help="keep records in memory only (OTEL_BLRP_/OTEL_BSP_MAX_QUEUE_SIZE bound them)")
    run.add_argument("--stats-interval", type=float, metavar="SECONDS",
                     help="print a one-line summary (execs, exported, lost, spool) to stderr this often")
    run.add_argument("--user", metavar="USER",
                     help="once the probes are attached, switch to this user (name or uid); every capability "
                          "the backend does not need at run time is dropped in any case (docs/operations.md)")
    run.add_argument("--span-env", action="store_true",
                     help="put environment attributes on spans too (they are always on the exec's log record)")
    run.add_argument("--format", choices=FORMATS, help="pretty on a terminal, jsonl otherwise")
    run.add_argument("--output", metavar="FILE",
                     help="write events here instead of stdout (created 0600; never through a symlink)")
    run.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    run.add_argument("--ready-file", metavar="PATH",
                     help="written once probes are attached, /proc is seeded, privileges are dropped and the "
                          "exporters run")
    run.add_argument("--env-capture", choices=ENV_CAPTURE_MODES, default="redacted",
                     help="redacted (default): secret values hidden (docs/redaction.md); none: no environment "
                          "attribute at all (lineage still reads TRACEPARENT); all: verbatim")
    run.add_argument("--redact-pattern", action="append", default=[], metavar="REGEX",
                     help="also redact in every argument and env value: what each capture group of REGEX "
                          "matched, or the whole match without groups (repeatable)")
    run.add_argument("--redact-allow", action="append", default=[], metavar="REGEX",
                     help="an argument or env value REGEX matches whole is left alone by the built-in rules "
                          "(repeatable; --redact-pattern still applies)")
    run.add_argument("--trust-traceparent", default=Config.trust_traceparent, metavar="any|none|root|UID[,UID...]",
                     help="whose TRACEPARENT may parent a span, by real user id; others are recorded as "
                          "otel_exec.traceparent.untrusted and nest under their lineage parent (default any)")
    run.add_argument("--env-allow", action="append", default=[], metavar="KEY",
                     help="keep this env key verbatim even if it looks secret (repeatable)")
    filters = run.add_argument_group("filters (repeatable; which side applies each: docs/fields.md)")
    filters.add_argument("--comm", action="append", default=[], help="only these command names")
    filters.add_argument("--exclude-comm", action="append", default=[], help="never these command names")
    filters.add_argument("--path-prefix", action="append", default=[], metavar="PREFIX",
                         help="only execs whose path as exec'd (cmdpath) or resolved executable path starts "
                              "with PREFIX (a string prefix: /usr/bin/ is the directory, /usr/bin/py also "
                              "matches /usr/bin/python3)")
    filters.add_argument("--uid", action="append", default=[], type=int, help="only these real user ids")
    filters.add_argument("--container-only", action="store_true",
                         help="only processes outside the agent's PID namespace")
    filters.add_argument("--cgroup", action="append", default=[], metavar="PATH",
                         help="only processes in this cgroup v2 or below it: the path as /proc/PID/cgroup shows it "
                              "(/system.slice/ssh.service) or the directory (/sys/fs/cgroup/system.slice)")
    sampling = run.add_argument_group("sampling (in the kernel, after the filters)")
    sampling.add_argument("--sample-rate", type=int, default=Config.sample_rate, metavar="N",
                          help="keep 1 exec in N at random, except those an always-keep option matches; "
                               "records carry otel_exec.sample_rate (default 1: keep every exec)")
    sampling.add_argument("--keep-comm", action="append", default=[], metavar="NAME",
                          help="never sample out this command name (repeatable)")
    sampling.add_argument("--keep-uid", action="append", default=[], type=int, metavar="UID",
                          help="never sample out this real user id (repeatable)")
    sampling.add_argument("--keep-path-prefix", action="append", default=[], metavar="PREFIX",
                          help="never sample out execs under PREFIX, as --path-prefix matches it (repeatable)")
    run.add_argument("--no-field", action="append", default=[], type=_csv, metavar="FIELD[,FIELD]",
                     help=f"do not collect these fields, in the kernel: {', '.join(FIELD_GROUPS)} "
                          "(paths: every resolved path: executable, interpreter, stdin, working directory, "
                          "cgroup); records leave them out and name them in otel_exec.unavailable (repeatable)")
    run.add_argument("--argv-max-bytes", type=int, default=Config.argv_max_bytes)
    run.add_argument("--env-max-bytes", type=int, default=Config.env_max_bytes)
    run.add_argument("--ringbuf-bytes", type=int, default=Config.ringbuf_bytes)
    run.add_argument("--poll-interval", type=float, default=Config.poll_interval, metavar="SECONDS")
    run.add_argument("--process-table-size", type=int, default=Config.process_table_size)
    run.add_argument("--backend", choices=BACKENDS, default=Config.backend,
                     help="core (CO-RE, needs kernel BTF), bcc (needs python3-bpfcc and kernel headers), or "
                          "auto: core where /sys/kernel/btf/vmlinux exists, else bcc (docs/backends.md)")
    ident = run.add_argument_group("executable identity (docs/fields.md#executable-identity)")
    ident.add_argument("--no-executable-identity", action="store_true",
                       help="no build ids, htlhash or hashes of the executed files")
    ident.add_argument("--no-executable-sha256", action="store_true",
                       help="build ids and htlhash only: no SHA-256 of the whole file")
    ident.add_argument("--executable-sha256-max-bytes", type=int, default=Config.executable_sha256_max_bytes,
                       metavar="BYTES", help="files larger than this get build ids and htlhash, no SHA-256 "
                                             "(default %(default)s)")
    ident.add_argument("--executable-cache-entries", type=int, default=Config.executable_cache_entries,
                       metavar="N", help="files whose identity is remembered (default %(default)s)")
    ident.add_argument("--executable-wait-ms", type=float, default=Config.executable_wait_ms, metavar="MS",
                       help="how long an exec record waits for a file being hashed; later values ride "
                            "on the span (default %(default)s)")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    headers = {}
    for h in args.header:
        key, sep, value = h.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--header {h!r} must be KEY=VALUE")
        # gRPC metadata keys must be lower case (HTTP headers do not care).
        headers[key.strip().lower()] = value.strip()
    cfg = Config(
        exporters=tuple(args.exporter),
        endpoint=args.endpoint,
        protocol=args.protocol,
        headers=headers,
        span_env=args.span_env,
        spool_dir=None if args.no_spool else args.spool_dir,
        spool_max_bytes=args.spool_max_bytes,
        spool_full_action=args.spool_full_action,
        spool_allow_group_read=args.spool_allow_group_read,
        user=args.user,
        stats_interval=args.stats_interval,
        format=args.format,
        output=args.output,
        duration=args.duration,
        ready_file=args.ready_file,
        env_capture=args.env_capture,
        redact_patterns=args.redact_pattern,
        redact_allow=args.redact_allow,
        trust_traceparent=args.trust_traceparent,
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
    from otel_exec.agent import Agent, Sink, install_signal_handlers
    from otel_exec.export.console import ConsoleExporter, open_output
    from otel_exec.host.identity import HostIdentity
    from otel_exec.export.otlp.sink import OtlpOptions, OtlpSink, configured, resource_attributes
    from otel_exec.export.spool import Spool
    from otel_exec.export.telemetry import Telemetry, loss_reason

    identity = HostIdentity.current()
    opts = OtlpOptions(cfg.endpoint, cfg.protocol, cfg.headers, cfg.span_env)
    exporters = cfg.exporters or (("otlp",) if configured(opts) else ("console",))
    sinks: list[Sink] = []
    out: TextIO | None = None
    agent = Agent(cfg, sinks, identity, log=stderr)
    # Programs first: libbpf's parse of the kernel's BTF (several MB, freed
    # once loaded) then does not come on top of the exporters' modules,
    # imported below: it was the agent's peak RSS (BENCHMARKS.md).
    agent.attach()
    # The sinks and the telemetry are made now, as root (a root-only TLS key
    # or spool directory), and start their threads only after the privilege
    # drop (Agent.start).
    trust = [agent.user.pw_uid] if agent.user else []
    try:
        if "otlp" in exporters:
            spool = Spool(cfg.spool_dir, cfg.spool_max_bytes, agent.user,
                          allow_group_read=cfg.spool_allow_group_read, full_action=cfg.spool_full_action,
                          boot_id=identity.boot_id) if cfg.spool_dir else None
            sinks.append(OtlpSink(opts, identity, spool))
        if "console" in exporters:
            out = open_output(cfg.output, trust) if cfg.output else sys.stdout
            if out is sys.stdout:
                # UTF-8 whatever the locale: event text is never unencodable.
                sys.stdout.reconfigure(encoding="utf-8", errors="backslashreplace")  # type: ignore[union-attr]
            sinks.append(ConsoleExporter(out, cfg.format or ("pretty" if out.isatty() else "jsonl"),
                                         cfg.not_collected()))
        telemetry = Telemetry(agent.report, opts if "otlp" in exporters else None, cfg.stats_interval,
                              resource_attributes(identity), stderr)
    except BaseException:
        agent.close()
        raise
    trim_heap = HeapTrimmer()

    def tick() -> None:
        telemetry.tick()
        trim_heap()

    agent.tick = tick
    install_signal_handlers(agent)
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
    print("otel-exec: stopped; " + ", ".join(f"{k}={v}" for k, v in report.items()), file=stderr)
    lost = {k: v for k, v in report.items()
            if loss_reason(k) or k.endswith("_unsent")}
    if any(lost.values()):
        print(f"otel-exec: WARNING events were lost: {lost}", file=stderr)
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


def main(argv: Sequence[str] | None = None) -> int:
    _few_malloc_arenas()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return run(config_from_args(args), sys.stderr)
    except SystemExit as e:  # argparse: usage errors exit 2, --help exits 0
        return int(e.code or 0)
    except OtelExecError as e:
        print(f"otel-exec: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
