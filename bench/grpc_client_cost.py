"""CPU of one OTLP/gRPC Export call: grpcio against otel-exec's own HTTP/2
client (otel_exec/export/otlp/h2grpc.py), both calling the same rotel on
loopback with the same logs-shaped requests.

Each client runs in its own process (its CPU over all its threads and its
context switches, from getrusage(RUSAGE_SELF)), the two alternating
round after round; calls back to back and one every --gap seconds.

    python3 bench/grpc_client_cost.py [--rounds 3] [--calls 40] [--gap 0.1]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_exec.export.otlp import protowire as w  # noqa: E402

LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def logs_request(size: int) -> bytes:
    """An ExportLogsServiceRequest of about size bytes: exec-like log records."""
    records = []
    n = 0
    total = 0
    while total < size:
        body = w.len_field(5, w.any_string(f"/usr/bin/cc -c -O2 -o build/obj/module_{n}.o src/module_{n}.c"))
        attrs = b"".join(w.len_field(6, w.key_value(w.key_head(k), w.any_string(v))) for k, v in (
            ("process.pid", str(10000 + n)), ("process.executable.path", "/usr/bin/cc"),
            ("process.parent_pid", "4242"), ("otel_exec.exec_id", f"{n:016x}")))
        record = w.fixed64_field(1, 1_700_000_000_000_000_000 + n) + body + attrs
        records.append(w.len_field(2, record))
        total += len(records[-1]) + 3
        n += 1
    scope_logs = w.len_field(2, b"".join(records))
    return w.len_field(1, scope_logs)


def client(kind: str, port: int, size: int, calls: int, gap: float) -> dict[str, float]:
    payload = logs_request(size)
    target = f"127.0.0.1:{port}"
    if kind == "grpcio":
        import grpc

        channel = grpc.insecure_channel(target, [("grpc.primary_user_agent", "bench")])
        export = channel.unary_unary(LOGS)

        def call() -> None:
            export(payload, timeout=10)
    else:
        from otel_exec.export.otlp.h2grpc import Channel, endpoint

        channel = Channel(endpoint(target, {}), None, (), "bench")

        def call() -> None:
            status = channel.call(LOGS, payload, 10)
            assert status.code == "OK", status

    for _ in range(3):  # connection, first-use costs
        call()
    time.sleep(0.2)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.monotonic()
    for _ in range(calls):
        call()
        if gap:
            time.sleep(gap)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - wall0 - gap * calls
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    switches = (r1.ru_nvcsw - r0.ru_nvcsw) + (r1.ru_nivcsw - r0.ru_nivcsw)
    return {"bytes": len(payload), "cpu_us": cpu / calls * 1e6, "sys_us": (r1.ru_stime - r0.ru_stime) / calls * 1e6,
            "switches": switches / calls, "wall_us": wall / calls * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--gap", type=float, default=0.1)
    parser.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        kind, port, size, calls, gap = args.client
        print(json.dumps(client(kind, int(port), int(size), int(calls), float(gap))))
        return

    from testkit.rotel import accepts, free_port_pair, rotel_argv, rotel_binary, rotel_env

    ports = free_port_pair()
    with tempfile.TemporaryFile() as log:
        rotel = subprocess.Popen(rotel_argv(rotel_binary(), ports), env=rotel_env(), stdout=log, stderr=log)
        try:
            while not accepts(ports[0], 0.2):
                time.sleep(0.05)
            print("| size | spacing | client | CPU µs/call | of which system | context switches/call "
                  "| wall µs/call (back to back) |")
            print("|---|---|---|---|---|---|---|")
            for size in (812_000, 141_000):
                for gap in (0.0, args.gap):
                    for round_ in range(args.rounds):
                        for kind in ("grpcio", "h2grpc"):
                            out = subprocess.run([sys.executable, __file__, "--client", kind, str(ports[0]),
                                                  str(size), str(args.calls), str(gap)],
                                                 capture_output=True, text=True, check=True).stdout
                            r = json.loads(out)
                            spacing = "back to back" if not gap else f"every {gap * 1e3:g} ms"
                            wall = f"{r['wall_us']:.0f}" if not gap else ""
                            print(f"| {r['bytes'] // 1000} KB | {spacing} | {kind} | {r['cpu_us']:.0f} | "
                                  f"{r['sys_us']:.0f} | {r['switches']:.1f} | {wall} |", flush=True)
        finally:
            rotel.terminate()
            rotel.wait()


if __name__ == "__main__":
    main()
