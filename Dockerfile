# otel-exec: the agent as a container image (docs/operations.md#the-container-image).
#
#   docker build -t otel-exec .                                   # or: scripts/image build
#   docker run --rm --pid=host --cap-drop=ALL \
#     --cap-add=BPF --cap-add=PERFMON --cap-add=SYS_RESOURCE --cap-add=SYS_PTRACE \
#     --cap-add=DAC_READ_SEARCH --cap-add=SYS_NICE --cap-add=SETPCAP \
#     --security-opt seccomp=unconfined \
#     -v /sys/kernel/btf:/sys/kernel/btf:ro -v /etc/machine-id:/etc/machine-id:ro \
#     -v /var/lib/otel-exec:/var/lib/otel-exec \
#     -e OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317 otel-exec
#
# Settings: /etc/otel-exec/config.yaml (mount it; docs/configuration.md), OTEL_EXEC_* and the
# standard OTEL_* variables. Without an endpoint the agent prints JSON Lines on stdout.
#
# The process starts as root and must: loading and attaching the programs needs CAP_BPF and
# CAP_PERFMON, reading every process's /proc/PID/exe and environ at start-up needs
# CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH. A runtime gives a non-root USER none of its added
# capabilities (Kubernetes sets no ambient capabilities), and file capabilities on the
# interpreter are void under no_new_privs (allowPrivilegeEscalation: false). Once attached the
# agent drops every capability (the CO-RE backend keeps none), empties its bounding set
# (CAP_SETPCAP) and sets no_new_privs; OTEL_EXEC_USER=otel-exec (uid 10001 below) also switches
# to an unprivileged user, which needs CAP_SETUID, CAP_SETGID and CAP_CHOWN at start
# (docs/operations.md#privileges).

# The base of both stages: Debian's Python 3.11 and libbpf1. scripts/image builds on a local
# debootstrap of the same release (--build-arg BASE=localhost/debian:bookworm).
ARG BASE=docker.io/library/debian:bookworm-slim

FROM ${BASE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# clang, bpftool and libbpf's headers compile the CO-RE object; gcc and the Python headers any
# native extension setup.py declares.
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev bpftool make gcc libc6-dev \
      python3 python3-dev python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The dependencies' wheels, in a layer of their own: rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
# The secret pip-ca, if given, is the CA bundle pip trusts (behind a TLS-inspecting proxy:
# `--secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt`, as scripts/image passes the host's).
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && python3 -m venv /opt/build \
 && /opt/build/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); \
      print("\n".join(p["build-system"]["requires"] + ["wheel"]))' > /tmp/build-requires.txt \
 && /opt/build/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); \
      print("\n".join(p["project"]["dependencies"]))' > /tmp/requires.txt \
 && /opt/build/bin/pip install -r /tmp/build-requires.txt \
 && /opt/build/bin/pip wheel -w /wheels -r /tmp/requires.txt
# The package's wheel: setup.py compiles bpf/ (against this machine's kernel BTF, or
# --build-arg VMLINUX_BTF=FILE; the object is relocated at load time on any kernel) and its
# extension modules. Then a venv with it alone, without pip, copied whole into the runtime.
ARG VMLINUX_BTF=/sys/kernel/btf/vmlinux
COPY . .
RUN VMLINUX_BTF="${VMLINUX_BTF}" /opt/build/bin/pip wheel --no-build-isolation --no-deps -w /wheels . \
 && python3 -m venv /opt/otel-exec \
 && /opt/otel-exec/bin/pip install --no-index --find-links /wheels otel-exec \
 && /opt/otel-exec/bin/pip uninstall -y pip setuptools

FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
# No compiler: the interpreter, libbpf.so.1 (loaded through ctypes), CA certificates for TLS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libbpf1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt/* /var/log/dpkg.log \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin otel-exec \
 && install -d -m 0755 /etc/otel-exec \
 && install -d -m 1770 -g otel-exec /run/otel-exec \
 && install -d -m 0700 /var/lib/otel-exec
COPY --from=build /opt/otel-exec /opt/otel-exec
ENV PATH=/opt/otel-exec/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    OTEL_EXEC_READY_FILE=/run/otel-exec/ready
# The spool: on a volume (a hostPath in Kubernetes) it survives restarts of the container.
VOLUME ["/var/lib/otel-exec"]
USER 0:0
STOPSIGNAL SIGTERM
# `otel-exec health`: the ready file exists, names the running agent, and its loop touched it
# within 30 s. The Helm chart's probes run the same command.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["otel-exec", "health"]
ENTRYPOINT ["otel-exec"]
CMD ["run"]
ARG BASE
# Last: the build's date and revision change every time, and would rebuild every layer after them.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="otel-exec" \
      org.opencontainers.image.description="eBPF agent that reports every exec on a Linux host, for OpenTelemetry" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="${BASE}"
