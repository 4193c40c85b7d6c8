"""The resource of every log and trace request (docs/attributes.md#resource-and-scope)."""
from __future__ import annotations

import hashlib
import logging
import os
import socket
from typing import Mapping
from urllib.parse import unquote

from otel_exec import __version__
from otel_exec.export.otlp import attributes as keys
from otel_exec.host.identity import HostIdentity

# The namespace semantic conventions name for a UUIDv5 service.instance.id
# derived from an inherent unique id (here the machine id).
SERVICE_INSTANCE_NAMESPACE = bytes.fromhex("4d63009a8d0f11eeaad74c796ed8e320")
log = logging.getLogger(__name__)
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm32", "ppc64le": "ppc64", "s390x": "s390x"}


def uuid5(namespace: bytes, name: str) -> str:
    """str(uuid.uuid5(UUID(bytes=namespace), name)) (RFC 4122, 4.3): the
    uuid module, and the platform module it imports, would otherwise stay
    resident for this one value."""
    digest = bytearray(hashlib.sha1(namespace + name.encode()).digest()[:16])
    digest[6] = digest[6] & 0x0F | 0x50  # version 5
    digest[8] = digest[8] & 0x3F | 0x80  # the RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def environment_resource(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """OTEL_RESOURCE_ATTRIBUTES (key=value pairs, comma-separated, values
    percent-decoded) and OTEL_SERVICE_NAME (wins for service.name) read as the
    SDK's OTELResourceDetector reads them, without importing the SDK's
    resources module (which imports psutil)."""
    found: dict[str, str] = {}
    raw = environ.get("OTEL_RESOURCE_ATTRIBUTES")
    for item in raw.split(",") if raw else ():
        key, sep, value = item.partition("=")
        if not sep:
            log.warning("Invalid key value resource attribute pair %s: no '='", item)
            continue
        found[key.strip()] = unquote(value.strip())
    if environ.get("OTEL_SERVICE_NAME"):
        found[keys.SERVICE_NAME] = environ["OTEL_SERVICE_NAME"]
    if "" in found:  # the SDK's attributes drop an empty key
        log.warning("Invalid resource attribute key '' in OTEL_RESOURCE_ATTRIBUTES: dropped")
        del found[""]
    return found


def resource_attributes(identity: HostIdentity) -> dict[str, object]:
    """Our defaults, overridden by OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME.

    Logs and traces are encoded by otel-exec, not by the OpenTelemetry SDK,
    whose name `opentelemetry` the conventions reserve: otel-exec names
    itself as the telemetry SDK and as the distribution."""
    machine = os.uname().machine  # platform.machine(), without its module
    ours: dict[str, object] = {
        keys.SERVICE_NAME: "otel-exec",
        keys.SERVICE_VERSION: __version__,
        keys.SERVICE_INSTANCE_ID: uuid5(SERVICE_INSTANCE_NAMESPACE, identity.machine_id),
        keys.HOST_NAME: socket.gethostname(),
        keys.HOST_ID: identity.machine_id,
        keys.OS_TYPE: "linux",
        keys.HOST_ARCH: _ARCH.get(machine, machine),
        keys.SDK_NAME: "otel-exec",
        keys.SDK_LANGUAGE: "python",
        keys.SDK_VERSION: __version__,
        keys.DISTRO_NAME: "otel-exec",
        keys.DISTRO_VERSION: __version__,
    }
    return {**ours, **environment_resource()}


def metrics_resource(attrs: dict[str, object]) -> dict[str, object]:
    """The resource of the agent's own metrics: those the OpenTelemetry SDK
    makes, so it is their telemetry SDK (otel-exec stays the distribution)."""
    from opentelemetry.sdk.version import __version__ as sdk_version

    return {**attrs, keys.SDK_NAME: "opentelemetry", keys.SDK_LANGUAGE: "python", keys.SDK_VERSION: sdk_version}
