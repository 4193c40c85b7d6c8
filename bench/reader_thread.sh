#!/usr/bin/env bash
# CPU of the agent's reader thread (its main thread: ring drain, decode,
# policy, lineage, encoding) and of the whole agent per exec seen, during one
# exec storm; no profiler. Run as root:
#
#     bench/reader_thread.sh TREE [EXECS]
#
# TREE: a checkout whose otel_exec is run (`python -m otel_exec` from it, with
# this checkout's .venv Python, or PYTHON=...); its BPF object must be in
# TREE/otel_exec/_bpf. The agent exports OTLP/gRPC to rotel (blackhole) on
# loopback; the storm is testkit/storm.c (2 workers, EXECS execs of /bin/true
# unthrottled, bench/lib/storm.py's environment). The CPU is the main thread's
# (/proc/PID/task/PID/stat) and the process's utime+stime from the storm's
# start to 3 s after its end, divided by every exec the agent saw (other
# execs on the host included: the reader handles them too).
set -euo pipefail
tree="$(readlink -f "$1")"
execs="${2:-10000}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
rotel="$("$python" -c 'from testkit.rotel import rotel_binary; print(rotel_binary())' 2>/dev/null ||
	(cd "$here" && "$python" -c 'from testkit.rotel import rotel_binary; print(rotel_binary())'))"
work="$(mktemp -d -t oe-reader.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
gcc -O2 -o "$work/storm" "$here/testkit/storm.c"
port=$((40000 + RANDOM % 20000))
"$rotel" start --otlp-grpc-endpoint "127.0.0.1:$port" --otlp-http-endpoint "127.0.0.1:$((port + 1))" \
	--exporter blackhole >"$work/rotel.log" 2>&1 &
pids+=($!)
(cd "$tree" && exec "$python" -m otel_exec run --exporter otlp --endpoint "http://127.0.0.1:$port" \
	--protocol grpc --ready-file "$work/ready" --spool-dir "$work/spool") 2>"$work/agent.err" &
agent=$!
pids+=($agent)
for _ in $(seq 120); do [ -e "$work/ready" ] && break; sleep 0.5; done
[ -e "$work/ready" ] || { cat "$work/agent.err" >&2; exit 1; }
sleep 1
cpu() { awk '{print $14 + $15}' "$1"; }
t0=$(cpu /proc/$agent/task/$agent/stat); a0=$(cpu /proc/$agent/stat)
env -i PATH=/usr/bin:/bin HOME=/home/builder USER=builder LOGNAME=builder SHELL=/bin/bash LANG=C.UTF-8 \
	TERM=xterm-256color PWD=/home/builder/src/project OLDPWD=/home/builder SHLVL=2 HOSTNAME=build-runner-07 \
	TMPDIR=/tmp EDITOR=vi CI=true CI_JOB_ID=1234567890 CI_COMMIT_SHA=4bf92f3577b34da6a3ce929d0e0e4736aabbccdd \
	"$work/storm" 2 "$execs" 0 /bin/true >/dev/null
sleep 3
t1=$(cpu /proc/$agent/task/$agent/stat); a1=$(cpu /proc/$agent/stat)
kill -INT "$agent"; wait "$agent" || true
seen=$(grep -o '[0-9]* execs seen' "$work/agent.err" | head -1 | cut -d' ' -f1)
tck=$(getconf CLK_TCK)
awk -v t="$((t1 - t0))" -v a="$((a1 - a0))" -v n="$seen" -v tck="$tck" -v load="$(cut -d' ' -f1 /proc/loadavg)" \
	-v name="$tree${OTEL_EXEC_NATIVE:+ (OTEL_EXEC_NATIVE=$OTEL_EXEC_NATIVE)}" \
	'BEGIN { printf "%s: reader thread %.1f us/exec, whole agent %.1f us/exec (%d execs seen, load %s)\n",
	         name, t / tck * 1e6 / n, a / tck * 1e6 / n, n, load }'
