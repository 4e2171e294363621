#!/usr/bin/env bash
# Installs what stickyd's demo and tests run against, when missing:
# haproxy, redis-server, mosquitto and mosquitto-clients, chromium (the
# headless browser of the dashboard tests), curl (the demo) and openssl (the
# TLS tests' certificates) (Debian/Ubuntu).
# As root it runs apt-get; otherwise it uses sudo when that works without a
# password prompt, or stops and prints the exact command to run.
set -euo pipefail

declare -A pkg_of=(
  [haproxy]=haproxy
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [mosquitto]=mosquitto
  [mosquitto_sub]=mosquitto-clients
  [mosquitto_pub]=mosquitto-clients
  [chromium]=chromium
  [curl]=curl
  [openssl]=openssl
)
# mosquitto is in /usr/sbin on Debian, which a user's PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
for bin in "${!pkg_of[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("${pkg_of[$bin]}")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"

if ! command -v apt-get >/dev/null 2>&1; then
  echo "stickyd: missing ${missing[*]}, and this is not a Debian/Ubuntu system." >&2
  echo "Install HAProxy (2.6 or later), Redis, Mosquitto and its clients, Chromium, curl and openssl with your package manager." >&2
  exit 1
fi
echo "stickyd: installing ${missing[*]}" >&2
if [[ $(id -u) -eq 0 ]]; then
  bash -c "$cmd"
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo bash -c "$cmd"
else
  echo "stickyd: cannot install as $(id -un). Run this, then try again:" >&2
  echo "  sudo bash -c '$cmd'" >&2
  exit 1
fi
