#!/usr/bin/env python3
"""Cost of the redaction policy (otel_exec.policy.redact) on typical argv and env.

    python3 bench/redact.py [ROUNDS]

The agent redacts once per distinct argv or env block (policy.stage),
so what counts is one call on a block not seen before: argv of a build or
shell session, and an environment of ~40 entries of which a few change from
exec to exec (the policy remembers entries it passed unchanged). Prints the
median microseconds per call over ROUNDS rounds (BENCHMARKS.md).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otel_exec.policy.redact import RedactionPolicy  # noqa: E402

ARGVS = [
    ["/usr/bin/gcc", "-O2", "-g", "-Wall", "-I/usr/include/python3.11", "-c", "src/module.c", "-o",
     "build/module.o", "-DNDEBUG", "-fPIC"],
    ["git", "log", "--oneline", "-n", "20", "--format=%H %s"],
    ["ls", "-la", "/var/log"],
    ["/bin/sh", "-c", "cd /srv/app && make -j4 test"],
    ["python3", "-m", "pytest", "tests/test_x.py", "-q", "--maxfail=1"],
    ["curl", "-sS", "-H", "Accept: application/json", "https://api.example.com/v1/items?page=2"],
    ["mkdir", "-p", "/tmp/build/out"],
    ["ssh", "-p", "22", "deploy@host.example.com", "uptime"],
    ["docker", "run", "--rm", "-e", "LANG=C.UTF-8", "-v", "/srv:/srv", "alpine:3.19", "true"],
    ["java", "-Xmx2g", "-Dfile.encoding=UTF-8", "-jar", "/opt/app/app.jar", "--server.port=8080"],
]

BASE_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/home/dev", "USER=dev",
    "LOGNAME=dev", "SHELL=/bin/bash", "TERM=xterm-256color", "LANG=en_US.UTF-8", "LC_ALL=en_US.UTF-8",
    "PWD=/srv/app", "OLDPWD=/srv", "SHLVL=2", "HOSTNAME=build-7", "EDITOR=vim", "PAGER=less",
    "XDG_RUNTIME_DIR=/run/user/1000", "XDG_SESSION_ID=42", "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus",
    "SSH_AUTH_SOCK=/tmp/ssh-XXXX/agent.123", "SSH_CONNECTION=10.0.0.1 50000 10.0.0.2 22",
    "MAKEFLAGS=-j4", "CC=gcc", "CFLAGS=-O2 -g", "PYTHONPATH=/srv/app/src", "VIRTUAL_ENV=/srv/app/.venv",
    "JAVA_HOME=/usr/lib/jvm/java-17", "GOPATH=/home/dev/go", "NODE_ENV=production",
    "DATABASE_URL=postgres://app:pw@db:5432/app", "API_TOKEN=abc123", "GIT_AUTHOR_NAME=Dev",
    "KUBECONFIG=/home/dev/.kube/config", "HISTSIZE=1000", "LS_COLORS=rs=0:di=01;34:ln=01;36:mh=00",
    "MAIL=/var/mail/dev", "TZ=UTC", "TRACEPARENT=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "OTEL_SERVICE_NAME=build", "CI=true", "BUILD_NUMBER=1234", "_=/usr/bin/make",
]


def per_call_us(fn, inputs: list[list[str]], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        for item in inputs:
            fn(item)
        samples.append((time.perf_counter() - t) / len(inputs) * 1e6)
    return statistics.median(samples)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    policy = RedactionPolicy()
    # Each env differs from the last in a few entries, as exec to exec does.
    envs = [[*BASE_ENV, f"_={i}", f"BUILD_STEP={i}", f"RANDOM_SEED={i * 7919}"] for i in range(200)]
    policy.env(BASE_ENV)
    argv = per_call_us(policy.argv, ARGVS, rounds)
    env_warm = per_call_us(policy.env, envs, rounds)
    env_cold = per_call_us(lambda e: RedactionPolicy().env(e), envs[:20], max(rounds // 10, 5))
    print(f"argv (typical, 10 commands): {argv:.2f} us/call")
    print(f"env (43 entries, 3 new per call): {env_warm:.2f} us/call")
    print(f"env (43 entries, fresh policy): {env_cold:.2f} us/call")


if __name__ == "__main__":
    main()
