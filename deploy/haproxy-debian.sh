#!/bin/bash
# HAProxy 3.0.11 from Debian trixie's source package, for `make test`'s
# second run (Makefile target test-haproxy-debian). apt fetches the upstream
# orig tarball; its sha256 is checked against apt's signed Sources index
# (and the .dsc when the mirror serves it); the build is cached by the .dsc
# hash, so only the first run compiles (about 90 s on 2 cores).
#
# Prints the path of the cached binary on stdout; everything else goes to
# stderr. Idempotent: a second run finds the cached binary and returns at once.
#
#   STICKYD_HAPROXY_DEB_VERSION  source version (default 3.0.11-1+deb13u4)
#   STICKYD_HAPROXY_MAKE_JOBS    make -j value (default 2)
#
# Needs root (or sudo) only when it has to add the deb-src entry, run
# apt-get update or install missing build tools.
set -euo pipefail

VERSION=${STICKYD_HAPROXY_DEB_VERSION:-3.0.11-1+deb13u4}
JOBS=${STICKYD_HAPROXY_MAKE_JOBS:-2}
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/stickyd
SRC_LIST=/etc/apt/sources.list.d/stickyd-trixie-src.sources
BUILD_DEPS=(build-essential libssl-dev libpcre2-dev zlib1g-dev)

log() { echo "debian-haproxy: $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# "<sha256> <filename>" for every file of the source package, straight from
# the Sources index (apt verified it against the signed InRelease).
index_hashes() {
	local d
	d=$(mktemp -d)
	(cd "$d" && apt-get source --print-uris -qq "haproxy=$VERSION" 2>/dev/null) |
		awk '{sub(/^SHA256:/, "", $4); print $4, $2}'
	rm -rf "$d"
}

# Some configured file already has a trixie deb-src entry?
has_trixie_src() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] && grep -qs 'deb-src' "$f" && grep -qsw 'trixie' "$f" && return 0
	done
	return 1
}

hashes=$(index_hashes || true)
if ! grep -q '\.dsc$' <<<"$hashes"; then
	if ! has_trixie_src; then
		log "adding $SRC_LIST"
		as_root tee "$SRC_LIST" >/dev/null <<-'EOF'
			Types: deb-src
			URIs: http://deb.debian.org/debian
			Suites: trixie trixie-updates
			Components: main
			Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

			Types: deb-src
			URIs: http://deb.debian.org/debian-security
			Suites: trixie-security
			Components: main
			Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
		EOF
	fi
	log "apt-get update"
	as_root apt-get update -qq >&2
	hashes=$(index_hashes || true)
fi
if ! grep -q '\.dsc$' <<<"$hashes"; then
	log "haproxy=$VERSION is not in the Sources index; offered versions:"
	apt-cache showsrc haproxy 2>/dev/null | sed -n 's/^Version: /  /p' >&2
	exit 1
fi

dsc_sha=$(awk '/\.dsc$/ {print $1}' <<<"$hashes")
upstream=${VERSION%-*}
orig_name=haproxy_${upstream#*:}.orig.tar.gz
orig_sha=$(awk -v f="$orig_name" '$2 == f {print $1}' <<<"$hashes")
out_dir=$CACHE_ROOT/haproxy-$dsc_sha
bin=$out_dir/haproxy

if [ -x "$bin" ]; then
	echo "$bin"
	exit 0
fi

# Build tools: install whatever is missing (never skipped).
missing=()
for p in "${BUILD_DEPS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi

mkdir -p "$CACHE_ROOT"
work=$(mktemp -d "$CACHE_ROOT/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# apt checks every file it fetches against the index hashes. Some mirrors or
# proxies serve the tarballs but not the .dsc/.debian.tar.xz: carry on as
# long as the orig tarball arrived, since we only build the upstream source.
if ! apt-get source --download-only -qq "haproxy=$VERSION" >&2; then
	log "apt-get source reported errors; continuing if the orig tarball is here"
fi
[ -f "$orig_name" ] || { log "missing $orig_name"; exit 1; }

# Re-check what we have against the signed index (and the .dsc, if present).
while read -r sha name; do
	[ -f "$name" ] || { log "not downloaded: $name"; continue; }
	echo "$sha  $name" | sha256sum -c --quiet - >&2
done <<<"$hashes"
echo "$orig_sha  $orig_name" | sha256sum -c --quiet - >&2
if [ -f "haproxy_${VERSION#*:}.dsc" ]; then
	grep -q "^ $orig_sha [0-9]* $orig_name\$" "haproxy_${VERSION#*:}.dsc" ||
		{ log "orig tarball hash not listed in the .dsc"; exit 1; }
fi

mkdir src
tar -xzf "$orig_name" -C src --strip-components=1
log "building haproxy $upstream (make -j$JOBS)"
make -C src -j"$JOBS" TARGET=linux-glibc USE_OPENSSL=1 USE_PCRE2=1 USE_ZLIB=1 >build.log 2>&1 ||
	{ tail -30 build.log >&2; exit 1; }

mkdir -p "$out_dir"
install -m755 src/haproxy "$out_dir/haproxy.tmp"
mv -f "$out_dir/haproxy.tmp" "$bin"
echo "$bin"
