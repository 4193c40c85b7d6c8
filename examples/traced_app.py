#!/usr/bin/env python3
"""An OpenTelemetry-instrumented program whose child processes join its trace through otel-exec.

The program opens a span "deploy", writes its context into the environment of the commands it
starts (W3C Trace Context: TRACEPARENT, and TRACESTATE when there is one, named as in the
OpenTelemetry specification "Environment Variables as Context Propagation Carriers"), and runs

    git --version
    sh -c 'curl --version | head -1'

skipping a command whose tools are not installed. otel-exec, running on the same host, reads
TRACEPARENT from each new process's environment and makes that process's span a child of "deploy";
processes those children start (curl and head under sh) hang under them by fork/exec lineage.
In Jaeger: service "traced-app", trace "deploy", with the process spans nested below it.

Nothing here touches the network except the span export itself, which follows the standard
variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL=grpc|http/protobuf,
OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, ...). With no collector listening the export fails
after a few seconds and the program still exits 0.

    python3 examples/traced_app.py                      # OTLP to localhost:4317 (gRPC)
    python3 examples/traced_app.py --exporter console   # print the span instead
    python3 examples/traced_app.py --cmd 'make -C /tmp/project' --cmd 'ls'

Needs opentelemetry-sdk and opentelemetry-exporter-otlp (already dependencies of otel-exec).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import MutableMapping

from opentelemetry import trace
from opentelemetry.propagators.textmap import Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

DEFAULT_SERVICE_NAME = "traced-app"
# The commands run by default: (argv, tools that must be on PATH for it to make sense).
DEFAULT_COMMANDS: list[tuple[list[str], list[str]]] = [
    (["git", "--version"], ["git"]),
    (["sh", "-c", "curl --version | head -1"], ["sh", "curl", "head"]),
]
# Keys a previous hop may have left in our own environment; never pass them on stale.
PROPAGATION_ENV_KEYS = ("TRACEPARENT", "TRACESTATE")
# Bounded export when nobody listens (an explicit OTEL_EXPORTER_OTLP_TIMEOUT wins).
OFFLINE_FRIENDLY_TIMEOUT_S = 5.0


def env_var_name(key: str) -> str:
    """A propagation key as an environment variable name: upper case, every character other
    than A-Z, 0-9 and _ replaced by _, and a leading _ when it would start with a digit
    ("traceparent" -> "TRACEPARENT")."""
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper())
    if not name or name[0].isdigit():
        name = "_" + name
    return name


class EnvironmentSetter(Setter[MutableMapping[str, str]]):
    """TextMap setter writing into a dict meant to become a child's environment."""

    def set(self, carrier: MutableMapping[str, str], key: str, value: str) -> None:
        carrier[env_var_name(key)] = value


def make_exporter(kind: str) -> SpanExporter | None:
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    explicit_timeout = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT" in os.environ or "OTEL_EXPORTER_OTLP_TIMEOUT" in os.environ
    timeout = None if explicit_timeout else OFFLINE_FRIENDLY_TIMEOUT_S
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )
    else:
        sys.exit(f"traced_app: OTLP protocol {protocol!r} not supported here (grpc or http/protobuf)")
    return OTLPSpanExporter(timeout=timeout)


def setup_tracing(kind: str) -> TracerProvider:
    # Resource.create() applies OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; only fill in a
    # service name when neither gives one.
    attributes = {}
    if not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attributes["service.name"] = DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create(attributes))
    exporter = make_exporter(kind)
    if exporter is not None:
        processor = SimpleSpanProcessor(exporter) if kind == "console" else BatchSpanProcessor(exporter)
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def child_environment() -> dict[str, str]:
    """Our environment, minus inherited trace context, plus the current span's context."""
    env = {k: v for k, v in os.environ.items() if k not in PROPAGATION_ENV_KEYS}
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, setter=EnvironmentSetter())
    env.update(carrier)
    return env


def commands_from(args: argparse.Namespace) -> list[tuple[list[str], list[str]]]:
    if args.cmd:
        return [(["sh", "-c", cmd], ["sh"]) for cmd in args.cmd]
    return DEFAULT_COMMANDS


def run_children(span: trace.Span, commands: list[tuple[list[str], list[str]]]) -> None:
    env = child_environment()
    print(f"TRACEPARENT={env['TRACEPARENT']}", flush=True)
    if "TRACESTATE" in env:
        print(f"TRACESTATE={env['TRACESTATE']}", flush=True)
    for argv, tools in commands:
        shown = shlex.join(argv)
        missing = [t for t in tools if shutil.which(t) is None]
        if missing:
            print(f"skip: {shown} ({', '.join(missing)} not found)", flush=True)
            span.add_event("command.skipped", {"process.command_line": shown, "missing": missing})
            continue
        print(f"$ {shown}", flush=True)
        try:
            result = subprocess.run(argv, env=env, check=False)
        except OSError as e:  # vanished between which() and exec
            print(f"skip: {shown} ({e.strerror})", flush=True)
            span.add_event("command.skipped", {"process.command_line": shown, "error": str(e.strerror)})
            continue
        span.add_event("command.exited", {"process.command_line": shown, "process.exit.code": result.returncode})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--exporter",
        choices=["otlp", "console", "none"],
        default="otlp",
        help="where the app's own span goes (default otlp, configured by OTEL_EXPORTER_OTLP_*)",
    )
    parser.add_argument(
        "--cmd",
        action="append",
        metavar="SHELL_COMMAND",
        help="run this with sh -c instead of the default commands (repeatable)",
    )
    args = parser.parse_args(argv)

    provider = setup_tracing(args.exporter)
    tracer = trace.get_tracer("otel-exec.examples.traced_app")
    with tracer.start_as_current_span("deploy") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        print(f"trace_id={trace_id}", flush=True)
        run_children(span, commands_from(args))
    provider.shutdown()  # flush the span before exiting

    print(f"trace_id={trace_id}  (Jaeger: http://localhost:16686/trace/{trace_id})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
