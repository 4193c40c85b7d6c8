"""OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME are read (resource.py) as
the SDK's OTELResourceDetector and Resource.merge read them, without the
SDK's resources module on the agent's run path."""
from __future__ import annotations

import platform
import uuid

import pytest
from opentelemetry.sdk.resources import OTELResourceDetector, Resource

from otel_exec.export.otlp.resource import SERVICE_INSTANCE_NAMESPACE, environment_resource, resource_attributes, uuid5
from otel_exec.host.identity import HostIdentity

CASES = [
    {},
    {"OTEL_RESOURCE_ATTRIBUTES": ""},
    {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=ci,host.name=override"},
    {"OTEL_RESOURCE_ATTRIBUTES": " a = b c , d=%20e%2Cf , g=x=y,h="},
    {"OTEL_RESOURCE_ATTRIBUTES": "a=1,,novalue,=empty-key,a=2,", "OTEL_SERVICE_NAME": ""},
    {"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,k=%E2%9C%93%zz", "OTEL_SERVICE_NAME": "execs"},
    {"OTEL_SERVICE_NAME": "execs"},
]


@pytest.mark.parametrize("environ", CASES)
def test_environment_resource_is_what_the_sdk_detects(monkeypatch: pytest.MonkeyPatch,
                                                      environ: dict[str, str]) -> None:
    for var in ("OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(var, raising=False)
    identity = HostIdentity.current()
    defaults = resource_attributes(identity)
    for var, value in environ.items():
        monkeypatch.setenv(var, value)
    detected = OTELResourceDetector().detect()
    assert list(environment_resource(environ).items()) == list(detected.attributes.items())
    sdk_merged = Resource(defaults).merge(detected)  # type: ignore[arg-type]
    assert list(resource_attributes(identity).items()) == list(sdk_merged.attributes.items())


@pytest.mark.parametrize("name", ["", "4f2d9e0c1b7a4e3f9d8c7b6a5f4e3d2c", "machine-id-\u00e9\u2713", "x" * 200])
def test_uuid5_is_the_uuid_modules(name: str) -> None:
    namespace = uuid.UUID("4d63009a-8d0f-11ee-aad7-4c796ed8e320")
    assert uuid5(namespace.bytes, name) == str(uuid.uuid5(namespace, name))
    assert uuid5(SERVICE_INSTANCE_NAMESPACE, name) == str(uuid.uuid5(namespace, name))


def test_host_arch_is_from_the_machine() -> None:
    attrs = resource_attributes(HostIdentity.current())
    assert attrs["host.arch"] == {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
