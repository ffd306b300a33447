#!/usr/bin/env bash
# Builds the antilog and logarithmd images from the Dockerfile without pulling anything:
#  1. the base image the Dockerfile names (debian:bookworm-slim) is made from Debian's
#     packages with debootstrap and `docker import`, unless Docker has it already;
#  2. the binaries are compiled on this machine (cargo, release unless --profile says
#     otherwise) and handed to the Dockerfile as the build context with PREBUILT=1 and the
#     base image as RUST_IMAGE, so the `build` stage copies them instead of compiling.
# With registry access, `docker build --target logarithmd .` builds the usual way instead.
#
# Usage: scripts/build-images.sh [--profile release|debug] [--tag TAG] [--no-cargo]
#   --no-cargo: take the binaries already in the target directory.
# Produces logarithm/antilog:TAG and logarithm/logarithmd:TAG (TAG: dev).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
tag=dev
cargo_build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --no-cargo) cargo_build=0; shift ;;
    *) echo "usage: $0 [--profile release|debug] [--tag TAG] [--no-cargo]" >&2; exit 2 ;;
  esac
done

base=debian:bookworm-slim
step() { printf '\n==> %s\n' "$*"; }

if ! docker image inspect "$base" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null 2>&1 || {
    echo "error: $base is not in Docker and debootstrap is missing (apt-get install debootstrap)" >&2
    exit 1
  }
  # The machine's own Debian mirror (deb822 or one-line sources), else Debian's.
  mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -v security | head -n1 || true)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' \
    /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
  step "making $base from Debian packages (debootstrap minbase from $mirror)"
  rootfs=$(mktemp -d /var/tmp/logarithm-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" --numeric-owner -c . \
    | docker import --change 'CMD ["bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$base" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
fi

target="${CARGO_TARGET_DIR:-target}"
case "$profile" in
  release) dir="$target/release"; flags=(--release) ;;
  debug|dev) dir="$target/debug"; flags=() ;;
  *) dir="$target/$profile"; flags=(--profile "$profile") ;;
esac
if [ "$cargo_build" = 1 ]; then
  step "cargo build (${profile}) antilog logarithmd"
  cargo build "${flags[@]}" --locked -p antilog -p logarithmd --bins
fi

ctx=$(mktemp -d /var/tmp/logarithm-image-ctx.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
for b in antilog logarithmd; do
  [ -x "$dir/$b" ] || { echo "error: $dir/$b is missing" >&2; exit 1; }
  # Debug info stays on the build machine.
  strip -o "$ctx/$b" "$dir/$b"
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
source=$(git remote get-url origin 2>/dev/null || true)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for b in logarithmd antilog; do
  step "docker build logarithm/$b:$tag"
  docker build -q -f Dockerfile --target "$b" \
    --build-arg PREBUILT=1 --build-arg RUST_IMAGE="$base" --build-arg BASE_IMAGE="$base" \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    --build-arg SOURCE="$source" --build-arg CREATED="$created" \
    -t "logarithm/$b:$tag" "$ctx"
done
