"""Every attribute key outside otel_exec.* against the semantic-conventions
registry, as the opentelemetry-semantic-conventions package (the test extra)
carries it: present, not deprecated, and sent with the registry's type.

The package names each key (a constant, its docstring saying when it is
deprecated; templates end in _TEMPLATE) and the members of enum attributes,
but not the value types: REGISTRY_TYPES below is transcribed from the
registry's model (model/*/registry.yaml) of the version otel-exec states,
attributes.SEMCONV_VERSION, and the encoder's output is checked against it.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
from enum import Enum

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.semconv import attributes as stable_attributes
from opentelemetry.semconv._incubating import attributes as incubating_attributes
from opentelemetry.semconv.attributes.telemetry_attributes import TelemetrySdkLanguageValues
from opentelemetry.semconv._incubating.attributes.host_attributes import HostArchValues
from opentelemetry.semconv._incubating.attributes.os_attributes import OsTypeValues
from opentelemetry.semconv.schemas import Schemas

from otel_exec.export.otlp import attributes as keys
from otel_exec.export.otlp import encode
from otel_exec.export.otlp.resource import metrics_resource, resource_attributes
from otel_exec.export.otlp.shape import RecordLimits
from otel_exec.host.identity import HostIdentity
from otel_exec.lineage.spans import ProcessSpan
from otel_exec.model.executable import COMPLETE, ExecutableIdentity
from otel_exec.model.process import ProcessInfo
from tests.helpers.events import sample_exec

# Registry 1.44.0 value types of the keys otel-exec sends (an enum is sent
# as a string: its members are checked in ENUMS).
REGISTRY_TYPES = {
    "process.pid": "int", "process.parent_pid": "int", "process.vpid": "int", "process.args_count": "int",
    "process.user.id": "int", "process.real_user.id": "int", "process.exit.code": "int",
    "process.creation.time": "string", "process.executable.path": "string", "process.executable.name": "string",
    "process.command": "string", "process.working_directory": "string", "process.linux.cgroup": "string",
    "process.command_args": "string[]", "process.interactive": "boolean",
    "process.environment_variable.<key>": "string",
    "file.inode": "string", "file.mode": "string", "file.changed": "string",
    "container.id": "string", "error.type": "string",
    "process.executable.build_id.gnu": "string", "process.executable.build_id.go": "string",
    "process.executable.build_id.htlhash": "string",
    "service.name": "string", "service.version": "string", "service.instance.id": "string",
    "host.name": "string", "host.id": "string", "host.arch": "string", "os.type": "string",
    "telemetry.sdk.name": "string", "telemetry.sdk.language": "string", "telemetry.sdk.version": "string",
    "telemetry.distro.name": "string", "telemetry.distro.version": "string",
}
ENUMS: dict[str, type[Enum]] = {
    "os.type": OsTypeValues, "host.arch": HostArchValues, "telemetry.sdk.language": TelemetrySdkLanguageValues,
}
_KINDS = {"string_value": "string", "int_value": "int", "bool_value": "boolean", "double_value": "double"}


def _definitions(package: object) -> dict[str, tuple[str, str]]:
    """Every attribute constant of the package's modules: key -> (constant
    name, docstring). Read from the source: the docstrings say what is
    deprecated."""
    found: dict[str, tuple[str, str]] = {}
    for info in pkgutil.iter_modules(package.__path__):  # type: ignore[attr-defined]
        module = importlib.import_module(f"{package.__name__}.{info.name}")  # type: ignore[attr-defined]
        body = ast.parse(open(module.__file__, encoding="utf-8").read()).body  # type: ignore[arg-type]
        for node, after in zip(body, [*body[1:], None]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                doc = after.value.value if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) \
                    else ""
                found[node.value.value] = (node.target.id, str(doc).strip())
    return found


# Stable definitions win: the incubating module keeps a stable key as
# "Deprecated in favor of stable ...", which is a move, not a deprecation.
REGISTRY = {**_definitions(incubating_attributes), **_definitions(stable_attributes)}
TEMPLATES = {key for key, (name, _) in REGISTRY.items() if name.endswith("_TEMPLATE")}


def _registry_entry(key: str) -> tuple[str, tuple[str, str]]:
    """The registry's name for a key sent (a template's `<key>` form) and its definition."""
    for template in TEMPLATES:
        if key.startswith(template + "."):
            return f"{template}.<key>", REGISTRY[template]
    assert key in REGISTRY, f"{key}: not in the semantic-conventions registry; use a registry key or otel_exec.*"
    return key, REGISTRY[key]


def registry_keys() -> list[str]:
    """Every key the table names outside otel_exec.*, and the environment template."""
    return sorted({k for k in keys.TABLE if not k.startswith("otel_exec.")} | {keys.ENV_PREFIX + "KEY"})


def test_the_stated_version_is_the_package_s_registry() -> None:
    """The package carries the registry of its newest schema: at least the
    version the keys follow (the key checks below use the package)."""
    def version(url: str) -> tuple[int, ...]:
        return tuple(int(part) for part in url.rsplit("/", 1)[1].split("."))

    newest = max((s.value for s in Schemas), key=version)
    assert keys.SCHEMA_URL == f"https://opentelemetry.io/schemas/{keys.SEMCONV_VERSION}"
    if version(newest) >= version(keys.SCHEMA_URL):
        assert keys.SCHEMA_URL in {s.value for s in Schemas}


def test_every_key_outside_otel_exec_is_a_registry_key_not_deprecated() -> None:
    assert "process.exit.code" in REGISTRY and "process.environment_variable" in TEMPLATES  # the reader works
    for key in registry_keys():
        name, (constant, doc) = _registry_entry(key)
        assert not doc.startswith("Deprecated"), f"{key}: deprecated in the registry ({constant}: {doc})"
        assert name in REGISTRY_TYPES, f"{key}: add the registry's type of {name} to REGISTRY_TYPES"
    assert set(REGISTRY_TYPES) == {_registry_entry(k)[0] for k in registry_keys()}


def _sent() -> dict[str, set[str]]:
    """Each key the encoder sends on an exec record, an exit record, a span
    and the resources, with the value types it was sent with."""
    ev = sample_exec(executable_identity=ExecutableIdentity(COMPLETE, size=1, sha256="ab" * 32, htlhash="cd" * 16,
                                                            gnu_build_id="ef" * 20, go_build_id="go/id"))
    info = ProcessInfo(ev.host_pid, ev.host_ppid, ev.start_ticks, ev.exec_id, ev.parent_exec_id, ev.comm,
                       ev.pathname, ev.argv, False, ev.timestamp)
    span = ProcessSpan(info, b"\1" * 16, b"\2" * 8, b"", "", "", "", ev.timestamp)
    # --record-attributes full: every key, process.command too (a compact record has it as command_args[0]);
    # --env-attributes 48: process.environment_variable.<key> (the default packs the environment)
    enc = encode.exec_attributes(ev, encode.SPAN_SLIM, RecordLimits(repeat_derived=True, env_attributes=48))
    span.attributes = enc.span_attrs()
    records = [encode.log_record(ev, enc, span, ev.timestamp)]
    spans = []
    for code, signo in ((0, None), (3, None), (None, 9)):
        info.exit_code, info.signal = code, signo
        span.end_ns, span.ended_by = ev.timestamp + 1000, "exit"
        records.append(encode.exit_record(span, ev.timestamp + 2000, True))
        spans.append(encode.span(span))
    resources = [resource_attributes(HostIdentity.current())]
    resources.append(metrics_resource(resources[0]))
    logs = ExportLogsServiceRequest.FromString(encode.export_request(encode.encoded_resource(resources[0]), records))
    traces = ExportTraceServiceRequest.FromString(encode.export_request(b"", spans))
    kvs = [*logs.resource_logs[0].resource.attributes,
           *(kv for r in logs.resource_logs[0].scope_logs[0].log_records for kv in r.attributes),
           *(kv for s in traces.resource_spans[0].scope_spans[0].spans for kv in s.attributes)]
    sent: dict[str, set[str]] = {}
    for kv in kvs:
        sent.setdefault(kv.key, set()).add(_kind(kv.value))
    for attrs in resources:  # the metrics resource goes through the SDK: its Python types
        for key, value in attrs.items():
            sent.setdefault(key, set()).add({str: "string", int: "int", bool: "boolean"}[type(value)])
    return sent


def _kind(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return f"{_kind(value.array_value.values[0])}[]"
    return _KINDS[kind]


def test_every_registry_key_is_sent_with_the_registry_s_type() -> None:
    sent = _sent()
    checked = set()
    for key, kinds in sent.items():
        if key.startswith("otel_exec."):
            continue
        name, _ = _registry_entry(key)
        assert kinds == {REGISTRY_TYPES[name]}, f"{key}: sent as {kinds}, the registry says {REGISTRY_TYPES[name]}"
        checked.add(name)
    # The sample covers every registry key but those only a BCC exec or /proc
    # could leave out, so a type the encoder gets wrong cannot hide.
    assert checked == set(REGISTRY_TYPES)


def test_enum_values_are_registry_members() -> None:
    for attrs in (resource := resource_attributes(HostIdentity.current()), metrics_resource(resource)):
        for key, members in ENUMS.items():
            assert attrs[key] in {m.value for m in members}, (key, attrs[key])
