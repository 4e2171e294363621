#!/usr/bin/env bash
# Soak test (not in CI): the demo stack on Redis, a reconnect storm for
# DURATION (default 10m), and the agent's RSS, goroutines and sockets every
# INTERVAL (default 30s). Usage: deploy/soak/soak.sh [DURATION] [INTERVAL]
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
root="$(cd "$(dirname "$0")/../.." && pwd)"
duration="${1:-10m}"
interval="${2:-30s}"
redis_port="${SOAK_REDIS_PORT:-18890}"
work="$(mktemp -d "${TMPDIR:-/tmp}/stickyd-soak.XXXXXX")"
pids=()
cleanup() {
  trap - EXIT INT TERM
  ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$root/deploy/install-deps.sh"
make -C "$root" build >/dev/null
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
TMPDIR="$work" STICKYD_REDIS_URL="redis://127.0.0.1:$redis_port/0" "$root/deploy/local/run.sh" >"$work/stack.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/18830) 2>/dev/null && break
  sleep 0.2
done
sleep 2
agent="$(pgrep -f "stickyd serve --config $work" | head -1)"
echo "soak: stickyd pid $agent, storm for $duration, report every $interval"
(cd "$root" && go run ./deploy/soak --pid "$agent" --duration "$duration" --interval "$interval")
