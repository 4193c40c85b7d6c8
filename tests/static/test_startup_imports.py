"""The modules `otel-exec run` imports on its way to the ready file leave
out what that path never uses: importlib.resources (the BPF object is found
beside the package), secrets (a temporary name needs only os.urandom),
ssl (parsed TLS files only; a plain-text exporter has none), ctypes.util
(only to mount tracefs, where it is not mounted), difflib (a misspelt
setting's hint), email (an HTTP collector's Retry-After date), gzip (HTTP
compression), json (the console's JSON Lines) and uuid and platform (one
UUIDv5 and the machine's name, computed without them), random (the retry
back-off's jitter, after a failed export): each module imported stays
resident. The records defined on that path are plain classes but for the
dataclasses listed here, whose generated methods something uses. Checked in
a fresh interpreter, on the agent's own modules (the third-party ones they
import at run time, the SDK's, are theirs to choose); grpcio is imported by
none of them."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What cli.run imports before it attaches, as it imports them (the console
# sink's module only for a console).
RUN_PATH = (
    "otel_exec.cli", "otel_exec.agent", "otel_exec.check",
    "otel_exec.host.identity", "otel_exec.export.otlp.resource", "otel_exec.export.otlp.shape",
    "otel_exec.export.otlp.sink", "otel_exec.export.otlp.transport", "otel_exec.export.spool",
    "otel_exec.export.summary", "otel_exec.export.telemetry", "otel_exec.core.source",
)
NOT_BEFORE_READY = ("grpc", "importlib.resources", "secrets", "ssl", "ctypes.util", "difflib", "email",
                    "gzip", "json", "uuid", "platform", "random")


def test_run_path_does_not_import_what_it_does_not_use() -> None:
    # Printed by repr: importing json here would hide the run path's own import of it.
    code = ("import importlib, sys\n"
            f"for name in {RUN_PATH!r}:\n"
            "    importlib.import_module(name)\n"
            f"print(repr([m for m in {NOT_BEFORE_READY!r} if m in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert ast.literal_eval(out.stdout) == []


# The dataclasses the run path defines (a dataclass compiles its generated
# methods at every import), each for what its methods give: value equality
# callers and tests compare by, dataclasses.fields (ExecEvent's constructor
# from a shared part), asdict (the console's executable identity), order
# (spool positions), field defaults (the settings, the metrics collector).
# The transport's are its own module's to choose.
RUN_PATH_DATACLASSES = {
    "otel_exec.config.Config", "otel_exec.model.events.ExecEvent", "otel_exec.model.events.ExitEvent",
    "otel_exec.model.events.UnreportedExecEvent", "otel_exec.model.executable.ExecutableIdentity",
    "otel_exec.export.otlp.shape.RecordLimits", "otel_exec.export.spool.Position", "otel_exec.export.spool.Batch",
    "otel_exec.export.spool.Gap", "otel_exec.host.identity.HostIdentity", "otel_exec.lineage.spans.TraceparentTrust",
    "otel_exec.export.otlp.metrics.MetricsCollector", "otel_exec.host.cgroups.Cgroup",
}


def test_run_path_defines_only_the_listed_dataclasses() -> None:
    code = ("import dataclasses, importlib, json, sys\n"
            f"for name in {RUN_PATH!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(f'{m.__name__}.{k}' for m in list(sys.modules.values())\n"
            "                        if m.__name__.startswith('otel_exec.')\n"
            "                        and m.__name__ != 'otel_exec.export.otlp.transport'\n"
            "                        for k, v in vars(m).items()\n"
            "                        if isinstance(v, type) and v.__module__ == m.__name__\n"
            "                        and dataclasses.is_dataclass(v))))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(json.loads(out.stdout)) == RUN_PATH_DATACLASSES


def test_the_grpc_transport_does_not_import_grpc() -> None:
    """A gRPC transport made, started and sending (to a port where nothing
    listens) imports neither grpcio nor ssl (plain text), nor
    importlib.metadata or the email package: it is otel-exec's own HTTP/2
    client (h2grpc.py); and its send imports nothing."""
    code = ("import importlib, json, socket, sys\n"
            f"for name in {RUN_PATH!r}:\n"
            "    importlib.import_module(name)\n"
            "from otel_exec.export.otlp.transport import OtlpOptions, make_transport\n"
            "with socket.socket() as s:\n"
            "    s.bind(('127.0.0.1', 0))\n"
            "    port = s.getsockname()[1]\n"
            "t = make_transport('logs', OtlpOptions(endpoint=f'http://localhost:{port}', protocol='grpc'))\n"
            "made = set(sys.modules)\n"
            "t.start()\n"
            "answer = t.send(b'')\n"
            "t.shutdown()\n"
            "print(json.dumps([answer.reason, [m for m in ('grpc', 'ssl', 'importlib.metadata', 'email')\n"
            "                                  if m in sys.modules], sorted(set(sys.modules) - made)]))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    # Nothing is imported after the transport is made (as root): a send
    # runs after the privilege drop, where the interpreter's library may be
    # out of reach (encodings.idna, for the name lookup, once was).
    assert json.loads(out.stdout.splitlines()[-1]) == ["UNAVAILABLE", [], []]


def test_otlp_metrics_and_the_resource_do_not_import_the_sdk() -> None:
    """The agent's own metrics over OTLP are collected and encoded by
    otel-exec (otlp/metrics.py) and the resource read from the environment
    by it (resource.py): the run path, with its resource and its Telemetry
    made for OTLP and started, imports no module of the OpenTelemetry SDK
    but the one that holds its version (the metrics' telemetry.sdk.version)."""
    code = ("import importlib, json, sys\n"
            f"for name in {RUN_PATH!r}:\n"
            "    importlib.import_module(name)\n"
            "from otel_exec.export.otlp.resource import resource_attributes\n"
            "from otel_exec.export.otlp.transport import OtlpOptions\n"
            "from otel_exec.export.telemetry import Telemetry\n"
            "from otel_exec.host.identity import HostIdentity\n"
            "t = Telemetry(dict, OtlpOptions(endpoint='http://127.0.0.1:9', protocol='grpc'), None,\n"
            "              resource_attributes(HostIdentity.current()))\n"
            "t.start()\n"
            "t.close()\n"
            "print(json.dumps([m for m in sys.modules if m.startswith('opentelemetry.sdk.') or m == 'psutil']))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == ["opentelemetry.sdk.version"]
