#!/usr/bin/env bash
# Builds the offline test image `logarithm/busybox:test` from Debian's static busybox
# (no image can be pulled here). Installs busybox-static if missing. Idempotent.
set -euo pipefail
IMAGE=${LOGARITHM_TEST_IMAGE:-logarithm/busybox:test}

if ! docker info >/dev/null 2>&1; then
  echo "error: the Docker engine is unreachable (docker info failed); start dockerd first" >&2
  exit 1
fi
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi
if ! dpkg -s busybox-static >/dev/null 2>&1; then
  echo "busybox-static is missing: installing it from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2 && apt-get install -y --no-install-recommends busybox-static >&2
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc"
cp /bin/busybox "$root/bin/busybox"
for applet in sh printf echo seq cat sleep yes head dd true false env tr awk; do
  ln -s busybox "$root/bin/$applet"
done
echo 'root:x:0:0:root:/:/bin/sh' > "$root/etc/passwd"
tar -C "$root" -cf "$root.tar" .
docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' "$root.tar" "$IMAGE" >/dev/null
rm -f "$root.tar"
echo "built $IMAGE" >&2
