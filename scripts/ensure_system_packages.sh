#!/usr/bin/env bash
# Sourced by test.sh (or run on its own, e.g. with sudo): install the Debian packages whose
# programs the test suite runs, when they are missing. As root with apt-get it installs them;
# otherwise it says what to run and carries on, and the tests that need a missing program fail
# (or, for the compose client, skip) naming the same command. Only bash builtins are used before
# apt-get, so a test can run this with a PATH that hides any program.

# Whether the program a package provides is here, and who runs it.
system_package_present() {
  case "$1" in
    # tests/compat/browser.py drives Debian's chromium at this path (never `playwright install`).
    chromium) [ -x /usr/bin/chromium ] ;;
    # tests/docker validates docker/compose.yaml with a compose client (no Docker engine needed).
    docker-compose) { command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; } ||
      command -v docker-compose >/dev/null 2>&1 ;;
    # tests/distributed starts a private redis-server of its own.
    redis-server) command -v redis-server >/dev/null 2>&1 ;;
    # tests/benchmarks builds llama.cpp's llama-server once (benchmarks/llama_server.py).
    cmake) command -v cmake >/dev/null 2>&1 ;;
    # tests/distributed/test_many_hosts.py runs hosts in network namespaces (`ip netns`).
    iproute2) command -v ip >/dev/null 2>&1 ;;
    *) echo "ensure_system_packages.sh: no check for $1" >&2; return 2 ;;
  esac
}

# The packages to install, space-separated (a string, not an array: macOS's bash 3.2 with
# `set -u` calls an empty array unbound).
missing_system_packages() {
  local package missing=""
  for package in chromium docker-compose redis-server cmake iproute2; do
    system_package_present "$package" || missing="${missing:+$missing }$package"
  done
  echo "$missing"
}

ensure_system_packages() {
  local missing
  missing="$(missing_system_packages)"
  [ -n "$missing" ] || return 0
  local command="apt-get update && apt-get install -y $missing"
  if [ "$EUID" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian packages the tests need: $missing" >&2
    # shellcheck disable=SC2086  # one word per package
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null || true
    missing="$(missing_system_packages)"  # checked again: a package can install without its program
    [ -n "$missing" ] || return 0
    echo "test.sh: could not install $missing; fix that and run: $command" >&2
  elif command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: missing Debian packages: $missing. Install them as root, then run ./test.sh again:" >&2
    echo "    sudo sh -c '$command'" >&2
  else
    echo "test.sh: missing $missing, and this is not a Debian machine (no apt-get): install them" \
      "with the system's package manager." >&2
  fi
  echo "test.sh: until then the tests that run them fail (tests/docker skips without a compose client)." >&2
  return 0
}

ensure_system_packages
