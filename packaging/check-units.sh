#!/usr/bin/env bash
# Verifies the systemd units in packaging/ with systemd-analyze (syntax,
# directives, the binary they start), against the release binary.
# Usage: packaging/check-units.sh   (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null || {
  apt-get update -qq && apt-get install -y -qq systemd >/dev/null
}
cargo build --release --locked --bin rollcall
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for unit in packaging/*.service packaging/*.timer; do
  [ -e "$unit" ] || continue
  sed "s|/usr/local/bin/rollcall|$PWD/target/release/rollcall|g" "$unit" >"$work/$(basename "$unit")"
done
systemd-analyze verify "$work"/*
echo "units verified: $(cd "$work" && echo *)"
