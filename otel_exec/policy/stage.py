"""The policy stage: kernel -> decode -> policy -> lineage -> export.

What leaves the host is decided here, once per exec and for both backends
(agent.Agent.handle): the redaction of argv and env (redact.py) and what a
sampled exec stands for (sampling.py). Decoders hand over argv and env as
Strings, one instance per distinct block, which this stage redacts in place
the first time it sees them: the rules run once per distinct block, and
every later stage, caches included, only ever holds the redacted list.
"""
from __future__ import annotations

from collections.abc import Callable

from otel_exec.model.events import ExecEvent, Strings
from otel_exec.policy.redact import RedactionPolicy
from otel_exec.policy.sampling import stands_for


class ExecPolicy:
    """`trace_context`: what span lineage reads from an environment
    (lineage.traceparent.TraceContextCarrier.entries), kept on it from
    before redaction, so that lineage follows TRACEPARENT in every
    --env-capture mode. `sample_rate`: --sample-rate."""

    def __init__(self, redaction: RedactionPolicy, sample_rate: int,
                 trace_context: Callable[[list[str]], dict[str, str]]) -> None:
        self.redaction = redaction
        self.sample_rate = sample_rate
        self._sampling = sample_rate > 1
        self._trace_context = trace_context

    def apply(self, ev: ExecEvent) -> None:
        """Redact ev's argv and env, and say what it stands for."""
        argv, env = ev.argv, ev.env
        try:
            if not argv.redacted:  # type: ignore[attr-defined]
                argv[:] = self.redaction.argv(argv)
                argv.redacted = True  # type: ignore[attr-defined]
            if not env.redacted:  # type: ignore[attr-defined]
                env.trace_context = self._trace_context(env)  # type: ignore[attr-defined] # as it was
                if ev.observed:
                    # Found in /proc at start: no exporter reports its
                    # environment, so none of it is kept (nor redacted, for
                    # every process at start) but the trace context.
                    env.clear()
                else:
                    env[:] = self.redaction.env(env)
                env.redacted = True  # type: ignore[attr-defined]
        except AttributeError:  # a plain list, not a decoded block (BCC: argv or env not read)
            if isinstance(argv, Strings) and isinstance(env, Strings):
                raise
            if not isinstance(argv, Strings):
                ev.argv = Strings(argv)
            if not isinstance(env, Strings):
                ev.env = Strings(env)
            self.apply(ev)
            return
        if self._sampling:
            ev.sample_rate = stands_for(self.sample_rate, ev.shared is not None and ev.shared.sampled)
