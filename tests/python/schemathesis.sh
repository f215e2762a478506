#!/usr/bin/env bash
# Runs schemathesis against a live rollcall with the demo data, using the
# OpenAPI document the server itself serves. Any server error or response
# that violates the document fails the run.
# Usage: tests/python/schemathesis.sh path/to/rollcall path/to/schemathesis
set -euo pipefail
binary=$1
st=$2
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$binary" serve --dev --data "$work/rollcall.redb" --listen "127.0.0.1:$port" >"$work/out" 2>"$work/err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
token=$("$binary" token --org org_01HDEMOACME0000000000000000 --data "$work/rollcall.redb")
"$st" run "http://127.0.0.1:$port/api/spec.json" \
  -H "Authorization: Bearer $token" \
  --checks all --max-examples "${SCHEMATHESIS_EXAMPLES:-50}" --seed 1 --no-color \
  --warnings off
