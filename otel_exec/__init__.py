"""otel-exec: every Linux process execution as OpenTelemetry data."""

__version__ = "0.1.0"
