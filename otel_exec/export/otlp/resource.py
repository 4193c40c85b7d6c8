"""The resource of every log and trace request (docs/attributes.md#resource-and-scope)."""
from __future__ import annotations

import platform
import socket
import uuid

from otel_exec import __version__
from otel_exec.export.otlp import attributes as keys
from otel_exec.host.identity import HostIdentity

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm32", "ppc64le": "ppc64", "s390x": "s390x"}


def resource_attributes(identity: HostIdentity) -> dict[str, object]:
    """Our defaults, overridden by OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME."""
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource

    ours = Resource({
        keys.SERVICE_NAME: "otel-exec",
        keys.SERVICE_VERSION: __version__,
        keys.SERVICE_INSTANCE_ID: str(uuid.uuid5(uuid.NAMESPACE_OID, f"otel-exec/{identity.machine_id}")),
        keys.HOST_NAME: socket.gethostname(),
        keys.HOST_ID: identity.machine_id,
        keys.OS_TYPE: "linux",
        keys.HOST_ARCH: _ARCH.get(platform.machine(), platform.machine()),
        keys.SDK_NAME: "opentelemetry",
        keys.SDK_LANGUAGE: "python",
    })
    return dict(ours.merge(OTELResourceDetector().detect()).attributes)
