#!/usr/bin/env bash
# Runs scim2-tester (through scim2-cli) against a live rollcall: the real
# binary on a fresh database and a port the kernel picks, one SCIM directory
# per provider below, created through the running server's control socket.
# Fails unless the tester ran a full suite (at least MIN_CHECKS checks) and
# every single check is SUCCESS: an ERROR, CRITICAL, SKIPPED or any other
# status (the tester's COMPLIANT/ACCEPTABLE/DEVIATION included) fails.
# The SCIM bearer token reaches scim2 through SCIM_CLI_HEADERS only, never
# its command line.
# Usage: tests/python/scim_conformance.sh path/to/rollcall path/to/scim2
# Env: SCIM_PROVIDERS (default "okta entra"), SCIM_MIN_CHECKS (default 100).
set -euo pipefail
binary=$1
scim2=$2
providers=${SCIM_PROVIDERS:-okta entra}
min_checks=${SCIM_MIN_CHECKS:-100}
org=org_01HSCIMCONFORMANCE000000000
work=$(mktemp -d)
data=$work/db/rollcall.redb
pid=
stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stop EXIT

# The server wants a way to check Char API tokens; SCIM has its own. A
# throwaway secret, through the environment.
ROLLCALL_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export ROLLCALL_JWT_SECRET
"$binary" --data "$data" serve --create --listen 127.0.0.1:0 >"$work/server.log" 2>&1 &
pid=$!
addr=
for _ in $(seq 200); do
  if ! kill -0 "$pid" 2>/dev/null; then
    cat "$work/server.log" >&2
    echo "scim conformance: rollcall exited at start" >&2
    exit 1
  fi
  addr=$(sed -n 's/.*rollcall listening addr=\([0-9.]*:[0-9]*\).*/\1/p' "$work/server.log" | head -n1)
  if [ -n "$addr" ] && curl -fs "http://$addr/healthz" >/dev/null && [ -S "$data.sock" ]; then
    break
  fi
  sleep 0.1
done
if [ -z "$addr" ] || ! curl -fs "http://$addr/healthz" >/dev/null; then
  cat "$work/server.log" >&2
  echo "scim conformance: rollcall did not become healthy" >&2
  exit 1
fi

statuses='SUCCESS|COMPLIANT|ACCEPTABLE|DEVIATION|ERROR|CRITICAL|SKIPPED'
total=0
for provider in $providers; do
  # Through the control socket (the server holds the database); --listen
  # only builds the printed scim_url.
  created=$("$binary" --data "$data" directory create --org "$org" \
    --name "scim2-tester $provider" --provider "$provider" --json --listen "$addr")
  url=$(printf '%s' "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["scim_url"])')
  token=$(printf '%s' "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  out=$work/scim2-$provider.out
  status=0
  SCIM_CLI_HEADERS="Authorization: Bearer $token" NO_COLOR=1 \
    "$scim2" --url "$url" test --check-status-code --check-content-type -v >"$out" 2>&1 || status=$?
  # Colours off in any case, then one line per check: "STATUS title".
  sed -i 's/\x1b\[[0-9;]*m//g' "$out"
  checks=$(grep -cE "^($statuses) " "$out" || true)
  passed=$(grep -cE '^SUCCESS ' "$out" || true)
  if [ "$status" -ne 0 ] || [ "$checks" -ne "$passed" ] || [ "$checks" -lt "$min_checks" ]; then
    echo "--- scim2 test output ($provider)" >&2
    cat "$out" >&2
    echo "--- server log" >&2
    cat "$work/server.log" >&2
    echo "scim conformance FAILED for $provider: exit status $status, $passed of $checks checks SUCCESS (at least $min_checks expected); not SUCCESS:" >&2
    grep -E "^($statuses) " "$out" | grep -vE '^SUCCESS ' >&2 || true
    exit 1
  fi
  echo "scim2-tester, $provider directory: $passed/$checks checks SUCCESS"
  total=$((total + checks))
done

if ! kill -0 "$pid" 2>/dev/null || grep -q 'panicked' "$work/server.log"; then
  cat "$work/server.log" >&2
  echo "scim conformance: the server died or panicked during the run" >&2
  exit 1
fi
echo "scim conformance passed: $total/$total checks SUCCESS over providers: $providers"
