"""The texts of `otel-exec run`'s options, by flag: HELP is the one line
--help shows, DOC the longer meaning docs/configuration.md gives (generated
from it by config.settings_table). Kept apart from the declarations in cli.py
so that those read as one short list."""
from __future__ import annotations

from otel_exec.config import (CONFIG_ENV, DEFAULT_CONFIG_FILE, FIELD_GROUPS, RINGBUF_BYTES_CORE_PYTHON_READER,
                              RINGBUF_BYTES_DEFAULT)

HELP: dict[str, str] = {
    "--config":
        f"YAML settings file owned by root (default {DEFAULT_CONFIG_FILE})",
    "--exporter":
        "otlp, console or otlp,console (default: otlp if an endpoint is set)",
    "--endpoint":
        "OTLP endpoint URL, e.g. http://127.0.0.1:4317",
    "--protocol":
        "OTLP protocol (overrides OTEL_EXPORTER_OTLP_PROTOCOL; default grpc)",
    "--header":
        "header of every OTLP request (repeatable)",
    "--spool-dir":
        "records go to disk here before the collector (default %(default)s)",
    "--spool-max-bytes":
        "above this, the oldest spooled records go, counted (default 1 GiB)",
    "--spool-full-action":
        "disk and memory window full: which records give way (default %(default)s)",
    "--spool-allow-group-read":
        "keep the group's read access (0750) to an existing spool directory",
    "--no-spool":
        "keep records in memory only (OTEL_BLRP_/OTEL_BSP_MAX_QUEUE_SIZE)",
    "--stats-interval":
        "log a one-line summary (execs, exported, lost, spool) this often",
    "--user":
        "switch to this user (name or uid) once the probes are attached",
    "--span-env":
        "environment attributes on spans too (implies --span-attributes full)",
    "--span-attributes":
        "slim: ids and the process's name on spans; full: all (default %(default)s)",
    "--format":
        "pretty (exec and exit lines) on a terminal, jsonl otherwise",
    "--no-exit-records":
        "no otel_exec.process.exit log record when an image ends",
    "--record-max-attributes":
        "an exec record's attributes at most (default %(default)s)",
    "--record-max-bytes":
        "an exec record's attribute bytes at most, as Loki counts (default %(default)s)",
    "--env-attributes":
        "environment variables sent one attribute each; the rest packed (default %(default)s)",
    "--record-attributes":
        "compact: no attribute the others give; full: all (default %(default)s)",
    "--body-max-bytes":
        "the log body (the command line) is cut at this size (default %(default)s)",
    "--tree":
        "pretty format: indent each exec and exit under the process that started it",
    "--color":
        "colour failures, signals, redactions (auto: a terminal without NO_COLOR)",
    "--verbose":
        "on stop, every counter too (always when stderr is not a terminal)",
    "--output":
        "write events here, not stdout (created 0600; never through a symlink)",
    "--duration":
        "stop after this long",
    "--ready-file":
        "written once attached, privileges dropped and the exporters running",
    "--env-capture":
        "redacted (default): secrets hidden; none: no env attributes; all: verbatim",
    "--redact-pattern":
        "also redact what REGEX (or each of its groups) matches in argv and env",
    "--redact-allow":
        "a value REGEX matches whole escapes the built-in redaction rules",
    "--trust-traceparent":
        "whose TRACEPARENT may parent a span, by real uid (default %(default)s)",
    "--traceparent-env":
        "the variable carrying the W3C traceparent (default %(default)s)",
    "--tracestate-env":
        "the variable carrying the W3C tracestate (default %(default)s)",
    "--env-allow":
        "keep this env key verbatim even if it looks secret (repeatable)",
    "--comm":
        "only these command names",
    "--exclude-comm":
        "never these command names",
    "--path-prefix":
        "only execs whose path as exec'd or executable starts with PREFIX",
    "--uid":
        "only these real user ids",
    "--container-only":
        "only processes outside the agent's PID namespace",
    "--cgroup":
        "only processes in this cgroup v2 or below it (/system.slice/ssh.service)",
    "--sample-rate":
        "keep 1 exec in N at random, never those --keep-* match (default %(default)s)",
    "--keep-comm":
        "never sample out this command name (repeatable)",
    "--keep-uid":
        "never sample out this real user id (repeatable)",
    "--keep-path-prefix":
        "never sample out execs under PREFIX (repeatable)",
    "--no-field":
        f"do not collect these: {', '.join(FIELD_GROUPS)} (repeatable)",
    "--argv-max-bytes":
        "copy at most this much of the argument list; more is cut (default %(default)s)",
    "--env-max-bytes":
        "copy at most this much of the environment; more is cut (default %(default)s)",
    "--ringbuf-bytes":
        f"ring buffer, power of 2 (default {RINGBUF_BYTES_DEFAULT['core'] >> 20} MiB; "
        f"pure-Python {RINGBUF_BYTES_CORE_PYTHON_READER >> 20}; BCC {RINGBUF_BYTES_DEFAULT['bcc'] >> 20})",
    "--poll-interval":
        "drain the ring at least this often (default %(default)s)",
    "--process-table-size":
        "processes tracked for lineage; beyond it the oldest go (default %(default)s)",
    "--backend":
        "core (CO-RE, needs BTF), bcc, or auto: core when BTF exists (default %(default)s)",
    "--no-executable-identity":
        "no build ids, htlhash or hashes of the executed files",
    "--no-executable-sha256":
        "build ids and htlhash only: no SHA-256 of the whole file",
    "--executable-sha256-max-bytes":
        "larger files get build ids and htlhash only (default %(default)s)",
    "--executable-cache-entries":
        "files whose identity is remembered (default %(default)s)",
    "--executable-wait-ms":
        "how long an exec record waits for its file's identity (default %(default)s)",
}

