#!/bin/bash
# Run the HAProxy-dependent tests (./haproxy and ./internal/e2e) against
# other HAProxy builds: each binary is put first on PATH, which is where
# the suite and `stickyd haproxy-config` take haproxy from. Builds nothing.
#
#   deploy/haproxy-versions.sh [-run REGEX] /path/to/haproxy ...
#
# Prints one line per binary (version, result, seconds) and exits non-zero
# when any run failed. Logs: ${TMPDIR:-/tmp}/stickyd-haproxy-versions/.
set -uo pipefail
cd "$(dirname "$0")/.."

run=()
if [ "${1:-}" = "-run" ]; then
	run=(-run "$2")
	shift 2
fi
[ $# -gt 0 ] || { echo "usage: $0 [-run REGEX] HAPROXY_BINARY..." >&2; exit 2; }
GO=${GO:-go}
logs=${TMPDIR:-/tmp}/stickyd-haproxy-versions
mkdir -p "$logs"
status=0
for bin in "$@"; do
	[ -x "$bin" ] || { echo "$bin: not executable" >&2; status=1; continue; }
	# A directory whose haproxy is this binary, whatever its file name.
	dir=$(mktemp -d)
	ln -s "$(readlink -f "$bin")" "$dir/haproxy"
	version=$("$dir/haproxy" -v 2>/dev/null | sed -n '1s/^HA-\{0,1\}Proxy version \([^ ]*\).*/\1/p')
	log=$logs/haproxy-${version:-unknown}.log
	start=$(date +%s)
	if PATH="$dir:$PATH" STICKYD_REQUIRE_BINARIES=1 $GO test -count=1 -timeout 30m -v "${run[@]}" ./haproxy/ ./internal/e2e/ >"$log" 2>&1; then
		result=ok
	else
		result="FAIL ($(grep -c '^--- FAIL' "$log") failed: $(grep '^--- FAIL' "$log" | awk '{print $3}' | tr '\n' ' '))"
		status=1
	fi
	grep -h 'versions_test.go.*HAProxy version' "$log" | head -1 | sed 's/^ */  /'
	printf '%-24s %s (%ss) log %s\n' "${version:-$bin}" "$result" "$(($(date +%s) - start))" "$log"
	rm -rf "$dir"
done
exit $status
