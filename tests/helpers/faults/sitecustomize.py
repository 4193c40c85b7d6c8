"""Fault injection for tests/export/test_export_failures.py: put this directory on
the agent's PYTHONPATH and name the fault in OTEL_EXEC_TEST_FAULT; Python
imports this module at start-up, before the agent's own code runs.

- send_raises: the first logs request raises RuntimeError inside the
  transport (an unexpected exception in the export loop);
- thread_dies: the first step of the logs export loop raises an exception
  that is not an Exception, which no handler in the loop catches: the
  export thread dies.
"""
import os

_FAULT = os.environ.get("OTEL_EXEC_TEST_FAULT")


class InjectedThreadDeath(BaseException):
    pass


def _once(original, exc, signal_of):
    fired = []

    def wrapper(self, *args, **kwargs):
        if not fired and signal_of(self) == "logs":
            fired.append(True)
            raise exc
        return original(self, *args, **kwargs)
    return wrapper


if _FAULT == "send_raises":
    from otel_exec.export.otlp import transport

    for cls in (transport.GrpcTransport, transport.HttpTransport):
        cls.send = _once(cls.send, RuntimeError("injected transport fault"), lambda t: t.settings.signal)
elif _FAULT == "thread_dies":
    from otel_exec.export.otlp import batch

    batch.BatchExporter._step = _once(batch.BatchExporter._step, InjectedThreadDeath("injected thread death"),
                                      lambda b: b.signal)
