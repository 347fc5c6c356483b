#!/usr/bin/env bash
# Load on `ragloop serve` over loopback with wrk (Debian's `wrk`): requests/s and p50/p99
# latency of /v1/retrieve and /v1/answer at 1, 16 and 64 connections, on the work directory
# of a finished `ragloop run` (its served model and index), then the server's peak RSS.
#
#   scripts/bench/serve_load.sh WORK_DIR [--quick] [SECONDS]
#
# --quick serves the hashed model (a `ragloop run --quick` work directory). The server and
# wrk share the machine's cores. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:?usage: serve_load.sh WORK_DIR [--quick] [SECONDS]}
shift
quick=()
if [ "${1:-}" = --quick ]; then
    quick=(--quick)
    shift
fi
secs=${1:-10}
port=18087
bin=target/release/ragloop
config=$(mktemp --suffix .toml)
# Enough slots for 64 connections: the bench measures throughput, not the 503 guard.
printf '[serve]\naddr = "127.0.0.1:%s"\nmax_concurrent = 256\n' "$port" > "$config"
"$bin" serve --config "$config" --work-dir "$work" "${quick[@]}" 2> "$config.log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$config" "$config.log"' EXIT
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.2
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$config.log" >&2; exit 1; }
model=$(curl -sf "http://127.0.0.1:$port/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["model"])')
echo "| route | connections | requests/s | p50 ms | p99 ms | non-2xx | socket errors |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for route in retrieve answer; do
    field=query
    [ "$route" = answer ] && field=question
    for c in 1 16 64; do
        threads=$(( c < 2 ? 1 : 2 ))
        line=$(FIELD=$field wrk -t"$threads" -c"$c" -d"${secs}s" --latency \
            -s scripts/bench/serve_load.lua "http://127.0.0.1:$port/v1/$route" | grep '^RESULT')
        read -r _ rps p50 p99 status sock <<< "$line"
        echo "| /v1/$route | $c | $rps | $p50 | $p99 | $status | $sock |"
    done
done
peak=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$server/status")
kill -TERM $server
wait $server || true
echo
echo "model: $model; ${secs} s per row; server peak RSS $peak MiB; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores shared by server and wrk"
