#!/usr/bin/env bash
# Installs Debian packages when running as root with apt-get; exits non-zero otherwise.
# With --missing first, only the packages not installed yet (nothing to do: no apt-get update).
set -euo pipefail
if [ "${1:-}" = "--missing" ]; then
  shift
  wanted=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || wanted+=("$package")
  done
  set -- "${wanted[@]+"${wanted[@]}"}"
fi
[ "$#" -gt 0 ] || exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "cannot install $* here (needs root and apt-get)" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