DOC: dict[str, str] = {
    "--config":
        f"YAML file of settings, keys as in docs/configuration.md (also ${CONFIG_ENV}; "
        f"default {DEFAULT_CONFIG_FILE} when it exists; '' reads none). It must belong to "
        "root and be writable by no other user",
    "--exporter":
        "otlp, console or both (otlp,console); default: otlp when an endpoint is "
        "configured (--endpoint or OTEL_EXPORTER_OTLP_*ENDPOINT), else console",
    "--endpoint":
        "OTLP endpoint URL, e.g. http://127.0.0.1:4317 (overrides "
        "OTEL_EXPORTER_OTLP_ENDPOINT)",
    "--header":
        "header sent with every OTLP request (repeatable; overrides OTEL_EXPORTER_OTLP_HEADERS)",
    "--spool-dir":
        "OTLP records are written here first and sent from here, so none is lost to a "
        "collector outage or an agent crash (default %(default)s)",
    "--spool-max-bytes":
        "when the spool is larger, its oldest records are dropped and counted (default 1 GiB)",
    "--spool-full-action":
        "when the disk takes no write and the memory window is full too, drop the oldest "
        "or the newest records, counted (default %(default)s)",
    "--spool-allow-group-read":
        "keep the group's read access to an existing spool directory (0750); otherwise "
        "read access of group and others is removed (write access is refused)",
    "--user":
        "once the probes are attached, switch to this user (name or uid); every capability "
        "the backend does not need at run time is dropped in any case (docs/operations.md)",
    "--span-env":
        "put environment attributes on spans too (they are always on the exec's log record); "
        "implies --span-attributes full",
    "--span-attributes":
        "slim: a span carries the exec's ids and the few attributes that name the process in a trace "
        "view, the rest is on the exec's log record, which the span's ids link to; full: every exec "
        "attribute but the environment on the span too, as the log record has them "
        "(docs/attributes.md#spans; default %(default)s)",
    "--format":
        "pretty (the terminal view: exec and exit lines) on a terminal, jsonl otherwise",
    "--no-exit-records":
        "send no otel_exec.process.exit log record when a process image ends (its span "
        "still has the exit code and signal)",
    "--record-max-attributes":
        "an exec record's attributes at most: the environment variables beyond the budget "
        "are packed into one (Loki takes 128 structured-metadata entries by default and "
        "adds its own; docs/attributes.md#the-shape-of-a-record; default %(default)s)",
    "--record-max-bytes":
        "an exec record's attribute bytes at most, as Loki counts them (names and values "
        "as text; Loki takes 64,000 by default): argv and the environment share what the "
        "other attributes leave, and what does not fit is cut and named in "
        "otel_exec.record.cut (default %(default)s)",
    "--env-attributes":
        "environment variables sent as attributes of their own "
        "(process.environment_variable.KEY, the semantic conventions' form); the others, "
        "by default all, go into otel_exec.env.rest as KEY=VALUE (docs/attributes.md#the-environment; "
        "default %(default)s)",
    "--record-attributes":
        "compact: an exec record leaves out the attributes that its others say exactly "
        "(process.command, otel_exec.comm, otel_exec.interpreter.dev, process.args_count, "
        "otel_exec.env_count when equal to what they repeat; process.interactive and "
        "otel_exec.file.type at false and reg), "
        "and an exit record the pid and executable name of its exec record; full: sends them "
        "too (docs/attributes.md#compact-records; default %(default)s)",
    "--body-max-bytes":
        "the log body (the command line) is cut at this many bytes and flagged; "
        "process.command_args holds the arguments (default %(default)s)",
    "--color":
        "pretty format: colour failures, signals and redactions (auto: on a terminal "
        "unless NO_COLOR is set)",
    "--verbose":
        "on stop, also print every counter (always done when stderr is not a terminal)",
    "--ready-file":
        "written once probes are attached, /proc is seeded, privileges are dropped and the "
        "exporters run",
    "--env-capture":
        "redacted (default): secret values hidden (docs/redaction.md); none: no environment "
        "attribute at all (lineage still reads TRACEPARENT); all: verbatim",
    "--redact-pattern":
        "also redact in every argument and env value: what each capture group of REGEX "
        "matched, or the whole match without groups (repeatable)",
    "--redact-allow":
        "an argument or env value REGEX matches whole is left alone by the built-in rules "
        "(repeatable; --redact-pattern still applies)",
    "--trust-traceparent":
        "whose TRACEPARENT may parent a span, by real user id; others are recorded as "
        "otel_exec.traceparent.untrusted and nest under their lineage parent (default any)",
    "--traceparent-env":
        "the environment variable that carries the W3C traceparent (default TRACEPARENT); "
        "redaction bounds and scans its value, whatever its name",
    "--tracestate-env":
        "the environment variable that carries the W3C tracestate (default TRACESTATE); "
        "redaction bounds and scans its value, whatever its name",
    "--path-prefix":
        "only execs whose path as exec'd (cmdpath) or resolved executable path starts "
        "with PREFIX (a string prefix: /usr/bin/ is the directory, /usr/bin/py also "
        "matches /usr/bin/python3)",
    "--cgroup":
        "only processes in this cgroup v2 or below it: the path as /proc/PID/cgroup shows it "
        "(/system.slice/ssh.service) or the directory (/sys/fs/cgroup/system.slice)",
    "--sample-rate":
        "keep 1 exec in N at random, except those an always-keep option matches; "
        "records carry otel_exec.sample_rate (default 1: keep every exec)",
    "--keep-path-prefix":
        "never sample out execs under PREFIX, as --path-prefix matches it (repeatable)",
    "--no-field":
        f"do not collect these fields, in the kernel: {', '.join(FIELD_GROUPS)} "
        "(paths: every resolved path: executable, interpreter, stdin, working directory, "
        "cgroup); records leave them out and name them in otel_exec.unavailable (repeatable)",
    "--argv-max-bytes":
        "the kernel copies at most this much of the argument list; a longer one is cut and flagged "
        "(default %(default)s)",
    "--env-max-bytes":
        "the kernel copies at most this much of the environment; a longer one is cut and flagged "
        "(default %(default)s)",
    "--ringbuf-bytes":
        "size of the kernel-to-agent ring buffer, a power of two; a larger ring absorbs "
        f"longer bursts (docs/operations.md#sizing; default {RINGBUF_BYTES_DEFAULT['core']} with the CO-RE "
        f"backend, {RINGBUF_BYTES_CORE_PYTHON_READER} when its records are read without the C extension, "
        f"{RINGBUF_BYTES_DEFAULT['bcc']} with BCC)",
    "--poll-interval":
        "the reader drains the ring this often unless the ring fills faster or a send is due "
        "sooner (default %(default)s)",
    "--process-table-size":
        "processes the kernel and the agent keep track of for lineage; the oldest are evicted "
        "beyond it (default %(default)s)",
    "--backend":
        "core (CO-RE, needs kernel BTF), bcc (needs python3-bpfcc and kernel headers), or "
        "auto: core where /sys/kernel/btf/vmlinux exists, else bcc (docs/backends.md)",
    "--executable-wait-ms":
        "how long an exec record waits for a file being hashed; later values ride "
        "on the span (default %(default)s)",
}
