#!/usr/bin/env bash
# Checks the container image's runtime as the Dockerfile defines it, on a
# machine that can run Docker but cannot pull base images (no registry
# access): the binary is built exactly as the Dockerfile's build stage
# builds it, then placed on a scratch image with the libraries the
# distroless cc image provides, under the Dockerfile's own runtime lines
# (USER, ENV, VOLUME, EXPOSE, HEALTHCHECK, ENTRYPOINT, CMD — copied from it,
# not restated). The container runs as the non-root user, with a read-only
# root file system, no capabilities and only the data volume writable; the
# check waits for Docker to call it healthy, reads and writes through the
# API, restarts it on the same volume, and looks that nothing was written
# outside the volume.
#
# Usage: packaging/check-image.sh   (from the repository root; needs docker)
set -euo pipefail
cd "$(dirname "$0")/.."

secret=check-image-secret-0123456789abcdef0123
tag=rollcall-check:latest
name=rollcall-check-$$
volume=rollcall-check-$$
work=$(mktemp -d)
cleanup() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker volume rm -f "$volume" >/dev/null 2>&1 || true
  docker rmi -f "$tag" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== the build stage's command"
cargo build --release --locked --bin rollcall
strip -o "$work/rollcall" target/release/rollcall

echo "== a scratch image with distroless cc's libraries and the Dockerfile's runtime lines"
root=$work/root
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$work/data"
cp "$work/rollcall" "$root/usr/local/bin/rollcall"
for lib in $(ldd "$work/rollcall" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# distroless cc carries the CA bundle (for the JWKS URL and the WorkOS API).
mkdir -p "$root/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$root/etc/passwd"
chmod 1777 "$root/tmp"
{
  echo 'FROM scratch'
  echo 'COPY root/ /'
  # As the Dockerfile does: the volume's mount point owned by the user.
  echo 'COPY --chown=65532:65532 data /data'
  sed -n '/^USER /,$p' Dockerfile
} >"$work/Dockerfile"
grep -q '^HEALTHCHECK' "$work/Dockerfile"
docker build -q -t "$tag" "$work" >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
run() {
  docker run -d --name "$name" -p "127.0.0.1:$port:8080" -v "$volume:/data" \
    --read-only --cap-drop ALL --security-opt no-new-privileges \
    -e ROLLCALL_JWT_SECRET="$secret" -e ROLLCALL_WORKOS_WEBHOOK_SECRET=whsec_check_image_0123456789 \
    "$tag" >/dev/null
}
healthy() {
  for _ in $(seq 90); do
    status=$(docker inspect --format '{{.State.Health.Status}}' "$name")
    [ "$status" = healthy ] && return 0
    [ "$(docker inspect --format '{{.State.Running}}' "$name")" = true ] || break
    sleep 1
  done
  docker logs "$name" >&2
  echo "the container never became healthy (last: $status)" >&2
  return 1
}

echo "== run: non-root, read-only root, only /data writable"
run
healthy
pid=$(docker inspect --format '{{.State.Pid}}' "$name")
user=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[ "$user" = 65532 ] || { echo "runs as uid $user, not 65532" >&2; exit 1; }
token=$(target/release/rollcall token --org org_check --jwt-secret "$secret")
list=$(curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/directories")
[ "$list" = "[]" ] || { echo "unexpected list: $list" >&2; exit 1; }

# A signed webhook creates a directory, on the volume.
body='{"object":"event","id":"event_01CHECKIMAGE","event":"dsync.activated","created_at":"2026-01-01T00:00:00.000Z","data":{"object":"directory","id":"directory_01CHECKIMAGE","organization_id":"org_check","name":"Check","type":"okta scim v2.0","state":"active","domains":[],"created_at":"2026-01-01T00:00:00.000Z","updated_at":"2026-01-01T00:00:00.000Z"}}'
t=$(($(date +%s) * 1000))
sig=$(printf '%s' "$t.$body" | openssl dgst -sha256 -hmac whsec_check_image_0123456789 -hex | sed 's/^.* //')
curl -fsS -X POST -H "WorkOS-Signature: t=$t, v1=$sig" -H 'Content-Type: application/json' \
  --data-binary "$body" "http://127.0.0.1:$port/webhooks/workos" >/dev/null

echo "== stop (SIGTERM drains and closes), start again on the same volume"
docker stop -t 30 "$name" >/dev/null
docker logs "$name" 2>&1 | grep -q '"rollcall stopped"' || { docker logs "$name" >&2; echo "no clean stop" >&2; exit 1; }
changes=$(docker diff "$name")
[ -z "$changes" ] || { echo "written outside the volume: $changes" >&2; exit 1; }
docker rm "$name" >/dev/null
run
healthy
names=$(curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/directories" | python3 -c 'import json,sys; print([d["name"] for d in json.load(sys.stdin)])')
[ "$names" = "['Check']" ] || { echo "the volume did not keep the data: $names" >&2; exit 1; }
echo "image runtime checks passed"
