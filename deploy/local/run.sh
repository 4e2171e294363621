#!/usr/bin/env bash
# The whole stickyd stack on one machine, in the foreground:
#   two mosquitto brokers (n1, n2), stickyd on the embedded store (or Redis
#   with STICKYD_REDIS_URL), and HAProxy on the configuration stickyd
#   generates. Ctrl-C stops everything this script started.
#
# Ports (override with the environment):
#   DEMO_MQTT_PORT  (18830)  HAProxy's MQTT frontend: point clients here
#   DEMO_N1_PORT    (18831)  broker n1
#   DEMO_N2_PORT    (18832)  broker n2
#   DEMO_SPOE_PORT  (18845)  stickyd's SPOE agent
#   DEMO_API_PORT   (18880)  stickyd's admin API
# DEMO_CHECK=1 starts everything, checks that a client is routed back to the
# same broker, and exits (used by the test suite).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${STICKYD_BIN:-$root/bin/stickyd}"
mqtt_port="${DEMO_MQTT_PORT:-18830}"
n1_port="${DEMO_N1_PORT:-18831}"
n2_port="${DEMO_N2_PORT:-18832}"
spoe_port="${DEMO_SPOE_PORT:-18845}"
api_port="${DEMO_API_PORT:-18880}"
run="$(mktemp -d "${TMPDIR:-/tmp}/stickyd-demo.XXXXXX")"

if [[ ! -x "$bin" ]]; then
  echo "demo: $bin not found; run 'make demo' (it builds it first)" >&2
  exit 1
fi
for b in haproxy mosquitto mosquitto_sub mosquitto_pub; do
  command -v "$b" >/dev/null || { echo "demo: $b missing; run deploy/install-deps.sh" >&2; exit 1; }
done
for p in "$mqtt_port" "$n1_port" "$n2_port" "$spoe_port" "$api_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "demo: port $p is already in use; set DEMO_*_PORT (see the top of $0)" >&2
    exit 1
  fi
done

pids=()
cleanup() {
  trap - EXIT INT TERM
  if ((${#pids[@]})); then
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  rm -rf "$run"
}
trap cleanup EXIT
trap 'echo; echo "demo: stopping"; exit 0' INT TERM

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "demo: nothing listens on port $1 after 10 s ($2 failed to start; its log is above)" >&2
  exit 1
}

user_line=""
[[ $(id -u) -eq 0 ]] && user_line="user root"
for n in 1 2; do
  port_var="n${n}_port"
  cat >"$run/n$n.conf" <<EOF
listener ${!port_var} 127.0.0.1
allow_anonymous true
persistence false
log_dest stdout
log_type error
log_type warning
connection_messages false
$user_line
EOF
  # Process substitution, so that $! is the server itself and cleanup reaches it.
  mosquitto -c "$run/n$n.conf" > >(sed -u "s/^/[n$n] /") 2>&1 &
  pids+=($!)
  wait_port "${!port_var}" "mosquitto n$n"
  # Each broker names itself on a retained topic, so a client sees where it landed.
  mosquitto_pub -h 127.0.0.1 -p "${!port_var}" -t stickyd/node -r -m "n$n"
done

cat >"$run/stickyd.yaml" <<EOF
spoe_listen: 127.0.0.1:$spoe_port
api_listen: 127.0.0.1:$api_port
redis_url: "${STICKYD_REDIS_URL:-}"
ttl: 30m
backends:
  - name: mqtt
    key: client_id
    servers:
      - {name: n1, address: 127.0.0.1:$n1_port, weight: 1}
      - {name: n2, address: 127.0.0.1:$n2_port, weight: 1}
haproxy:
  bind: 127.0.0.1:$mqtt_port
  check_interval: 1s
EOF
"$bin" check-config --config "$run/stickyd.yaml" >/dev/null
"$bin" serve --config "$run/stickyd.yaml" > >(sed -u 's/^/[stickyd] /') 2>&1 &
pids+=($!)
wait_port "$spoe_port" "stickyd"

"$bin" haproxy-config --config "$run/stickyd.yaml" --out "$run/haproxy" --log-connections >/dev/null
haproxy -c -q -f "$run/haproxy/haproxy.cfg"
haproxy -db -f "$run/haproxy/haproxy.cfg" > >(sed -u 's/^/[haproxy] /') 2>&1 &
pids+=($!)
wait_port "$mqtt_port" "haproxy"

try="mosquitto_sub -h 127.0.0.1 -p $mqtt_port -t stickyd/node -C 1 -W 5 -i"
if [[ "${DEMO_CHECK:-}" == 1 ]]; then
  sleep 2 # HAProxy's first agent health check
  first="$($try demo-check)"
  for _ in 1 2 3 4 5; do
    again="$($try demo-check)"
    [[ "$again" == "$first" ]] || { echo "demo check: demo-check reached $first, then $again" >&2; exit 1; }
  done
  bound="$(curl -sf "127.0.0.1:$api_port/v1/backends/mqtt/bindings/demo-check" || true)"
  [[ "$bound" == *"\"server\":\"$first\""* ]] || { echo "demo check: API shows $bound, want server $first" >&2; exit 1; }
  echo "demo check: ok (demo-check always reached $first; the API agrees)"
  exit 0
fi

cat <<EOF

  stickyd demo is running.  MQTT through HAProxy: 127.0.0.1:$mqtt_port
  Which broker does a client reach? Run the same line a few times:

    $try my-device

  It prints n1 or n2, and always the same one for the same client id.
  Another id may land on the other broker:  ... -i another-device
  HAProxy logs each connection below (key=<client id> agent=<server>).

  Admin API (no token needed on loopback):
    curl -s 127.0.0.1:$api_port/v1/backends
    curl -s 127.0.0.1:$api_port/v1/backends/mqtt/bindings/my-device
    curl -s -X PUT 127.0.0.1:$api_port/v1/backends/mqtt/bindings/my-device -H 'Content-Type: application/json' -d '{"server":"n1","pinned":true}'
    curl -s -X PUT 127.0.0.1:$api_port/v1/backends/mqtt/servers/n2/drain

  Generated HAProxy configuration: $run/haproxy/haproxy.cfg
  Ctrl-C stops everything.

EOF
wait
