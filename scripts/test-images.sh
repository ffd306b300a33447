#!/usr/bin/env bash
# Checks the images scripts/build-images.sh made (tag: $1, default dev): both binaries
# answer --help, both run as the unprivileged user with their OCI labels, and logarithmd
# started from its image with deploy/kubernetes's logarithmd.toml (SQLite in its data
# directory, no cluster: the Kubernetes runner stays off, flow routes answer 503) serves
# /readyz.
set -euo pipefail
tag="${1:-dev}"
fail() { echo "error: $*" >&2; exit 1; }

for b in antilog logarithmd; do
  image="logarithm/$b:$tag"
  out=$(docker run --rm "$image" --help) || fail "$image --help failed"
  grep -q "^Usage: $b" <<<"$out" || fail "$image --help printed: $out"
  user=$(docker image inspect -f '{{.Config.User}}' "$image")
  [ "$user" = "10001:10001" ] || fail "$image runs as '$user', not 10001:10001"
  title=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.title"}}' "$image")
  [ "$title" = "$b" ] || fail "$image has org.opencontainers.image.title '$title'"
  echo "$image: --help ok, user $user, title $title"
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
name="logarithm-image-check-$$"
conf=$(mktemp -d)
trap 'docker rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$conf"' EXIT
# The block under `logarithmd.toml: |`, unindented.
awk '/^  logarithmd.toml: \|/ {on=1; next} on && /^    / {print substr($0, 5); next} on && /^$/ {print; next} on {exit}' \
  "$(dirname "$0")/../deploy/kubernetes/base/logarithmd-config.yaml" > "$conf/logarithmd.toml"
grep -q '^runner = "kubernetes"' "$conf/logarithmd.toml" || fail "no logarithmd.toml in the ConfigMap"
chmod 0755 "$conf"; chmod 0644 "$conf/logarithmd.toml"
docker run -d --name "$name" -p "127.0.0.1:$port:7300" -v "$conf:/etc/logarithm:ro" \
  "logarithm/logarithmd:$tag" --config /etc/logarithm/logarithmd.toml >/dev/null
for _ in $(seq 1 120); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)
  [ "$code" = 200 ] && break
  sleep 0.5
done
if [ "$code" != 200 ]; then
  docker logs "$name" 2>&1 | tail -n 30 >&2
  fail "logarithmd from its image did not answer /readyz with 200 (last: $code)"
fi
echo "logarithm/logarithmd:$tag: /readyz 200 on 127.0.0.1:$port"
