#!/usr/bin/env bash
# The stress suite: tests/stress/locustfile.py headless at 10 users for 60 s, 50 for 120 s and
# 100 for 180 s (one after the other), each run writing locust's CSV files, its HTML report,
# its JSON totals, its log and a CPU sample (cpu.csv) into its own folder; then analyze_results.py draws the
# charts and prints the targets. It never fails on the numbers: it exits non-zero only when
# locust or the analysis could not run.
#
#   STRESS_API_KEY=ipk-... tests/stress/run_stress_test.sh [--host URL] [--out DIR]
#       [--runs "10:60 50:120 100:180"] [--spawn-rate N] [--target platform|llama-server]
#       [--server-pid PID] [--no-analyze]
#
# --runs takes USERS:SECONDS pairs (e.g. --runs "2:5" for a smoke run). --out defaults to
# test-artifacts/stress/<UTC time>. STRESS_MODEL picks the model (default smollm2).
# --server-pid: the server's process (run.sh, daphne, llama-server) when it runs on this machine;
# its CPU and its children's is then sampled beside the whole machine's, and the CPU target uses it.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HOST="${STRESS_HOST:-http://127.0.0.1:8000}"
OUT=""
RUNS="10:60 50:120 100:180"
SPAWN_RATE=10
TARGET="${STRESS_TARGET:-platform}"
ANALYZE=1
SERVER_PID=""

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --host) HOST="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --spawn-rate) SPAWN_RATE="$2"; shift 2 ;;
        --target) TARGET="$2"; shift 2 ;;
        --server-pid) SERVER_PID="$2"; shift 2 ;;
        --no-analyze) ANALYZE=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

PY="$ROOT/.venv/bin/python"
[[ -x "$PY" ]] || PY="$(command -v python3)"
OUT="${OUT:-$ROOT/test-artifacts/stress/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
export STRESS_TARGET="$TARGET"
if [[ -z "${STRESS_API_KEY:-}" && "$TARGET" == "platform" ]]; then
    echo "warning: STRESS_API_KEY is not set; the platform will answer 401 to the authenticated calls" >&2
fi

SAMPLER_PID=""
stop_sampler() {
    if [[ -n "$SAMPLER_PID" ]]; then
        kill -TERM "$SAMPLER_PID" 2>/dev/null || true
        wait "$SAMPLER_PID" 2>/dev/null || true
        SAMPLER_PID=""
    fi
}
trap stop_sampler EXIT

echo "stress suite against $HOST ($TARGET), runs: $RUNS, results in $OUT"
for run in ${RUNS//,/ }; do
    users="${run%%:*}"
    seconds="${run##*:}"
    if ! [[ "$users" =~ ^[0-9]+$ && "$seconds" =~ ^[0-9]+$ && "$run" == *:* ]]; then
        echo "bad run '$run': expected USERS:SECONDS" >&2
        exit 2
    fi
    dir="$OUT/$(printf '%03d' "$users")users-${seconds}s"
    mkdir -p "$dir"
    rate=$(( users < SPAWN_RATE ? users : SPAWN_RATE ))
    echo "[$(date -u +%H:%M:%S)] $users users for ${seconds}s (spawn rate $rate/s) -> $dir"
    "$PY" "$ROOT/tests/stress/sample_cpu.py" "$dir/cpu.csv" ${SERVER_PID:+--pid "$SERVER_PID"} &
    SAMPLER_PID=$!
    status=0
    # --stop-timeout lets users finish the call they are in, so the last requests are counted: in
    # locust.json, written at the very end (the CSV files are written before those calls end).
    "$PY" -m locust -f "$ROOT/tests/stress/locustfile.py" --host "$HOST" --headless \
        --users "$users" --spawn-rate "$rate" --run-time "${seconds}s" --stop-timeout 60 \
        --csv "$dir/locust" --csv-full-history --json-file "$dir/locust" --html "$dir/report.html" --only-summary \
        --loglevel WARNING >"$dir/locust.log" 2>&1 || status=$?
    stop_sampler
    # 1 = some requests failed: that is a result for the analysis, not a broken run.
    if [[ $status -ne 0 && $status -ne 1 ]]; then
        echo "locust exited $status; its log:" >&2
        tail -n 40 "$dir/locust.log" >&2
        exit "$status"
    fi
    tail -n 3 "$dir/locust.log" | sed 's/^/    /'
done

if [[ $ANALYZE -eq 1 ]]; then
    "$PY" "$ROOT/tests/stress/analyze_results.py" "$OUT"
fi
