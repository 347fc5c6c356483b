#!/usr/bin/env bash
# A soak of `ragloop serve`: moderate load (wrk, CONNECTIONS connections on /v1/answer, every
# question distinct) for SECONDS, the server's RSS sampled every 30 s, so a leak shows as a
# rising column.
#
#   scripts/bench/serve_soak.sh WORK_DIR [--quick] [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:?usage: serve_soak.sh WORK_DIR [--quick] [SECONDS] [CONNECTIONS]}
shift
quick=()
if [ "${1:-}" = --quick ]; then
    quick=(--quick)
    shift
fi
secs=${1:-600}
conns=${2:-4}
port=18088
config=$(mktemp --suffix .toml)
printf '[serve]\naddr = "127.0.0.1:%s"\nmax_concurrent = 64\n' "$port" > "$config"
target/release/ragloop serve --config "$config" --work-dir "$work" "${quick[@]}" 2> "$config.log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$config" "$config.log" "$config.wrk"' EXIT
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.2
done
FIELD=question UNIQUE=1 wrk -t2 -c"$conns" -d"${secs}s" --latency -s scripts/bench/serve_load.lua \
    "http://127.0.0.1:$port/v1/answer" > "$config.wrk" &
load=$!
echo "| elapsed s | server RSS MiB |"
echo "|---:|---:|"
start=$(date +%s)
while kill -0 $load 2>/dev/null; do
    echo "| $(( $(date +%s) - start )) | $(( $(ps -o rss= -p $server) / 1024 )) |"
    sleep 30
done
echo "| $(( $(date +%s) - start )) | $(( $(ps -o rss= -p $server) / 1024 )) |"
read -r _ rps p50 p99 status sock <<< "$(grep '^RESULT' "$config.wrk")"
echo
echo "$conns connections on /v1/answer for $secs s: $rps requests/s, p50 $p50 ms, p99 $p99 ms, $status non-2xx, $sock socket errors"
