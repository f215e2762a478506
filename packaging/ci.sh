#!/usr/bin/env bash
# The packaging checks .ci/run runs: the systemd units verify, and the
# container image's runtime (packaging/check-image.sh) on Docker — installed
# and started here when the machine has no running daemon, and stopped
# again afterwards, so CI leaves no daemon behind.
set -euo pipefail
cd "$(dirname "$0")/.."

packaging/check-units.sh

started=
stop_daemon() {
  if [ -n "$started" ]; then
    kill "$started" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$started" 2>/dev/null || break; sleep 1; done
  fi
}
trap stop_daemon EXIT
if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  mkdir -p target
  dockerd >target/dockerd.log 2>&1 &
  started=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 target/dockerd.log >&2; echo "cannot start dockerd" >&2; exit 1; }
fi
packaging/check-image.sh
